"""Operations (issue 13): the record of each backup, verification and restore, per
repository (`local` or `distant`), in the `operations` table (migration 0018).

Why a table and not a log: `/health`, `axi status` and `axi doctor` read the age of the
last good backup and of the last good verification here (`last_good_operation`), the
alerts compare an operation with the previous finished one of the same kind (once on
failure, once on recovery), and the weekly verification finds here what the backup
recorded at dump time (its row counts and checksums, in `details`). An operation is
written `en_cours` when it starts and finished `ok` or `echec`; one whose process died is
closed as `echec` by the next operation of its kind (`abandon_operations`, called while
holding the backups' advisory lock, so it never closes a live one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput, NotFound

TYPES = ("sauvegarde", "verification", "restauration")
DEPOTS = ("local", "distant")
STATES = ("en_cours", "ok", "echec")
_COLUMNS = ("id, type, depot, debut, fin, etat, instantane, taille_octets, details, erreur")
ERROR_CHARS = 2000


@dataclass(frozen=True)
class OperationRow:
    id: int
    type: str
    depot: str
    debut: datetime
    fin: datetime | None
    etat: str
    instantane: str | None
    taille_octets: int | None
    details: dict[str, Any]
    erreur: str | None


def _row(row: Any) -> OperationRow:
    details = row.details
    if isinstance(details, str):
        details = json.loads(details)
    return OperationRow(id=row.id, type=row.type, depot=row.depot, debut=row.debut,
                        fin=row.fin, etat=row.etat, instantane=row.instantane,
                        taille_octets=row.taille_octets, details=dict(details or {}),
                        erreur=row.erreur)


def check_kind(type_: str, depot: str) -> None:
    if type_ not in TYPES:
        raise InvalidInput(f"unknown operation type {type_!r} (use {', '.join(TYPES)})")
    if depot not in DEPOTS:
        raise InvalidInput(f"unknown repository kind {depot!r} (use {', '.join(DEPOTS)})")


class OperationsMixin:
    db: Any

    async def start_operation(self, type_: str, depot: str, *,
                              details: dict[str, Any] | None = None) -> int:
        """Record an operation that starts now (`en_cours`); its id."""
        check_kind(type_, depot)
        async with self.db.sessions.begin() as session:
            return int(await session.scalar(text(
                "INSERT INTO operations (type, depot, details) "
                "VALUES (:t, :d, CAST(:j AS jsonb)) RETURNING id"),
                {"t": type_, "d": depot, "j": json.dumps(details or {}, ensure_ascii=False)}))

    async def finish_operation(self, operation_id: int, etat: str, *,
                               instantane: str | None = None,
                               taille_octets: int | None = None,
                               details: dict[str, Any] | None = None,
                               erreur: str | None = None) -> OperationRow:
        """Close an operation `ok` or `echec`; `details` are merged into those it has."""
        if etat not in ("ok", "echec"):
            raise InvalidInput(f"an operation finishes 'ok' or 'echec', not {etat!r}")
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "UPDATE operations SET fin = now(), etat = :e, "
                "instantane = coalesce(:i, instantane), "
                "taille_octets = coalesce(:s, taille_octets), "
                "details = details || CAST(:j AS jsonb), erreur = :err "
                f"WHERE id = :id RETURNING {_COLUMNS}"),
                {"e": etat, "i": instantane, "s": taille_octets,
                 "j": json.dumps(details or {}, ensure_ascii=False),
                 "err": erreur[:ERROR_CHARS] if erreur else None, "id": operation_id})
            ).one_or_none()
        if row is None:
            raise NotFound(f"no operation #{operation_id}")
        return _row(row)

    async def abandon_operations(self, type_: str, reason: str) -> int:
        """Close as `echec` the operations of this type still `en_cours` (their process
        died), marked `interrompue` in their details (nobody was alerted of them). Only
        call it while holding the lock that serialises these operations."""
        if type_ not in TYPES:
            raise InvalidInput(f"unknown operation type {type_!r}")
        async with self.db.sessions.begin() as session:
            result = await session.execute(text(
                "UPDATE operations SET fin = now(), etat = 'echec', erreur = :r, "
                "details = details || '{\"interrompue\": true}'::jsonb "
                "WHERE type = :t AND etat = 'en_cours'"), {"t": type_, "r": reason})
        return int(getattr(result, "rowcount", 0) or 0)

    async def last_operation(self, type_: str, depot: str, *, before: int | None = None,
                             interrupted: bool = True) -> OperationRow | None:
        """The latest finished operation of this kind (before operation `before`; with
        `interrupted=False`, one cut by a stop of Axi does not count as an attempt)."""
        check_kind(type_, depot)
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM operations WHERE type = :t AND depot = :d "
                "AND etat <> 'en_cours' AND (CAST(:b AS bigint) IS NULL OR id < :b) "
                "AND (:i OR NOT details ? 'interrompue') "
                "ORDER BY fin DESC, id DESC LIMIT 1"),
                {"t": type_, "d": depot, "b": before, "i": interrupted})).one_or_none()
        return _row(row) if row is not None else None

    async def last_good_operation(self, type_: str, depot: str) -> OperationRow | None:
        """The latest successful operation of this kind: its `fin` is the age /health
        and `axi status` show."""
        check_kind(type_, depot)
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM operations WHERE type = :t AND depot = :d "
                "AND etat = 'ok' ORDER BY fin DESC, id DESC LIMIT 1"),
                {"t": type_, "d": depot})).one_or_none()
        return _row(row) if row is not None else None

    async def last_started(self, type_: str) -> datetime | None:
        """When the latest operation of this type (any repository, any state) started."""
        if type_ not in TYPES:
            raise InvalidInput(f"unknown operation type {type_!r}")
        async with self.db.sessions() as session:
            return await session.scalar(text(
                "SELECT max(debut) FROM operations WHERE type = :t"), {"t": type_})

    async def list_operations(self, *, limit: int = 20,
                              type_: str | None = None) -> list[OperationRow]:
        """The latest operations, newest first."""
        if type_ is not None and type_ not in TYPES:
            raise InvalidInput(f"unknown operation type {type_!r}")
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM operations "
                "WHERE CAST(:t AS text) IS NULL OR type = :t ORDER BY id DESC LIMIT :n"),
                {"t": type_, "n": max(1, min(limit, 1000))})).all()
        return [_row(r) for r in rows]
