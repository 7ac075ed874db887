"""Axi's permanent memory in PostgreSQL: models, migrations, the MemoryStore, retrieval,
facts, people and identities, and the embedded PostgreSQL server."""
