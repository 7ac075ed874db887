"""Typed errors of the memory package. Each message says what went wrong and how to
fix it; the CLI and the channels translate them at their boundary."""

from __future__ import annotations


class MemoryStoreError(Exception):
    """Base of every error raised by the memory package."""


class DatabaseUnavailable(MemoryStoreError):
    """The database cannot be reached (wrong URL, server down, bad credentials)."""


class EmbeddedDatabaseError(DatabaseUnavailable):
    """The embedded PostgreSQL could not be started (locked or corrupt data dir…)."""


class DataDirectoryError(EmbeddedDatabaseError):
    """AXI_DATA_DIR cannot hold the embedded database (not a directory, not writable,
    owned by another user): a configuration error, which the operator fixes."""


class NotMigrated(MemoryStoreError):
    """The schema is missing or older than this code: run `axi db upgrade`."""


class NotFound(MemoryStoreError):
    """No such person, souvenir, fact or consigne."""


class AlreadyExists(MemoryStoreError):
    """A unique thing (a person's name, an address) is already taken."""


class InvalidInput(MemoryStoreError, ValueError):
    """Input that cannot be stored (empty, too long, malformed)."""


MAX_ID = 2**31 - 1
"""Largest id of an INTEGER primary key (souvenirs, faits, relations, consignes…)."""


def row_id(value: object, what: str, *, max_id: int = MAX_ID) -> int:
    """`value` as the id of a row of `what`; an id no row can have (zero, negative, beyond
    the column's range) is NotFound here, before the driver refuses it with a DataError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"a {what} id is a whole number, not {value!r}")
    if not 1 <= value <= max_id:
        raise NotFound(f"no {what} #{value}")
    return value
