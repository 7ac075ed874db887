"""Step 4 of DESIGN "How a message flows", the outbox: claim the next queued message, send
it through its channel, record the outcome — once.

Why apart from bot/pipeline.py (which holds the inbox, the worker and `wait_reply`): the
outbox has rules of its own, all here. At most once where a resend would show twice
(Telegram has no idempotency key): unless the channel says `repeatable_send`, an attempt
marker is committed before the send and deleted with its outcome, and a message sent in
parts records each part delivered (memory/send_attempts.py), so an attempt cut between
two parts resumes after them. A marker found again with a request that may have left, or
a channel reporting a timeout after sending twice, makes the send uncertain: one rule,
`_uncertain`. A pace (rate limit) postpones without counting an attempt; a failure is
retried with the SEND backoff (bot/backoff.py), or given up.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import cast

from bot import backoff
from bot.channel import KINDS, Channel, Delivery, DeliveryKind, OutgoingFile, SendError
from bot.metrics import Counters
from bot.waiting import wait_for_event_or_stop
from memory.messages import Claim, StoredMessage
from memory.rows import decode_files
from memory.store import MemoryStore

log = logging.getLogger(__name__)
CRASH_ENV = "AXI_TEST_CRASH_AT"
"""Test-only: `outbox:after_send` kills the process after a channel's send returned and
before its outcome is committed, to prove the message is not sent twice;
`outbox:between_parts` once the first part of a message in parts is recorded delivered."""


@dataclass(frozen=True)
class _Progress:
    """A send in parts, recorded part by part (bot.channel.SendProgress)."""

    store: MemoryStore
    message_id: int

    async def leaving(self, part: int) -> None:
        await self.store.part_leaving(self.message_id, part)

    async def delivered(self, parts: int) -> None:
        await self.store.parts_delivered(self.message_id, parts)
        if os.environ.get(CRASH_ENV) == "outbox:between_parts":
            os._exit(137)  # test-only: killed between two parts of one message


def delivery_of(msg: StoredMessage) -> Delivery:
    """The Delivery a channel gets for a stored outbound row."""
    meta = msg.metadata
    kind = meta.get("genre") or ("notice" if meta.get("avis") else "reply")
    if kind not in KINDS:
        kind = "notice"  # never shown as a reply: it is not one
    return Delivery(
        message_id=msg.id, channel=msg.canal, address=msg.adresse,
        conversation=msg.conversation, text=msg.texte, in_reply_to=msg.en_reponse_a,
        thread_ref=msg.reference_fil, kind=cast(DeliveryKind, kind), subject=meta.get("sujet"),
        html=meta.get("html"),
        attachments=tuple(OutgoingFile(f.filename, f.content_type, f.data)
                          for f in decode_files(msg.pieces_jointes)),
        cc=tuple(meta.get("cc") or ()), reply_to=meta.get("reply_to"),
        choices=tuple((str(label), str(data)) for label, data in meta.get("choix") or ()),
        thread_meta=meta.get("fil") if isinstance(meta.get("fil"), dict) else None)


class OutboxStep:
    """The outbox of `bot.pipeline.Pipeline` (which sets these attributes)."""

    store: MemoryStore
    channels: Mapping[str, Channel]
    counters: Counters
    poll_interval_s: float
    last_loop_error: str | None
    _wake_outbox: asyncio.Event

    async def deliver_one(self, *, replying_to: int | None = None,
                          conversation: str | None = None) -> bool:
        """Send the next queued message through its channel (optionally: the reply to one
        message, or the next of one conversation). False if none.

        At most once where a resend would show twice (Telegram has no idempotency key):
        unless the channel says `repeatable_send`, an attempt marker is committed before
        the send and deleted with its outcome. Found again when the row is claimed (the
        process died, or the database went away, between the send and its mark), or
        reported by the channel (a timeout after the request left), the send is
        uncertain: one rule, `_uncertain`."""
        async with self.store.claim_outbound(list(self.channels), replying_to=replying_to,
                                             conversation=conversation) as claim:
            if claim is None:
                return False
            msg = claim.message
            channel = self.channels[msg.canal]
            marked = not getattr(channel, "repeatable_send", False)
            delivery = delivery_of(msg)
            if marked:
                # the earlier attempt, if any, read and this one's marker committed, in
                # one statement (the claim holds the row: nothing else touches it)
                earlier = await self.store.begin_send_after(msg.id)
                if earlier is not None and earlier.in_flight:
                    part = f"part {earlier.parts + 1} of " if earlier.parts else ""
                    await self._uncertain(claim, f"a send of {part}it began at "
                                                 f"{earlier.began.isoformat()} and its "
                                                 "outcome was never recorded")
                    return True
                delivery = replace(delivery, resume_from=earlier.parts if earlier else 0,
                                   progress=_Progress(self.store, msg.id))
            try:
                try:
                    external_id = await channel.send(delivery)
                except SendError:
                    raise
                except Exception as exc:  # a fault outside the contract (a bug, a mail
                    # that cannot be built): a failure like any other, retried later and
                    # given up in the end, never the head of the queue for ever (the
                    # oldest due message is claimed first: it held up every channel)
                    left = self._may_have_left(channel, msg.id, marked)
                    await self._unmark_if_nothing_left(channel, msg.id, marked)
                    log.error("sending #%s on %s raised %s", msg.id, msg.canal,
                              type(exc).__name__, exc_info=exc)
                    raise SendError(f"{type(exc).__name__}: {exc}", uncertain=left) from exc
                except BaseException:  # stopped (cancelled)
                    await self._unmark_if_nothing_left(channel, msg.id, marked)
                    raise
                if os.environ.get(CRASH_ENV) == "outbox:after_send":
                    os._exit(137)  # test-only: sent, its outcome not committed (worst moment)
            except SendError as exc:
                if marked and not exc.uncertain:  # tried again later: delivered parts kept
                    await self.store.pause_send(claim)
                if exc.uncertain:
                    await self._uncertain(claim, str(exc))
                    return True
                if exc.postponed:  # a pace, not a failure: later, attempts not counted
                    pace = exc.retry_after or 1.0
                    await self.store.postpone_outbound(claim, pace)
                    # come back exactly then, not at the next poll
                    asyncio.get_running_loop().call_later(pace + 0.02, self._wake_outbox.set)
                    return True
                attempt = msg.tentatives + 1
                retry = exc.retryable and attempt < backoff.MAX_SEND_ATTEMPTS
                log.warning("sending #%s on %s failed (%s)%s", msg.id, msg.canal, exc,
                            "" if retry else ": giving up")
                self.counters.error(f"send_{msg.canal}")
                delay = None
                if retry:
                    delay = (exc.retry_after if exc.retry_after is not None
                             else backoff.SEND.delay(attempt))
                if marked and delay is None:  # given up: nothing left to resume
                    await self.store.end_send(claim)
                await self.store.mark_send_failed(claim, str(exc), retry_in_s=delay)
                return True
            if marked:  # the marker goes with the "sent" mark, in one statement
                await self.store.end_send_sent(claim, external_id)
            else:
                await self.store.mark_sent(claim, external_id)
        self.counters.message(msg.canal, "out")
        return True

    @staticmethod
    def _may_have_left(channel: Channel, message_id: int, marked: bool) -> bool:
        """Whether a send that stopped outside the SendError contract may have reached
        the other end: unknown (no `request_in_flight`) counts as yes."""
        in_flight = getattr(channel, "request_in_flight", None)
        return marked and (in_flight is None or bool(in_flight(message_id)))

    async def _unmark_if_nothing_left(self, channel: Channel, message_id: int,
                                      marked: bool) -> None:
        """A send that stopped outside the SendError contract (the process stopping
        during a pace, a bug) leaves its marker only when a request may have left: a
        channel that can tell (`request_in_flight`, optional) spares a routine restart
        from recording an unsent reply as uncertain."""
        if not marked or self._may_have_left(channel, message_id, marked):
            return
        try:
            await asyncio.shield(self.store.cancel_send(message_id))
        except (Exception, asyncio.CancelledError) as exc:  # the database gone too
            log.warning("sending #%s stopped before leaving, but its marker stays (%s): "
                        "it will count as uncertain", message_id, exc)

    async def _uncertain(self, claim: Claim, why: str) -> None:
        """The rule for a send that may have been delivered (DESIGN: nothing is answered
        twice): never sent again, recorded as sent with why (`messages.erreur`, counted
        by the store's `uncertain_sends`), logged and counted."""
        msg = claim.message
        log.warning("sending #%s on %s is uncertain (%s): it may have been delivered, so it "
                    "is not sent again", msg.id, msg.canal, why)
        self.counters.error(f"send_uncertain_{msg.canal}")
        await self.store.mark_send_uncertain(claim, why)

    async def run_outbox(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.deliver_one()
            except Exception as exc:
                self.last_loop_error = f"outbox: {type(exc).__name__}: {exc}"
                self.counters.error("outbox")
                log.warning("outbox loop error: %s", exc)
                busy = False
            if not busy:
                await wait_for_event_or_stop(self._wake_outbox, stop, self.poll_interval_s)
