"""One CPU, one model: who gets the local model next.

Ollama on a CPU runs one request at a time per slot and keeps the cache of one prompt per
slot, so the order in which requests reach it decides whether Ludo waits 2 seconds or 40.
The gate sits in front of the local model (the router takes a turn for every local
attempt) and serves, by priority then by arrival:

1. the inner circle in a live chat (Telegram, web, console),
2. clients in a live chat,
3. email replies,
4. background work (fact extraction, summaries, embeddings).

Background work starts only when no person is waiting or being answered and the
conversations have been quiet for `quiet_s` — except work whose prompt the server holds
right now (`HOT`: a turn's extraction as a continuation of its prompt, the next turn's
prefix prepared): it starts as soon as nobody waits, since it costs a few seconds now and
far more once other conversations took its cache. With more than one slot (AXI_LOCAL_SLOTS
≥ 2), hot work may also take a free slot while replies are being written (every person
held has had the first token of their reply, `Ticket.writing`): the server decodes the
slots of one model in one batch a step (tests/fakes/cpu_model.step_rates), so a short
continuation beside a reply costs that reply a pause of the continuation's own prompt
evaluation (a few seconds), not a turn of the model. All of it is preemptible and bounded: a
person writing (`note_person`, called when any message is accepted) or asking for the model
(even with a slot free: its prompt would share the CPU) cancels the background request in
flight, which raises `Preempted` in its caller (who leaves the item queued in the database:
nothing is lost), and no background request runs longer than `background_max_s`. So a
person's request never waits behind more than the cancellation of one background request.
With more than one slot, the inner circle's prompt is also read alone: while it is being
evaluated (a held stream before its first token, `Ticket.reading`) only the inner circle is
granted a slot, and asking with a slot free, it takes the model back from a client's or an
email's reply not shown yet (`yields_to`) as it would with none free. When the server has
slots beyond `slots` (`spare`: AXI_LOCAL_CACHES − AXI_LOCAL_SLOTS) and every request held
is writing its reply, the inner circle takes one more rather than wait for a reply shown
(its own other conversation's, or a client's) to end; nobody else does.

Preemption is one rule, `yields_to`: background work yields to any person; an email reply,
and a client's live reply whose first token nobody has seen yet (`Ticket.watched`), yield
to the inner circle in a live chat. The yielding call is cancelled and raises `Preempted`:
the router asks again for a person's request, at the head of its priority (llm/router.py),
so it is still answered, once; background work stays queued. Closing the HTTP request
stops Ollama's generation, not the read of a prompt: its runner reads a prompt to its end
even when the client has gone (the prompt stays cached), so after cutting one during its
read no background work starts until that read would end (`_drain`, from `read_s`), and
background work runs one request at a time (two prompts read at once share the compute,
the second slot is for people). A reply
being shown is never preempted, so Ludo may still wait behind a client's reply streaming
or one of his own. The inner-circle reserve (`reserve_s`,
AXI_LOCAL_RESERVE_S; 0 = off) keeps the model for the inner circle while one of them is
active: the gate records when an inner-circle request last asked for or gave back the model
(`reserved_s` says how long the reserve still runs) and, meanwhile, leaves email requests
waiting (never failed: they run when the reserve lapses, before background work). The
router decides what a client's live request does meanwhile (llm/router.py: the fallback
when it may use it, else its turn here as usual).

Pure asyncio, no I/O: the clock is injectable.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from llm.gate_rules import (
    HOT,
    ON_PARK,
    BackgroundTooLong,
    Preempted,
    Priority,
    Ticket,
    yields_to,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class GateStats:
    granted: dict[str, int] = field(default_factory=dict)
    preempted: int = 0


class LocalGate:
    def __init__(self, *, slots: int = 1, quiet_s: float = 30.0,
                 background_max_s: float = 120.0, reserve_s: float = 0.0,
                 spare: int = 0, clock: Callable[[], float] = time.monotonic):
        if slots < 1:
            raise ValueError("the local model has at least one slot")
        if reserve_s < 0:
            raise ValueError("the inner-circle reserve is 0 (off) or a positive duration")
        self.slots = slots
        self.spare = max(0, min(spare, 1))
        """Server slots beyond `slots` (AXI_LOCAL_CACHES − AXI_LOCAL_SLOTS, one used): the
        inner circle may take one when every held request is writing its reply."""
        self.quiet_s = quiet_s
        self.background_max_s = background_max_s
        self.reserve_s = reserve_s
        self._clock = clock
        self._seq = itertools.count()
        self._waiting: list[tuple[int, int, Ticket]] = []
        self._held: set[Ticket] = set()
        self._last_person = float("-inf")
        self._last_inner = float("-inf")  # an inner-circle request asked or gave back
        self._timer: asyncio.TimerHandle | None = None
        self._reserve_timer: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()  # a turn was given back: maybe quiet now
        self._yielded: dict[int, int] = {}  # seq → times a person's request yielded
        self._draining: dict[int, float] = {}  # seq → when its prompt cut while read ends
        self.stats = GateStats()

    # ------------------------------------------------------------------ people
    def note_person(self) -> None:
        """A person wrote (a message was accepted) or is being answered: background work
        waits for the conversations to be quiet again, and yields the model now."""
        self._last_person = self._clock()
        self._preempt("a person wrote", None)

    @property
    def people_waiting(self) -> int:
        """People waiting for a turn they may get now (an email parked by the reserve is
        not one: background work may use the model meanwhile, and yields to it later)."""
        return sum(1 for _, _, t in self._waiting if t.priority.person and not self._parked(t))

    def reserved_s(self) -> float:
        """Seconds the inner-circle reserve still runs (0: off, or nobody of the inner
        circle asked for the local model within the last `reserve_s` seconds)."""
        if self.reserve_s <= 0:
            return 0.0
        if self._held_by(Priority.INNER_LIVE) or any(
                t.priority is Priority.INNER_LIVE for _, _, t in self._waiting):
            return self.reserve_s  # asking or being answered: it runs from the end
        return max(0.0, self._last_inner + self.reserve_s - self._clock())

    def snapshot(self) -> dict[str, Any]:
        """For /health and the wait estimate: who holds the model, who waits."""
        return {
            "slots": self.slots,
            "reserve_s": self.reserve_s,  # AXI_LOCAL_RESERVE_S (0: off)
            "reserved_s": round(self.reserved_s(), 1),  # how long it still runs
            "held": sorted(t.priority.name.lower() for t in self._held),
            "waiting": sorted(t.priority.name.lower() for _, _, t in self._waiting),
            "preempted": self.stats.preempted,
        }

    async def until_quiet(self, poll_s: float = 1.0, *, hot: bool = False) -> None:
        """Wait until background work may start (no person waiting or answered, quiet
        for `quiet_s` unless `hot`): a background worker calls this before claiming its
        next item, so it holds nothing while people talk."""
        while not self._background_may_start(hot):
            remaining = self.quiet_s - self._quiet_for()
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(),
                                       max(0.01, min(poll_s, remaining)) if remaining > 0
                                       else poll_s)

    def ahead_of(self, priority: Priority) -> list[Ticket]:
        """The turns that would go before a new request of `priority` (held ones first;
        a held one that would yield to it does not)."""
        return [*(t for t in self._held if not yields_to(t, priority)),
                *sorted((t for p, _, t in self._waiting if p <= priority),
                        key=lambda t: (t.priority, t.seq))]

    # ------------------------------------------------------------------ turns
    def now(self) -> float:
        return self._clock()

    def place(self) -> int:
        """A place in the queue, to ask again with after a preemption (`acquire(seq=)`)."""
        return next(self._seq)

    async def acquire(self, priority: Priority, *, cost_s: float | None = None,
                      read_s: float | None = None, seq: int | None = None,
                      stream: bool = False) -> Ticket:
        """A turn; `seq`: the place in its priority of a request asked again after it was
        preempted (it keeps the place it had, ahead of those who asked after it);
        `stream`: its prompt is read from the grant until its first token (`until_watched`),
        so nobody is granted beside the inner circle's in between."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(priority, next(self._seq) if seq is None else seq, self._clock(),
                        loop.create_future(), cost_s=cost_s, read_s=read_s,
                        hot=priority is Priority.BACKGROUND and HOT.get(),
                        yielded=self._yielded.get(seq, 0) if seq is not None else 0,
                        reading=stream)
        if priority.person:
            self._last_person = ticket.asked_at
        if priority is Priority.INNER_LIVE:
            self._last_inner = ticket.asked_at
        heapq.heappush(self._waiting, (int(priority), ticket.seq, ticket))
        if priority.person and not self._parked(ticket):
            # with no slot free, whoever `yields_to` this person; with one free, those
            # whose prompt would share the CPU with this person's: background work, and
            # for the inner circle a client's or an email's reply not shown yet
            free = self._free() and priority is not Priority.INNER_LIVE
            self._preempt("a person is waiting", Priority.EMAIL if free else priority)
        self._admit()
        on_park = ON_PARK.get() if priority.person and not ticket.granted.done() else None
        if on_park is not None:
            on_park(True)
        try:
            await ticket.granted
        except BaseException:
            if ticket.granted.done() and not ticket.granted.cancelled():
                self.release(ticket)  # granted as we were cancelled: give it back
            else:
                self._waiting = [w for w in self._waiting if w[2] is not ticket]
                heapq.heapify(self._waiting)
            raise
        finally:
            if on_park is not None:
                on_park(False)
        return ticket

    def forget(self, seq: int) -> None:
        """The request of this place will not be asked again (answered, sent to the
        fallback, or given up): its count of yields goes."""
        self._yielded.pop(seq, None)

    def release(self, ticket: Ticket) -> None:
        if not ticket.preempted:
            self._yielded.pop(ticket.seq, None)  # done: it will not be asked again
        if ticket in self._held:
            self._held.discard(ticket)
            if ticket.priority.person:
                self._last_person = self._clock()
            if ticket.priority is Priority.INNER_LIVE:
                self._last_inner = self._clock()
        self._changed.set()
        self._admit()

    @asynccontextmanager
    async def turn(self, priority: Priority) -> AsyncIterator[Ticket]:
        """Hold the local model for the block (a stream: until it is read to the end).
        Not preemptible: background work uses `run`."""
        ticket = await self.acquire(priority)
        try:
            yield ticket
        finally:
            self.release(ticket)

    async def run(self, priority: Priority, call: Callable[[], Awaitable[T]], *,
                  cost_s: float | None = None, read_s: float | None = None,
                  seq: int | None = None) -> T:
        """`call()` during a turn. Raises Preempted when the turn yields (`yields_to`)
        before `call()` returned; background work is also bounded: BackgroundTooLong past
        `background_max_s`. The inner circle's own requests are never preempted."""
        ticket = await self.acquire(priority, cost_s=cost_s, read_s=read_s, seq=seq)
        try:
            if priority is Priority.INNER_LIVE:
                return await call()
            if ticket.preempted:  # someone came between the grant and now
                raise Preempted(ticket.preempted)
            task: asyncio.Task[T] = asyncio.ensure_future(call())
            ticket.task = task
            bound = self.background_max_s if priority is Priority.BACKGROUND else None
            try:
                return await asyncio.wait_for(asyncio.shield(task), bound)
            except TimeoutError:
                task.cancel()
                raise BackgroundTooLong(
                    f"over {self.background_max_s:g} s of background model work") from None
            except asyncio.CancelledError:
                if _taken_back(ticket):
                    raise Preempted(ticket.preempted) from None
                task.cancel()
                raise
            finally:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        finally:
            self.release(ticket)

    async def until_watched(self, ticket: Ticket, first: Callable[[], Awaitable[T]]) -> T:
        """`first()` — a held stream's first chunk — during which the turn may yield
        (Preempted: the caller closes the stream, so Ollama stops); once it came, a person
        reads it and the turn is never preempted again."""
        ticket.reading = True
        if ticket.priority is Priority.INNER_LIVE:
            ticket.watched = True
            result = await first()
            self._writing(ticket)
            return result
        if ticket.preempted:
            raise Preempted(ticket.preempted)
        task: asyncio.Task[T] = asyncio.ensure_future(first())
        ticket.task = task
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if _taken_back(ticket):
                raise Preempted(ticket.preempted) from None
            task.cancel()
            raise
        finally:
            ticket.task = None
        ticket.watched = True
        self._writing(ticket)
        return result

    def _writing(self, ticket: Ticket) -> None:
        """A held stream's first token came: others may now start beside it (hot background
        work; after an inner-circle prompt, anyone)."""
        ticket.writing = True
        if (self.slots > 1 or self.spare) and ticket in self._held:
            self._changed.set()
            self._admit()

    # ------------------------------------------------------------------ inside
    def _free(self) -> int:
        return max(0, self.slots - len(self._held))

    def _spare_for_inner(self) -> bool:
        """A slot beyond `slots` for the inner circle, when every request held is writing
        its reply: the server decodes its slots in one batch a step, so a third stream
        costs the others a pause of his prompt's read, not a turn of the model — rather
        than Ludo waiting for a reply of his own other conversation or a client's to end
        (tests/fakes/cpu_model.step_rates)."""
        return (self.spare > 0 and 0 < len(self._held) < self.slots + self.spare
                and all(t.writing for t in self._held))

    def _quiet_for(self) -> float:
        return self._clock() - self._last_person

    def _held_by(self, priority: Priority) -> bool:
        return any(t.priority is priority for t in self._held)

    def _parked(self, ticket: Ticket) -> bool:
        """An email request waits while the inner-circle reserve runs."""
        return ticket.priority is Priority.EMAIL and self.reserved_s() > 0

    def _admit(self) -> None:
        if any(self._parked(t) for _, _, t in self._waiting):
            self._wake_when_reserve_lapses()  # even with no free slot: background yields
        while self._free() > 0 or self._spare_for_inner():
            entry = self._next()
            if entry is None:
                return
            if self._free() <= 0 and entry[2].priority is not Priority.INNER_LIVE:
                return  # the spare slot is the inner circle's only
            self._waiting.remove(entry)
            heapq.heapify(self._waiting)
            ticket = entry[2]
            ticket.granted_at = self._clock()
            self._held.add(ticket)
            name = ticket.priority.name.lower()
            self.stats.granted[name] = self.stats.granted.get(name, 0) + 1
            ticket.granted.set_result(None)

    def _next(self) -> tuple[int, int, Ticket] | None:
        """The waiting turn to grant next, by priority then arrival (None: none may go)."""
        self._waiting = [w for w in self._waiting if not w[2].granted.done()]  # cancelled
        heapq.heapify(self._waiting)
        inner_reading = any(t.priority is Priority.INNER_LIVE and t.reading and not t.writing
                            for t in self._held)
        for entry in sorted(self._waiting, key=lambda w: (w[0], w[1])):
            ticket = entry[2]
            if self._parked(ticket) or self._draining.get(ticket.seq, 0.0) > self._clock():
                continue  # parked by the reserve, or asked again while its cut read goes on
            if inner_reading and ticket.priority is not Priority.INNER_LIVE:
                return None  # the inner circle's prompt first, alone (_writing admits)
            if (ticket.priority == Priority.BACKGROUND
                    and not self._background_may_start(ticket.hot)):
                self._wake_when_quiet()
                return None
            return entry
        return None

    def _wake_when_reserve_lapses(self) -> None:
        if self._reserve_timer is not None and not self._reserve_timer.cancelled():
            self._reserve_timer.cancel()
        self._reserve_timer = asyncio.get_running_loop().call_later(
            self.reserved_s() + 0.001, self._reserve_lapsed)

    def _reserve_lapsed(self) -> None:
        """An email parked by the reserve may go: background work in its way yields."""
        if self.reserved_s() <= 0 and self._free() == 0 and any(
                t.priority is Priority.EMAIL for _, _, t in self._waiting):
            self._preempt("an email waits", Priority.EMAIL)
        self._admit()

    def _background_may_start(self, hot: bool = False) -> bool:
        if self.people_waiting or self._drains():
            return False
        if any(t.priority is Priority.BACKGROUND for t in self._held):
            return False  # one at a time: two prompts read at once share the compute
        persons = [t for t in self._held if t.priority.person]
        if persons:  # hot work may take a free slot beside replies being written
            return hot and self._free() > 0 and all(t.writing for t in persons)
        return hot or self._quiet_for() >= self.quiet_s

    def _wake_when_quiet(self) -> None:
        if self._timer is not None and not self._timer.cancelled():
            self._timer.cancel()
        delay = max(0.0, self.quiet_s - self._quiet_for())
        if delay == 0.0:
            return  # a person holds or waits: their release admits again
        self._timer = asyncio.get_running_loop().call_later(delay + 0.001, self._admit)

    def _preempt(self, why: str, asking: Priority | None) -> None:
        for ticket in list(self._held):
            if not yields_to(ticket, asking):
                continue
            ticket.preempted = why  # not started yet: run() sees it before calling
            self.stats.preempted += 1
            if ticket.priority.person:
                self._yielded[ticket.seq] = ticket.yielded + 1
            log.info("%s model work yields: %s", ticket.priority.name.lower(), why)
            if ticket.task is not None:
                if not ticket.task.done() and not ticket.writing:
                    self._drain(ticket)
                ticket.task.cancel()

    def _drain(self, ticket: Ticket) -> None:
        """A call cut while the server may still read its prompt (Ollama's runner drops
        a sequence only when its first token finds nobody: runner/ollamarunner/runner.go,
        `completion`): neither its own retry nor background work starts until the read
        would end (they would read again beside it, on another slot of the server); the
        retry then finds it cached. Other people do not wait for it."""
        if ticket.read_s is None or ticket.granted_at is None:
            return
        now = self._clock()
        end = ticket.granted_at + ticket.read_s
        if end > now:
            self._draining[ticket.seq] = end
            asyncio.get_running_loop().call_later(end - now + 0.001, self._admit)

    def _drains(self) -> int:
        now = self._clock()
        self._draining = {seq: end for seq, end in self._draining.items() if end > now}
        return len(self._draining)


def _taken_back(ticket: Ticket) -> bool:
    """A held turn's call was cancelled by the gate taking the turn back (preempted), not
    by whoever awaits it (then the cancellation goes on)."""
    current = asyncio.current_task()
    return bool(ticket.preempted) and not (current is not None and current.cancelling())
