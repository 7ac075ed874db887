"""The spine of DESIGN "How a message flows", as three loops over the durable tables:
inbox (accept), worker (claim → Responder → reply queued), outbox (claim → channel.send).

Everything between two steps lives in PostgreSQL, so a crash at any point loses nothing:
an accepted message stays pending until a reply is committed with it; a queued reply
stays queued until a channel has sent it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

from bot.channel import Channel, Delivery, SendError
from bot.inbound import Inbound
from bot.responder import Responder
from memory.store import MemoryStore

log = logging.getLogger(__name__)

MAX_SEND_ATTEMPTS = 8
MAX_UNEXPECTED_FAILURES = 5
POLL_INTERVAL_S = 1.0


def conversation_key(inbound: Inbound) -> str:
    """One conversation per (channel, address); email threads may refine this later."""
    return f"{inbound.channel}:{inbound.sender}"


def send_backoff(attempt: int) -> float:
    return min(600.0, 2.0 * (2 ** max(attempt - 1, 0)))


class Pipeline:
    def __init__(self, store: MemoryStore, responder: Responder,
                 channels: Mapping[str, Channel], *, concurrency: int = 4):
        self.store = store
        self.responder = responder
        self.channels = dict(channels)
        self.concurrency = concurrency
        self._work_ready = asyncio.Condition()  # notify(1): one lane per new message
        self._wakeups = 0
        self._wake_outbox = asyncio.Event()
        self.last_loop_error: str | None = None
        self.idle_lanes = 0
        """Worker lanes waiting for work: only then does accepting a message start its
        recall early (Responder.prefetch); during a burst the lanes are busy anyway."""

    # ---------------------------------------------------------------- 2. inbox
    async def accept(self, inbound: Inbound) -> int:
        """Store an inbound message (no-op on redelivery) and return its id. The channel
        acknowledges its source only after this returns."""
        accepted = await self.store.accept_inbound(
            canal=inbound.channel, adresse=inbound.sender, texte=inbound.text,
            identifiant_externe=inbound.external_id, conversation=conversation_key(inbound),
            verifie=inbound.verified, reference_fil=inbound.thread_ref,
            pieces_jointes=[{"filename": a.filename, "content_type": a.content_type,
                             "size": a.size, "ref": a.ref} for a in inbound.attachments],
            recu_le=inbound.received_at,
            metadata={"local_only": True} if inbound.local_only else None,
        )
        if not accepted.duplicate:
            if self.idle_lanes:  # a worker will take it now: start its recall meanwhile
                self.responder.prefetch(accepted.message)
            async with self._work_ready:
                # counted, so a lane about to wait does not miss it; capped, so a burst
                # does not leave thousands of empty claims behind it
                self._wakeups = min(self._wakeups + 1, self.concurrency)
                self._work_ready.notify(1)
        return accepted.message.id

    # ---------------------------------------------------------------- 3. worker
    async def process_one(self, *, message_id: int | None = None) -> bool:
        """Handle the next processable message (or one given message). False if none."""
        handled_id: int | None = None
        try:
            async with self.store.claim_inbound(message_id=message_id) as claim:
                if claim is None:
                    return False
                handled_id = claim.message.id
                live = None
                channel = self.channels.get(claim.message.canal)
                if channel is not None:
                    live = channel.live(claim.message.conversation)
                await self.responder.handle(claim, live=live)
        except Exception as exc:
            if handled_id is None:
                raise
            log.exception("message #%s failed", handled_id)
            gave_up = await self.store.record_inbound_failure(
                handled_id, f"{type(exc).__name__}: {exc}", retry_in_s=30.0,
                max_attempts=MAX_UNEXPECTED_FAILURES)
            if gave_up:
                log.error("message #%s given up after %s failures", handled_id,
                          MAX_UNEXPECTED_FAILURES)
        self._wake_outbox.set()
        return True

    async def run_worker(self, stop: asyncio.Event) -> None:
        """`concurrency` lanes. A new message wakes ONE waiting lane (waking them all made
        four claims race for each message, three of them for nothing); a busy lane looks
        for more work before it waits; every lane also polls each POLL_INTERVAL_S for
        messages accepted by other processes."""

        async def wake_all_on_stop() -> None:
            await stop.wait()
            async with self._work_ready:
                self._work_ready.notify_all()

        async def lane() -> None:
            while not stop.is_set():
                try:
                    busy = await self.process_one()
                except Exception as exc:  # database hiccup: keep the loop alive
                    self.last_loop_error = f"worker: {type(exc).__name__}: {exc}"
                    log.warning("worker loop error: %s", exc)
                    busy = False
                if not busy and not stop.is_set():
                    self.idle_lanes += 1
                    try:
                        async with self._work_ready:
                            if not self._wakeups:
                                with contextlib.suppress(TimeoutError):
                                    await asyncio.wait_for(self._work_ready.wait_for(
                                        lambda: self._wakeups > 0 or stop.is_set()),
                                        POLL_INTERVAL_S)
                            if self._wakeups:
                                self._wakeups -= 1
                    finally:
                        self.idle_lanes -= 1

        waker = asyncio.ensure_future(wake_all_on_stop())
        try:
            await asyncio.gather(*(lane() for _ in range(self.concurrency)))
        finally:
            waker.cancel()

    # ---------------------------------------------------------------- 4. outbox
    async def deliver_one(self, *, replying_to: int | None = None) -> bool:
        """Send the next queued message through its channel. False if none."""
        async with self.store.claim_outbound(list(self.channels),
                                             replying_to=replying_to) as claim:
            if claim is None:
                return False
            msg = claim.message
            delivery = Delivery(
                message_id=msg.id, channel=msg.canal, address=msg.adresse,
                conversation=msg.conversation, text=msg.texte, in_reply_to=msg.en_reponse_a,
                thread_ref=msg.reference_fil, notice=bool(msg.metadata.get("avis")))
            try:
                external_id = await self.channels[msg.canal].send(delivery)
            except SendError as exc:
                attempt = msg.tentatives + 1
                retry = exc.retryable and attempt < MAX_SEND_ATTEMPTS
                log.warning("sending #%s on %s failed (%s)%s", msg.id, msg.canal, exc,
                            "" if retry else ": giving up")
                await self.store.mark_send_failed(
                    claim, str(exc), retry_in_s=send_backoff(attempt) if retry else None)
                return True
            await self.store.mark_sent(claim, external_id)
        return True

    async def run_outbox(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                busy = await self.deliver_one()
            except Exception as exc:
                self.last_loop_error = f"outbox: {type(exc).__name__}: {exc}"
                log.warning("outbox loop error: %s", exc)
                busy = False
            if not busy:
                await _wait(self._wake_outbox, stop, POLL_INTERVAL_S)


async def _wait(event: asyncio.Event, stop: asyncio.Event, seconds: float) -> None:
    """Sleep until woken, stopped, or timeout (polling covers other processes' work)."""
    with contextlib.suppress(TimeoutError):
        waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
    event.clear()
