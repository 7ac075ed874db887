"""Scheduled work: the veilles (DPE, competitors, DVF), later backups and maintenance."""
