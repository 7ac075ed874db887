"""Consignes: standing instructions, always in Axi's context while active."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput, NotFound
from memory.records import ConsigneRecord
from memory.text import InvalidText, clean_content

_COLUMNS = "id, texte, active, source, cree_le"


def _row(row: Any) -> ConsigneRecord:
    return ConsigneRecord(id=row.id, texte=row.texte, active=row.active, source=row.source,
                          cree_le=row.cree_le)


class ConsignesMixin:
    db: Any

    async def add_consigne(self, texte: str, *, source: str | None = None) -> ConsigneRecord:
        try:
            texte = clean_content(texte, what="consigne", limit=4000)
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        async with self.db.sessions.begin() as session:
            row = (
                await session.execute(
                    text(f"INSERT INTO consignes (texte, source) VALUES (:t, :s) RETURNING {_COLUMNS}"),
                    {"t": texte, "s": source},
                )
            ).one()
        return _row(row)

    async def list_consignes(self, *, active_only: bool = True) -> list[ConsigneRecord]:
        sql = f"SELECT {_COLUMNS} FROM consignes"
        if active_only:
            sql += " WHERE active"
        sql += " ORDER BY id"
        async with self.db.reads() as session:
            rows = (await session.execute(text(sql))).all()
        return [_row(r) for r in rows]

    async def set_consigne_active(self, consigne_id: int, active: bool) -> ConsigneRecord:
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
