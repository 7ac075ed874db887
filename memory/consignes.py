"""Consignes: standing instructions, in Axi's context while active.

Each has an audience: 'interne' (the inner circle's prompts only: the default for every
way a consigne is added, and for the rows older than the column) or 'tous' (every prompt,
clients' and strangers' included)."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import text

from memory.errors import InvalidInput, NotFound, row_id
from memory.records import ConsigneRecord
from memory.text import InvalidText, clean_content

_COLUMNS = "id, texte, active, source, cree_le, audience"

Audience = Literal["interne", "tous"]
AUDIENCES: tuple[Audience, ...] = ("interne", "tous")


def _row(row: Any) -> ConsigneRecord:
    return ConsigneRecord(id=row.id, texte=row.texte, active=row.active, source=row.source,
                          cree_le=row.cree_le, audience=row.audience)


class ConsignesMixin:
    db: Any

    async def add_consigne(self, texte: str, *, source: str | None = None,
                           audience: Audience = "interne") -> ConsigneRecord:
        try:
            texte = clean_content(texte, what="consigne", limit=4000)
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        if audience not in AUDIENCES:
            raise InvalidInput(f"audience must be one of {', '.join(AUDIENCES)}, not {audience!r}")
        async with self.db.sessions.begin() as session:
            row = (
                await session.execute(
                    text("INSERT INTO consignes (texte, source, audience) VALUES (:t, :s, :a) "
                         f"RETURNING {_COLUMNS}"),
                    {"t": texte, "s": source, "a": audience},
                )
            ).one()
        return _row(row)

    async def list_consignes(self, *, active_only: bool = True,
                             inner_circle: bool = True) -> list[ConsigneRecord]:
        """The consignes a prompt may hold: all of them for the inner circle (and for the
        operator's listing), those meant for everyone otherwise (`inner_circle=False`)."""
        where = []
        if active_only:
            where.append("active")
        if not inner_circle:
            where.append("audience = 'tous'")
        sql = f"SELECT {_COLUMNS} FROM consignes"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        async with self.db.reads() as session:
            rows = (await session.execute(text(sql))).all()
        return [_row(r) for r in rows]

    async def set_consigne_active(self, consigne_id: int, active: bool) -> ConsigneRecord:
        consigne_id = row_id(consigne_id, "consigne")
        async with self.db.sessions.begin() as session:
            row = (
                await session.execute(
                    text(f"UPDATE consignes SET active = :a, maj_le = now() WHERE id = :id "
                         f"RETURNING {_COLUMNS}"),
                    {"a": active, "id": consigne_id},
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"no consigne #{consigne_id}")
        return _row(row)

    async def remove_consigne(self, consigne_id: int) -> ConsigneRecord:
        consigne_id = row_id(consigne_id, "consigne")
        async with self.db.sessions.begin() as session:
            row = (
                await session.execute(
                    text(f"DELETE FROM consignes WHERE id = :id RETURNING {_COLUMNS}"),
                    {"id": consigne_id},
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"no consigne #{consigne_id}")
        return _row(row)
