"""Scheduled work: the scheduler, veilles, digests, backups and maintenance."""
