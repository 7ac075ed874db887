"""Who a request at the local model's gate is, and who yields to whom (llm/gate.py).

Why apart: the gate's scheduling (llm/gate.py, `LocalGate`) and the wait estimate
(llm/wait_estimate.py) both read these — the priorities, a turn's ticket, the one
preemption rule `yields_to` and how many times a person's request yields — and the
context variables the worker lanes and the extractor set around their calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from llm.errors import LLMError


class Priority(IntEnum):
    INNER_LIVE = 0
    CLIENT_LIVE = 1
    EMAIL = 2
    BACKGROUND = 3

    @property
    def person(self) -> bool:
        """A person is waiting for this request."""
        return self is not Priority.BACKGROUND


ON_PARK: ContextVar[Callable[[bool], None] | None] = ContextVar("axi_gate_on_park",
                                                                default=None)
"""Set by whoever runs a person's request (the worker lane, bot/pipeline.py): called with
True when that request starts waiting for its turn and False when it stops. A lane parked
here holds nothing but its message, so the pipeline lets another lane claim the next
message meanwhile (else Ludo's message waits for a lane behind clients who wait for the
model)."""


HOT: ContextVar[bool] = ContextVar("axi_gate_hot", default=False)
"""Set by a background worker around work whose prompt prefix the server holds now (the
extractor, bot/extractor.py): its background turn does not wait for the quiet period,
only for nobody to be waiting or answered."""


class Preempted(LLMError):
    """A request gave the local model up to someone who goes first (`yields_to`): the work
    is not done and not failed; background work stays queued and runs again later, a
    person's request is asked again by the router."""

    reason = "preempted"


class BackgroundTooLong(LLMError):
    """A background request ran past `background_max_s`: a failure of that item (counted,
    retried later with a backoff), not a preemption — else it would come back at once,
    for ever, ahead of everything queued behind it."""

    reason = "background_too_long"


@dataclass(eq=False)
class Ticket:
    """One turn at the local model, waiting or held."""

    priority: Priority
    seq: int
    asked_at: float
    granted: asyncio.Future[None]
    granted_at: float | None = None
    task: asyncio.Task[Any] | None = None  # a background call, cancelled if preempted
    preempted: str | None = None
    cost_s: float | None = None  # expected model time (llm/wait_estimate.py), if known
    read_s: float | None = None  # ... of it, reading its prompt
    hot: bool = False  # background work that need not wait for quiet (HOT)
    yielded: int = 0  # times this request (its `seq`) was preempted already
    watched: bool = False  # its first token was shown to a person: never preempted now
    reading: bool = False  # a stream asked: the model evaluates its prompt (until_watched)
    writing: bool = False  # its first token came: the model is writing its reply

    @property
    def waited_s(self) -> float:
        return (self.granted_at or self.asked_at) - self.asked_at


MAX_YIELDS = {Priority.CLIENT_LIVE: 1, Priority.EMAIL: 2}
"""How many times a person's request gives its turn up (asked again at its place each
time): a client who yielded once, an email twice, keep the model when their turn comes
back, so the inner circle's load cannot push them back for ever."""


def yields_to(held: Ticket, asking: Priority | None) -> bool:
    """THE preemption rule: whether `held` gives the model up to a request of `asking`
    (None: a person just wrote, no request yet). Background work yields to any person;
    an email reply, or a client's live reply nobody has seen a word of, to the inner
    circle in a live chat. What a person is reading is never cut."""
    if held.preempted or held.watched:
        return False
    if held.priority is Priority.BACKGROUND:
        return True
    if held.yielded >= MAX_YIELDS.get(held.priority, 0):
        return False  # it gave its turn up enough: its person has waited long enough
    return asking is Priority.INNER_LIVE and held.priority in (Priority.CLIENT_LIVE,
                                                               Priority.EMAIL)
