"""The spine of DESIGN "How a message flows", as three loops over the durable tables:
inbox (accept), worker (claim → Responder → reply queued), outbox (claim → channel.send).

Everything between two steps lives in PostgreSQL, so a crash at any point loses nothing:
an accepted message stays pending until a reply is committed with it; a queued reply
stays queued until a channel has sent it. `wait_reply` lets whoever accepted a message
(a request/response channel, `axi ask`) await what became of it, whichever process
answered it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from bot import backoff
from bot.channel import (
    Channel,
    CursorUpdate,
    ReplyOutcome,
)
from bot.gathered import SUPPLIED_KEY, SUPPLIED_TURN_CHARS, SUPPLIED_TURNS
from bot.inbound import ButtonPressed, Inbound
from bot.metrics import Counters, NoCounters
from bot.outbox import OutboxStep
from bot.responder import Responder
from llm.gate import ON_PARK
from memory.database import lost_connection
from memory.errors import InvalidInput, NotFound
from memory.messages import Accepted, ReceivedFile, StoredMessage, inbound_params
from memory.store import MemoryStore
from memory.text import MAX_CONTENT_CHARS, clean

log = logging.getLogger(__name__)
POLL_INTERVAL_S = 1.0
PARKED_LANES_PER_LANE = 2
"""Extra lanes, per configured lane, that may stand in for lanes whose message waits for
its turn at the local model (each holds one database connection while it waits)."""
MAX_KEPT_BYTES = 50 * 1024 * 1024
"""The received files' contents kept with one message, at most (each channel has its own,
lower, limit per file)."""


def conversation_key(inbound: Inbound) -> str:
    """One conversation per (channel, address), or per room (a group: everyone's messages
    there are one conversation); email threads may refine this later. What comes from an
    address unverified is a conversation of its own: a sender who cannot prove the address
    is a stranger, and never gets its owner's history in a prompt. Buttons pressed are one
    of their own too."""
    key = f"{inbound.channel}:{inbound.room or inbound.sender}"
    if not inbound.verified:
        return f"{key}:non-vérifié"
    if isinstance(inbound.event, ButtonPressed):
        # a button needs no model: it never waits behind a message that waits for one
        return f"{key}:boutons"
    return key


def _supplied(turns: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """The channel's conversation, bounded: its last turns, each cut."""
    kept = turns[-SUPPLIED_TURNS:]
    return {"debut": len(turns) - len(kept),
            "tours": [[role, clean(text)[:SUPPLIED_TURN_CHARS]] for role, text in kept]}


def _params(inbound: Inbound) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    text = inbound.text
    if len(text) > MAX_CONTENT_CHARS:  # kept, cut: a message is never refused for its size
        meta["tronque"] = len(text)
        text = text[:MAX_CONTENT_CHARS]
    if inbound.local_only:
        meta["local_only"] = True
    if inbound.event is not None:
        meta["evenement"] = inbound.event.as_json()
    if inbound.display_name:
        meta["nom_affiche"] = clean(inbound.display_name)[:200]
    if inbound.forwarded_from is not None:
        meta["transfere"] = clean(inbound.forwarded_from)[:200] or "inconnu"
    if inbound.room is not None:
        meta["salon"] = clean(inbound.room)[:200]
    if inbound.hold:
        meta["retenu"] = clean(inbound.hold)[:300]
    if inbound.thread_meta:
        meta["fil"] = dict(inbound.thread_meta)  # cleaned with all the metadata (memory)
    if inbound.supplied_history is not None:
        meta[SUPPLIED_KEY] = _supplied(inbound.supplied_history)
    kept, budget = [], MAX_KEPT_BYTES
    for a in inbound.attachments:  # whatever the channel fetched, within one bound
        if a.data is not None and len(a.data) > budget:
            a = replace(a, data=None, missing="trop volumineux pour être gardé")
        budget -= len(a.data) if a.data is not None else 0
        kept.append(a)
    return inbound_params(
        canal=inbound.channel, adresse=inbound.sender, texte=text,
        identifiant_externe=inbound.external_id, conversation=conversation_key(inbound),
        verifie=inbound.verified, reference_fil=inbound.thread_ref,
        pieces_jointes=[{"filename": a.filename, "content_type": a.content_type,
                         "size": len(a.data) if a.data is not None else a.size, "ref": a.ref,
                         "garde": a.data is not None,
                         **({"manque": a.missing[:200]} if a.missing else {})}
                        for a in kept],
        recu_le=inbound.received_at, metadata=meta or None,
        files=[ReceivedFile(i, a.filename or "fichier", a.content_type, a.data)
               for i, a in enumerate(kept) if a.data is not None])


class Pipeline(OutboxStep):
    def __init__(self, store: MemoryStore, responder: Responder,
                 channels: Mapping[str, Channel], *, concurrency: int = 4,
                 poll_interval_s: float = POLL_INTERVAL_S,
                 on_accept: Callable[[Sequence[StoredMessage]], Awaitable[None]] | None = None,
                 counters: Counters | None = None):
        self.store = store
        self.counters: Counters = counters or NoCounters()
        """Messages in and out by channel, and failures (bot/metrics.py)."""
        self.on_accept = on_accept
        """Called with the new messages stored, after the lanes are woken: someone wrote
        (the local model's gate lets background work yield at once, llm/gate.py). Run
        beside the caller, never awaited by it: a hint (it reads who wrote) must not hold
        back the channel that accepted, whose next fetch waits for `accept` to return."""
        self._hints: set[asyncio.Task[None]] = set()
        self.responder = responder
        self.channels = channels
        """The channels of this process (the live dict of `Axi`): the outbox sends only
        on these."""
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self._work_ready = asyncio.Condition()  # notify(1): one lane per new message
        self._wakeups = 0
        self._wake_outbox = asyncio.Event()
        self._waiters: dict[int, set[asyncio.Event]] = {}
        """Per inbound message, the events of those awaiting its outcome (wait_reply):
        set when this process handles that message — waking every waiter at every step
        made each waiting web request read its outcome ~50 times under load."""
        self.last_loop_error: str | None = None
        self.idle_lanes = 0
        """Worker lanes waiting for work: only then does accepting a message start its
        recall early (Responder.prefetch); during a burst the lanes are busy anyway."""
        self.parked_lanes = 0
        """Lanes whose message waits for its turn at the local model (llm/gate.py ON_PARK):
        they do not count against `concurrency`, so the next message — maybe Ludo's, who
        goes first at the gate — is claimed meanwhile instead of waiting for a lane."""
        self.max_lanes = concurrency * (1 + PARKED_LANES_PER_LANE)
        self._lanes: set[asyncio.Task[None]] = set()
        self._lane_factory: Callable[[], Any] | None = None

    # ---------------------------------------------------------------- 2. inbox
    async def accept(self, inbound: Inbound) -> int:
        """Store an inbound message (no-op on redelivery) and return its id. The channel
        acknowledges its source only after this returns."""
        accepted = await self.store.accept_many([_params(inbound)])
        await self._accepted(accepted)
        return accepted[0].message.id

    async def accept_batch(self, inbounds: Sequence[Inbound],
                           cursor: CursorUpdate | None = None) -> list[int | None]:
        """Accept several messages and move the channel's cursor in one transaction. A
        message that can never be stored (nothing in it, an address beyond any limit) is
        logged and skipped (None in its place): it must not hold the cursor back, or the
        channel would fetch the same batch for ever."""
        if cursor is not None and any(i.channel != cursor.channel for i in inbounds):
            raise ValueError("a channel moves only its own cursor")
        params: list[dict[str, Any] | None] = []
        for inbound in inbounds:
            try:
                params.append(_params(inbound))
            except InvalidInput as exc:
                log.warning("message %s:%s from %s not stored: %s", inbound.channel,
                            inbound.external_id, inbound.sender[:80], exc)
                params.append(None)
        accepted = await self.store.accept_many(
            [p for p in params if p is not None],
            cursor=(cursor.channel, cursor.key, cursor.value) if cursor is not None else None)
        await self._accepted(accepted)
        ids = iter(a.message.id for a in accepted)
        return [None if p is None else next(ids) for p in params]

    async def _accepted(self, accepted: Sequence[Accepted]) -> None:
        for item in accepted:
            if item.duplicate:
                continue
            if self.idle_lanes:  # a worker will take it now: start its recall meanwhile
                self.responder.prefetch(item.message)
            async with self._work_ready:
                # counted, so a lane about to wait does not miss it; capped, so a burst
                # does not leave thousands of empty claims behind it
                self._wakeups = min(self._wakeups + 1, self.concurrency)
                self._work_ready.notify(1)
        new = [a.message for a in accepted if not a.duplicate]
        for message in new:
            self.counters.message(message.canal, "in")
        if self.on_accept is not None and new:
            hint = asyncio.ensure_future(self._hint(self.on_accept, new))
            self._hints.add(hint)
            hint.add_done_callback(self._hints.discard)

    @staticmethod
    async def _hint(on_accept: Callable[[Sequence[StoredMessage]], Awaitable[None]],
                    new: Sequence[StoredMessage]) -> None:
        try:
            await on_accept(new)
        except Exception:  # the messages are stored: a hint lost is not their failure
            log.exception("on_accept failed")

    async def close(self) -> None:
        """Stop the hints still running (the process is stopping)."""
        for hint in list(self._hints):
            hint.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*self._hints, return_exceptions=True)

    # ---------------------------------------------------------------- 3. worker
    async def process_one(self, *, message_id: int | None = None,
                          conversation: str | None = None) -> bool:
        """Handle the next processable message (or one given message, or the next of one
        conversation). False if none."""
        handled_id: int | None = None
        try:
            async with self.store.claim_inbound(message_id=message_id,
                                                conversation=conversation) as claim:
                if claim is None:
                    return False
                handled_id = claim.message.id
                live = None
                channel = self.channels.get(claim.message.canal)
                if channel is not None and not claim.message.metadata.get("evenement"):
                    # a button pressed needs no model: nothing to show while it is settled
                    live = channel.live(claim.message.conversation,
                                        claim.message.reference_fil)
                parking = ON_PARK.set(self._parked)
                try:
                    await self.responder.handle(claim, live=live)
                finally:
                    ON_PARK.reset(parking)
                    settle = getattr(channel, "settle", None)  # optional: end "typing…"
                    if live is not None and settle is not None:
                        await settle(claim.message.conversation)
        except Exception as exc:
            if handled_id is None:
                raise
            if lost_connection(exc):  # an outage, not a bug: one line, retried below
                log.warning("message #%s failed: the database is out of reach (%s: %s)",
                            handled_id, type(exc).__name__, exc)
            else:
                log.exception("message #%s failed", handled_id)
            self.counters.error("worker")
            failures = (await self.store.get_message(handled_id)).tentatives + 1
            gave_up = await self.store.record_inbound_failure(
                handled_id, f"{type(exc).__name__}: {exc}",
                retry_in_s=backoff.UNEXPECTED.delay(failures),
                max_attempts=backoff.MAX_UNEXPECTED_FAILURES)
            if gave_up:
                log.error("message #%s given up after %s failures", handled_id,
                          backoff.MAX_UNEXPECTED_FAILURES)
        self._wake_outbox.set()
        self._progressed(handled_id)
        return True

    def _parked(self, parked: bool) -> None:
        """A lane's message starts (True) or stops (False) waiting at the local model's
        gate: while fewer than `concurrency` lanes are working, another lane stands in."""
        self.parked_lanes += 1 if parked else -1
        if (parked and self._lane_factory is not None
                and len(self._lanes) - self.parked_lanes < self.concurrency
                and len(self._lanes) < self.max_lanes):
            self._start_lane()

    def _start_lane(self) -> None:
        assert self._lane_factory is not None
        task = asyncio.ensure_future(self._lane_factory())
        self._lanes.add(task)
        task.add_done_callback(self._lanes.discard)

    def _leave_if_surplus(self, lane: asyncio.Task[None] | None) -> bool:
        """More lanes work than configured (a parked one came back): this one ends, and
        leaves the count at once. A task leaves `_lanes` only once finished: lanes that
        decided in the same turn of the loop each counted the others still there, and
        all of them could end."""
        if len(self._lanes) - self.parked_lanes <= self.concurrency:
            return False
        if lane is not None:
            self._lanes.discard(lane)
        return True

    async def run_worker(self, stop: asyncio.Event) -> None:
        """`concurrency` lanes, plus stand-ins for lanes parked at the local model's gate
        (up to `max_lanes` in all). A new message wakes ONE waiting lane (waking them all
        made four claims race for each message, three of them for nothing); a busy lane
        looks for more work before it waits; every lane also polls each poll interval for
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
                    self.counters.error("worker")
                    log.warning("worker loop error: %s", exc)
                    busy = False
                if self._leave_if_surplus(asyncio.current_task()):
                    return
                if not busy and not stop.is_set():
                    self.idle_lanes += 1
                    try:
                        async with self._work_ready:
                            if not self._wakeups:
                                with contextlib.suppress(TimeoutError):
                                    await asyncio.wait_for(self._work_ready.wait_for(
                                        lambda: self._wakeups > 0 or stop.is_set()),
                                        self.poll_interval_s)
                            if self._wakeups:
                                self._wakeups -= 1
                    finally:
                        self.idle_lanes -= 1

        waker = asyncio.ensure_future(wake_all_on_stop())
        self._lane_factory = lane
        try:
            for _ in range(self.concurrency):
                self._start_lane()
            while self._lanes:  # stand-ins may start while we wait
                await asyncio.wait(set(self._lanes))
        finally:
            self._lane_factory = None
            waker.cancel()
            for task in list(self._lanes):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*self._lanes, return_exceptions=True)

    def _progressed(self, message_id: int | None) -> None:
        """Message `message_id` was handled here (committed): wake its waiters."""
        for event in self._waiters.get(message_id, ()) if message_id is not None else ():
            event.set()

    # ---------------------------------------------------------------- awaiting a reply
    async def wait_reply(self, message_id: int, timeout_s: float) -> ReplyOutcome:
        """What became of an accepted message: returns as soon as its reply is committed
        or it is closed without one (ignored, given up), or at the timeout with its
        state then. Woken by this process's work, polling for other processes'."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout_s, 0.0)
        progress = asyncio.Event()
        waiters = self._waiters.setdefault(message_id, set())
        waiters.add(progress)
        try:
            while True:
                progress.clear()  # before reading: no progress is missed
                try:
                    outcome = await self.store.reply_outcome(message_id)
                except NotFound:
                    return ReplyOutcome(message_id=message_id, state="introuvable",
                                        reply=None, reply_id=None)
                if outcome.reply is not None or outcome.state != "en_attente":
                    break
                left = deadline - loop.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), min(left, self.poll_interval_s))
        finally:
            waiters.discard(progress)
            if not waiters:
                self._waiters.pop(message_id, None)
        return ReplyOutcome(message_id=outcome.message_id, state=outcome.state,
                            reply=outcome.reply, reply_id=outcome.reply_id,
                            notices=outcome.notices)
