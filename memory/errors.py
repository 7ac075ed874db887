"""Typed errors of the memory package. Each message says what went wrong and how to
fix it; the CLI and the channels translate them at their boundary."""

from __future__ import annotations


class MemoryStoreError(Exception):
    """Base of every error raised by the memory package."""


class DatabaseUnavailable(MemoryStoreError):
    """The database cannot be reached (wrong URL, server down, bad credentials)."""


class EmbeddedDatabaseError(DatabaseUnavailable):
    """The embedded PostgreSQL could not be started (locked or corrupt data dir…)."""


class NotMigrated(MemoryStoreError):
    """The schema is missing or older than this code: run `axi db upgrade`."""


class NotFound(MemoryStoreError):
    """No such person, souvenir, fact or consigne."""


class AlreadyExists(MemoryStoreError):
    """A unique thing (a person's name, an address) is already taken."""


class InvalidInput(MemoryStoreError, ValueError):
    """Input that cannot be stored (empty, too long, malformed)."""
