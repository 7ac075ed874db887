"""The outbox's attempt markers (table `envois_commences`, migration 0022): a send that
began and whose outcome is not committed.

Why: the outbox holds a row's lock in one transaction across the channel's send and the
"sent" mark, so a process killed between Telegram accepting a message and that commit
left the row `a_envoyer`, and the reply went out again after the restart. For a channel
that cannot take the same delivery twice, `begin_send` commits a marker in a transaction
of its own before the send; the outcome's transaction (the claim's) deletes it
(`end_send`). A claim that finds a marker (`send_began`) knows the message may have been
delivered: bot/pipeline.py then applies the one rule for an uncertain send
(`mark_send_uncertain`: recorded as sent, never resent blindly).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.messages import Claim

UNCERTAIN_PREFIX = "envoi incertain"
"""How `messages.erreur` starts for a message sent without certainty (counted by
`uncertain_sends`)."""


class SendAttemptsMixin:
    db: Any

    async def begin_send(self, message_id: int) -> None:
        """Commit "the send of this message begins now", before the channel is called."""
        async with self.db.sessions.begin() as session:
            await session.execute(text(
                "INSERT INTO envois_commences (message_id) VALUES (:i) "
                "ON CONFLICT (message_id) DO NOTHING"), {"i": message_id})

    async def send_began(self, claim: Claim) -> datetime | None:
        """When a send of the claimed message began without its outcome committed (the
        process died, or the database went away, between the send and its mark)."""
        began: datetime | None = (await claim.execute(
            "SELECT commence_le FROM envois_commences WHERE message_id = :i",
            {"i": claim.message.id})).scalar()
        return began

    async def end_send(self, claim: Claim) -> None:
        """In the outcome's transaction (the claim's): the attempt is over."""
        await claim.execute("DELETE FROM envois_commences WHERE message_id = :i",
                            {"i": claim.message.id})

    async def cancel_send(self, message_id: int) -> None:
        """In a transaction of its own: the send stopped before any request left (the
        process stopping during a pace, an error before the transport): no marker, so
        the next claim sends it as if never tried."""
        async with self.db.sessions.begin() as session:
            await session.execute(text("DELETE FROM envois_commences WHERE message_id = :i"),
                                  {"i": message_id})

    async def mark_send_uncertain(self, claim: Claim, why: str) -> None:
        """The message may have been delivered: recorded as sent (no channel id), with
        why in `erreur`, so it is never sent again and the conversation goes on."""
        await claim.execute(
            "UPDATE messages SET etat = 'envoye', erreur = :err, tentatives = tentatives + 1, "
            "maj_le = now() WHERE id = :id",
            {"err": f"{UNCERTAIN_PREFIX} : {why}"[:2000], "id": claim.message.id})
        await self.end_send(claim)
        claim.finished = True

    async def uncertain_sends(self, *, hours: float = 24.0) -> int:
        """Messages sent without certainty in the last `hours` (for /health)."""
        async with self.db.sessions() as session:
            return int(await session.scalar(text(
                "SELECT count(*) FROM messages WHERE sens = 'sortant' AND etat = 'envoye' "
                "AND erreur LIKE :p AND maj_le > now() - make_interval(secs => :s)"),
                {"p": f"{UNCERTAIN_PREFIX}%", "s": hours * 3600}) or 0)
