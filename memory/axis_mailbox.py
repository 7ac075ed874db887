"""What the Axis channel keeps in memory: the Axis mailbox (`boite_axis`), the Axis
person, the immediate replacement of the consignes when Ludo asks it himself, and (through
OAuthStateMixin) the OAuth state of Claude.ai's connector.

Why a mailbox: Axis (Ludo's Claude.ai assistant) cannot be called by Axi; it calls Axi
over MCP. What Axi has for Axis — a question it cannot answer, a veille result Ludo asked
to share, a reply that was not ready within Axis's tool call — waits here until Axis
reads it (`lire_messages`) and acknowledges it (`acquitter_messages`). `cle` makes a
repeated write a no-op, so an outbox retry never posts twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput
from memory.oauth_state import OAuthStateMixin
from memory.records import SouvenirRecord, souvenir_from_row
from memory.rows import SOUVENIR_COLUMNS
from memory.text import InvalidText, clean_content

MAILBOX_TEXT_CHARS = 20_000
AXIS_RELATION = "axis"
AXIS_NAME = "Axis"
AXIS_CHANNEL = "axis"


@dataclass(frozen=True)
class MailboxItem:
    id: int
    texte: str
    source: str | None
    cle: str | None
    cree_le: datetime
    lu_le: datetime | None


_COLUMNS = "id, texte, source, cle, cree_le, lu_le"


def _item(row: Any) -> MailboxItem:
    return MailboxItem(id=row.id, texte=row.texte, source=row.source, cle=row.cle,
                       cree_le=row.cree_le, lu_le=row.lu_le)


class AxisMailboxMixin(OAuthStateMixin):
    db: Any

    # ------------------------------------------------------------------ mailbox
    async def mailbox_post(self, texte: str, *, source: str | None = None,
                           cle: str | None = None) -> int:
        """Leave a message for Axis; with `cle`, a second post with the same key is a
        no-op returning the first one's id."""
        posted, _ = await self._post(texte, source, cle, read=False)
        return posted

    async def mailbox_handed_over(self, texte: str, *, source: str | None,
                                  cle: str) -> int | None:
        """Record in the mailbox, already read, what Axis was handed directly (a reply
        returned by its tool call): in one statement, so a `lire_messages` at any moment
        never shows it as unread. Returns None when `cle` was posted before (the outbox
        left it there, unread, maybe already listed): then it is left as it is."""
        posted, new = await self._post(texte, source, cle, read=True)
        return posted if new else None

    async def _post(self, texte: str, source: str | None, cle: str | None,
                    *, read: bool) -> tuple[int, bool]:
        try:
            texte = clean_content(texte, what="message for Axis", limit=MAILBOX_TEXT_CHARS)
            source = clean_content(source, what="source", limit=200) if source else None
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        read_at = "now()" if read else "NULL"
        async with self.db.sessions.begin() as session:
            new = (await session.execute(text(
                f"INSERT INTO boite_axis (texte, source, cle, lu_le) VALUES (:t, :s, :k, "
                f"{read_at}) ON CONFLICT (cle) DO NOTHING RETURNING id"),
                {"t": texte, "s": source, "k": cle})).scalar()
            if new is not None:
                return int(new), True
            return int((await session.execute(text(
                "SELECT id FROM boite_axis WHERE cle = :k"), {"k": cle})).scalar_one()), False

    async def mailbox_list(self, *, unread_only: bool = True,
                           limit: int = 50) -> list[MailboxItem]:
        """Messages for Axis, oldest first (the unread ones only, by default)."""
        where = "WHERE lu_le IS NULL" if unread_only else ""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS} FROM boite_axis {where} "
                "ORDER BY id DESC LIMIT :n) last ORDER BY id"),
                {"n": max(1, min(limit, 500))})).all()
        return [_item(r) for r in rows]

    async def mailbox_acknowledge(self, ids: Sequence[int]) -> int:
        """Mark these messages read; returns how many were unread until now."""
        wanted = sorted({i for i in ids if isinstance(i, int) and 1 <= i <= 2**63 - 1})
        if not wanted:
            return 0
        async with self.db.sessions.begin() as session:
            rows = (await session.execute(text(
                "UPDATE boite_axis SET lu_le = now() WHERE id = ANY(:ids) AND lu_le IS NULL "
                "RETURNING id"), {"ids": wanted})).all()
        return len(rows)

    async def mailbox_unread(self) -> int:
        async with self.db.sessions() as session:
            return int(await session.scalar(text(
                "SELECT count(*) FROM boite_axis WHERE lu_le IS NULL")) or 0)

    async def recent_souvenirs(self, *, hours: float, limit: int = 30) -> list[SouvenirRecord]:
        """The newest souvenirs of the last `hours`, newest first, except Axi's own
        replies (the briefing's recent events: what happened, not what Axi said)."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {SOUVENIR_COLUMNS} FROM souvenirs "
                "WHERE timestamp > now() - make_interval(secs => :s) "
                "AND coalesce(metadata->>'sens', '') <> 'sortant' "
                "ORDER BY timestamp DESC, id DESC LIMIT :n"),
                {"s": float(hours) * 3600, "n": max(1, min(limit, 200))})).all()
        return [souvenir_from_row(r) for r in rows]

    # ------------------------------------------------------------------ the Axis person
    async def ensure_axis_person(self) -> int:
        """The id of the Axis person (relation `axis`): the first one there is, else a
        new "Axis" — with the Axis channel as its preferred channel, so that
        `notify("Axis", …)` lands in the mailbox — and its address on that channel."""
        async with self.db.sessions.begin() as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext('axi:axis-person'))"))
            person = (await session.execute(text(
                "SELECT id, details FROM relations WHERE relation = :r ORDER BY id LIMIT 1"),
                {"r": AXIS_RELATION})).one_or_none()
            if person is None:
                taken = (await session.execute(text(
                    "SELECT 1 FROM relations WHERE lower(personne) = lower(:n)"),
                    {"n": AXIS_NAME})).scalar()
                name = AXIS_NAME if not taken else f"{AXIS_NAME} (Claude.ai)"
                person_id = int((await session.execute(text(
                    "INSERT INTO relations (personne, relation, comment_interagir, details) "
                    "VALUES (:n, :r, :c, CAST(:d AS jsonb)) RETURNING id"),
                    {"n": name, "r": AXIS_RELATION,
                     "c": "l'assistant Claude.ai de Ludo, son grand frère (pas Axi) ; tutoie",
                     "d": json.dumps({"canal_prefere": AXIS_CHANNEL})})).scalar_one())
            else:
                person_id = int(person.id)
                details = person.details if not isinstance(person.details, str) \
                    else json.loads(person.details)
                if not (details or {}).get("canal_prefere"):
                    await session.execute(text(
                        "UPDATE relations SET details = coalesce(details, '{}'::jsonb) || "
                        "CAST(:d AS jsonb) WHERE id = :i"),
                        {"d": json.dumps({"canal_prefere": AXIS_CHANNEL}), "i": person_id})
            await session.execute(text(
                "INSERT INTO identites (relation_id, canal, adresse) VALUES (:r, :c, :a) "
                "ON CONFLICT DO NOTHING"),
                {"r": person_id, "c": AXIS_CHANNEL, "a": f"personne-{person_id}"})
        return person_id

    # ------------------------------------------------------------------ consignes
    async def replace_inner_consignes(self, textes: Sequence[str], *, source: str) -> int:
        """Replace the active inner-circle consignes by `textes` at once, in one
        transaction (Ludo's own request from the Axis channel: his request is his
        accord). The same effect as the confirmed action `consignes.remplacer`."""
        cleaned = []
        for t in textes:
            try:
                cleaned.append(clean_content(t, what="consigne", limit=4000))
            except InvalidText as exc:
                raise InvalidInput(str(exc)) from None
        if not cleaned:
            raise InvalidInput("no consigne given")
        async with self.db.sessions.begin() as session:
            await session.execute(text(
                "UPDATE consignes SET active = false, maj_le = now() "
                "WHERE active AND audience = 'interne'"))
            for t in cleaned:
                await session.execute(text(
                    "INSERT INTO consignes (texte, source) VALUES (:t, :s)"),
                    {"t": t, "s": source})
        return len(cleaned)
