"""The outbox's attempt markers (table `envois_commences`, migration 0022): a send that
began and whose outcome is not committed.

Why: the outbox holds a row's lock in one transaction across the channel's send and the
"sent" mark, so a process killed between Telegram accepting a message and that commit
left the row `a_envoyer`, and the reply went out again after the restart. For a channel
that cannot take the same delivery twice, `begin_send_after` reads an earlier marker and
commits this attempt's in one statement of its own, before the send; the outcome's
transaction (the claim's) deletes it (`end_send`, or with the "sent" mark in one
statement, `end_send_sent`). A claim that finds a marker in flight knows the message may
have been delivered: bot/outbox.py then applies the one rule for an uncertain send
(`mark_send_uncertain`: recorded as sent, never resent blindly).

A message sent in parts (Telegram: a long reply, a push and its files) also records, in
transactions of their own, each part delivered (`parts_delivered`) and each request that
is about to leave (`part_leaving`), so that an attempt cut between two parts resumes
after the delivered ones (migration 0023) instead of sending them again, and only a part
whose request may have arrived is uncertain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.messages import Claim

_END = "DELETE FROM envois_commences WHERE message_id = :i"
SENT = ("UPDATE messages SET etat = 'envoye', identifiant_externe = :ext, erreur = NULL, "
        "tentatives = tentatives + 1, maj_le = now() WHERE id = :i")
"""A message sent: what `mark_sent` (memory/outbox.py) and `end_send_sent` record."""

UNCERTAIN_PREFIX = "envoi incertain"
"""How `messages.erreur` starts for a message sent without certainty (counted by
`uncertain_sends`)."""


_PAUSE = ("WITH gone AS (DELETE FROM envois_commences WHERE message_id = :i AND parties = 0) "
          "UPDATE envois_commences SET en_vol = false WHERE message_id = :i AND parties > 0")
"""Nothing under way: a marker with no part delivered is dropped, else kept as a count."""


@dataclass(frozen=True)
class SendAttempt:
    """An earlier attempt at sending a message, whose outcome was not committed."""

    began: datetime
    parts: int
    """Its first `parts` parts were delivered."""
    in_flight: bool
    """A request for the next part may have left (it may have arrived)."""


class SendAttemptsMixin:
    db: Any

    async def begin_send_after(self, message_id: int) -> SendAttempt | None:
        """The earlier attempt at sending this message whose outcome was not committed
        (the process died, or the database went away, between a send and its mark; or it
        was paused between two parts), if any, and this one's marker: one statement,
        committed on its own. Called with the
        message's claim held, so nothing else touches its marker meanwhile. An earlier
        attempt in flight keeps its marker as it was (in flight already): the caller
        then applies the uncertain-send rule and sends nothing."""
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "WITH earlier AS (SELECT commence_le, parties, en_vol FROM envois_commences "
                "WHERE message_id = :i), "
                "begun AS (INSERT INTO envois_commences (message_id) VALUES (:i) "
                "ON CONFLICT (message_id) DO UPDATE SET en_vol = true) "
                "SELECT commence_le, parties, en_vol FROM earlier"), {"i": message_id})).first()
        return None if row is None else SendAttempt(row[0], int(row[1]), bool(row[2]))

    async def part_leaving(self, message_id: int, part: int) -> None:
        """In a transaction of its own, before the request: part `part` (0-based; the
        parts before it delivered) may reach the person from now on."""
        await self._progress(message_id, part, in_flight=True)

    async def parts_delivered(self, message_id: int, parts: int) -> None:
        """In a transaction of its own: the first `parts` parts were delivered, and no
        request is under way."""
        await self._progress(message_id, parts, in_flight=False)

    async def _progress(self, message_id: int, parts: int, *, in_flight: bool) -> None:
        async with self.db.sessions.begin() as session:
            await session.execute(text(
                "UPDATE envois_commences SET parties = :p, en_vol = :f WHERE message_id = :i"),
                {"p": parts, "f": in_flight, "i": message_id})

    async def pause_send(self, claim: Claim) -> None:
        """In the outcome's transaction (the claim's), when the message will be tried
        again: nothing is under way, and the parts delivered stay counted."""
        await claim.execute(_PAUSE, {"i": claim.message.id})

    async def end_send(self, claim: Claim) -> None:
        """In the outcome's transaction (the claim's): the attempt is over."""
        await claim.execute(_END, {"i": claim.message.id})

    async def end_send_sent(self, claim: Claim, external_id: str | None) -> None:
        """`end_send` then `mark_sent` (memory/outbox.py), as one statement in the
        claim's transaction: a sent message's one round trip instead of two."""
        await claim.execute(f"WITH ended AS ({_END}) {SENT}",
                            {"i": claim.message.id, "ext": external_id})
        claim.finished = True

    async def cancel_send(self, message_id: int) -> None:
        """In a transaction of its own: the send stopped with no request under way (the
        process stopping during a pace, an error before the transport): the next claim
        sends what was not delivered, as if never tried."""
        async with self.db.sessions.begin() as session:
            await session.execute(text(_PAUSE), {"i": message_id})

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
