"""The outbox side of table `messages`: outbound rows queued, claimed one at a time and
marked sent, postponed or failed.

Why apart from memory/messages.py (the inbox and the shared row type): the two sides
share a table and a row type but not their rules. The sender claims a message the way
the worker claims one (a row lock held for the whole send), per conversation in order: a
message waits while an earlier one of its conversation is still to send, unless that one
is held for quiet hours. At-most-once sending, for channels that cannot take a message
twice, is memory/send_attempts.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text

from memory.messages import _COLUMNS, Claim, _row
from memory.rows import insert_outbound
from memory.send_attempts import SENT

_CLAIM_OUTBOUND = f"""
SELECT {_COLUMNS} FROM messages m
WHERE m.sens = 'sortant' AND m.etat = 'a_envoyer'
  AND (m.prochain_essai IS NULL OR m.prochain_essai <= now())
  AND m.canal = ANY(:channels)
  AND NOT EXISTS (
      SELECT 1 FROM messages p
      WHERE p.conversation = m.conversation AND p.sens = 'sortant'
        AND p.etat = 'a_envoyer' AND p.id < m.id
        -- held for quiet hours: it does not hold others back
        AND NOT (coalesce((p.metadata->>'heures_calmes')::boolean, false)
                 AND p.prochain_essai > now()))
  {{extra}}
ORDER BY m.id
LIMIT 1
FOR UPDATE SKIP LOCKED
"""


class OutboxMixin:
    db: Any

    async def queue_outbound(
        self, *, canal: str, adresse: str, conversation: str, texte: str,
        relation_id: int | None = None, en_reponse_a: int | None = None,
        reference_fil: str | None = None, metadata: dict[str, Any] | None = None,
        genre: str = "push",
    ) -> int:
        """Queue a message that is not a reply being committed (bot.notify uses this
        module's notification API; this is for tests and tools)."""
        async with self.db.sessions.begin() as session:
            return await insert_outbound(
                session, canal=canal, adresse=adresse, texte=texte, conversation=conversation,
                relation_id=relation_id, en_reponse_a=en_reponse_a, reference_fil=reference_fil,
                genre=genre, metadata=metadata)

    @asynccontextmanager
    async def claim_outbound(
        self, channels: Sequence[str], *, replying_to: int | None = None,
        conversation: str | None = None,
    ) -> AsyncIterator[Claim | None]:
        """Hold the next message to send on these channels (optionally: a reply to one
        given inbound message, or the next of one conversation)."""
        extra = "AND m.en_reponse_a = :rep" if replying_to is not None else ""
        if conversation is not None:
            extra += " AND m.conversation = :conv"
        async with self.db.sessions() as session, session.begin():
            row = (await session.execute(text(_CLAIM_OUTBOUND.format(extra=extra)),
                                         {"channels": list(channels), "rep": replying_to,
                                          "conv": conversation})
                   ).one_or_none()
            yield Claim(session, _row(row)) if row is not None else None

    async def mark_sent(self, claim: Claim, external_id: str | None) -> None:
        await claim.execute(SENT, {"ext": external_id, "i": claim.message.id})
        claim.finished = True

    async def postpone_outbound(self, claim: Claim, retry_in_s: float) -> None:
        """Send later without counting an attempt (the transport set the pace)."""
        await claim.execute(
            "UPDATE messages SET prochain_essai = now() + make_interval(secs => :d), "
            "maj_le = now() WHERE id = :id", {"d": retry_in_s, "id": claim.message.id})
        claim.finished = True

    async def mark_send_failed(self, claim: Claim, erreur: str, *, retry_in_s: float | None) -> None:
        """Retry later (backoff chosen by the caller), or give up when retry_in_s is None."""
        if retry_in_s is None:
            sql = ("UPDATE messages SET etat = 'echec', erreur = :err, tentatives = tentatives + 1, "
                   "maj_le = now() WHERE id = :id")
            params: dict[str, Any] = {"err": erreur, "id": claim.message.id}
        else:
            sql = ("UPDATE messages SET erreur = :err, tentatives = tentatives + 1, maj_le = now(), "
                   "prochain_essai = now() + make_interval(secs => :d) WHERE id = :id")
            params = {"err": erreur, "id": claim.message.id, "d": retry_in_s}
        await claim.execute(sql, params)
        claim.finished = True
