"""What became of inbound messages, for the people and tools that ask.

`reply_outcome` serves the channels that answer inside a request (web, MCP) and
`axi ask`: the state of a message and Axi's reply once committed, whichever process
handled it. `list_inbox`, `stuck_count` and `drop_inbound` serve the operator (`axi inbox
list|drop`, `/health`): a message that cannot be answered must never block its
conversation silently. `give_up` closes a claimed message that will never be answered,
with a notice saying why, so the conversation moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from memory.errors import InvalidInput, NotFound, row_id
from memory.messages import _COLUMNS, MAX_MESSAGE_ID, Claim, StoredMessage, _row
from memory.rows import insert_outbound

STUCK_AFTER_S = 900.0
"""A message still pending this long after it arrived, and tried at least STUCK_TRIES
times, is 'stuck': it shows in /health and `axi inbox list`."""
STUCK_TRIES = 3
GIVEN_UP = "abandonne"


@dataclass(frozen=True)
class Outcome:
    message_id: int
    state: str
    reply: str | None
    reply_id: int | None
    notices: tuple[str, ...]


@dataclass(frozen=True)
class InboxEntry:
    message: StoredMessage
    stuck: bool


class InboxAdminMixin:
    db: Any

    async def reply_outcome(self, message_id: int) -> Outcome:
        """The inbound message's state, Axi's reply (not a notice) and the notices."""
        message_id = row_id(message_id, "inbound message", max_id=MAX_MESSAGE_ID)
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT id, sens, etat, texte, coalesce(metadata->>'genre', "
                "CASE WHEN coalesce((metadata->>'avis')::boolean, false) THEN 'notice' "
                "ELSE 'reply' END) AS genre FROM messages "
                "WHERE id = :id OR (en_reponse_a = :id AND sens = 'sortant') ORDER BY id"),
                {"id": message_id})).all()
        inbound = next((r for r in rows if r.id == message_id and r.sens == "entrant"), None)
        if inbound is None:
            raise NotFound(f"no inbound message #{message_id}")
        reply = next((r for r in rows if r.sens == "sortant" and r.genre == "reply"), None)
        return Outcome(message_id=message_id, state=inbound.etat,
                       reply=reply.texte if reply else None, reply_id=reply.id if reply else None,
                       notices=tuple(r.texte for r in rows
                                     if r.sens == "sortant" and r.genre == "notice"))

    async def list_inbox(self, *, limit: int = 100) -> list[InboxEntry]:
        """Pending inbound messages, oldest first, each marked stuck or not."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS}, (recu_le < now() - make_interval(secs => :age) "
                "AND tentatives >= :tries) AS stuck FROM messages "
                "WHERE sens = 'entrant' AND etat = 'en_attente' ORDER BY id LIMIT :n"),
                {"age": STUCK_AFTER_S, "tries": STUCK_TRIES, "n": limit})).all()
        return [InboxEntry(_row(r), bool(r.stuck)) for r in rows]

    async def recent_inbound(self, channel: str, address: str | None, seconds: float, *,
                             inner_circle: frozenset[str] = frozenset()) -> int:
        """Messages accepted on `channel` (from `address`, or from anyone) in the last
        `seconds` that were not held (`metadata.retenu`), those of people whose relation
        is in `inner_circle` not counted: what a channel's hourly caps count."""
        async with self.db.sessions() as session:
            count = await session.scalar(text(
                "SELECT count(*) FROM messages m WHERE m.sens = 'entrant' AND m.canal = :c "
                "AND m.recu_le > now() - make_interval(secs => :s) "
                "AND NOT (m.metadata ? 'retenu') AND (CAST(:a AS text) IS NULL OR m.adresse = :a) "
                "AND NOT EXISTS (SELECT 1 FROM identites i JOIN relations r "
                "  ON r.id = i.relation_id WHERE i.canal = m.canal AND i.adresse = m.adresse "
                "  AND r.relation = ANY(:inner))"),
                {"c": channel, "a": address, "s": float(seconds), "inner": sorted(inner_circle)})
        return int(count or 0)

    async def held_messages(self, channel: str | None = None, *, limit: int = 100
                            ) -> list[StoredMessage]:
        """Messages stored but not answered on Axi's own (bot.responder.HELD), newest first."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM messages m WHERE m.sens = 'entrant' "
                "AND m.etat = 'retenu' AND (CAST(:c AS text) IS NULL OR m.canal = :c) "
                "ORDER BY m.id DESC LIMIT :n"), {"c": channel, "n": limit})).all()
        return [_row(r) for r in rows]

    async def stuck_count(self) -> int:
        async with self.db.sessions() as session:
            return int(await session.scalar(text(
                "SELECT count(*) FROM messages WHERE sens = 'entrant' AND etat = 'en_attente' "
                "AND recu_le < now() - make_interval(secs => :age) AND tentatives >= :tries"),
                {"age": STUCK_AFTER_S, "tries": STUCK_TRIES}) or 0)

    async def drop_inbound(self, message_id: int, notice: str, *,
                           reason: str = "abandonné par l'opérateur") -> StoredMessage:
        """Give up a pending message (the operator's decision): it is closed as
        `abandonne` and the person gets `notice`, in one transaction. A message being
        answered right now (locked by a worker) cannot be dropped."""
        message_id = row_id(message_id, "inbound message", max_id=MAX_MESSAGE_ID)
        async with self.db.sessions() as session, session.begin():
            try:
                row = (await session.execute(text(
                    f"SELECT {_COLUMNS} FROM messages WHERE id = :id AND sens = 'entrant' "
                    "FOR UPDATE NOWAIT"), {"id": message_id})).one_or_none()
            except DBAPIError as exc:
                if "lock" not in str(exc.orig):
                    raise
                raise InvalidInput(f"message #{message_id} is being answered right now; "
                                   "try again in a moment") from None
            if row is None:
                raise NotFound(f"no inbound message #{message_id}")
            msg = _row(row)
            if msg.etat != "en_attente":
                raise InvalidInput(f"message #{message_id} is not pending (state {msg.etat})")
            await self.give_up(Claim(session, msg), notice=notice, reason=reason,
                               relation_id=msg.relation_id)
        return msg

    async def give_up(self, claim: Claim, *, notice: str | None, reason: str,
                      relation_id: int | None) -> int | None:
        """Close a claimed message for good, telling the person why (in French)."""
        msg = claim.message
        await claim.execute(
            "UPDATE messages SET etat = :etat, erreur = :err, relation_id = coalesce(:rid, "
            "relation_id), tentatives = tentatives + 1, maj_le = now() WHERE id = :id",
            {"etat": GIVEN_UP, "err": reason[:2000], "rid": relation_id, "id": msg.id})
        out_id = None
        if notice:
            out_id = await insert_outbound(
                claim.session, canal=msg.canal, adresse=msg.reply_address, texte=notice,
                conversation=msg.conversation, relation_id=relation_id or msg.relation_id,
                en_reponse_a=msg.id, reference_fil=msg.reference_fil, genre="notice")
        claim.finished = True
        return out_id


    async def conversation_page(self, conversation: str, *, before: int | None = None,
                                limit: int = 50) -> list[StoredMessage]:
        """A conversation's messages, newest first, older than message `before` (the
        web's history); buttons pressed and held messages are not part of it."""
        if before is not None:
            before = row_id(before, "message", max_id=MAX_MESSAGE_ID)
        limit = max(1, min(int(limit), 200))
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM messages WHERE conversation = :c "
                "AND (CAST(:b AS bigint) IS NULL OR id < :b) "
                "AND NOT (metadata ? 'evenement') AND etat <> 'retenu' "
                "ORDER BY id DESC LIMIT :n"), {"c": conversation, "b": before, "n": limit})).all()
        return [_row(r) for r in rows]

    async def inbound_origin(self, message_id: int) -> tuple[str, str] | None:
        """(channel, address) of inbound message `message_id`, or None."""
        try:
            message_id = row_id(message_id, "message", max_id=MAX_MESSAGE_ID)
        except (NotFound, InvalidInput):
            return None
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                "SELECT canal, adresse FROM messages WHERE id = :i AND sens = 'entrant'"),
                {"i": message_id})).one_or_none()
        return None if row is None else (row.canal, row.adresse)


def age_text(received: datetime, now: datetime) -> str:
    seconds = max(0, int((now - received).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
