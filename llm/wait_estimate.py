"""How long would a person wait for the local model's first token? Pure arithmetic.

From the measured rates (llm/ollama_timings.py: the server's own durations) and the gate's
queue (llm/gate.py): every turn that goes before this one costs its prompt evaluation and
a typical reply, less what a held one has already used; background work does not count (a
person preempts it); then this request's own prompt, less what the server's cache likely
holds (the common prefix with the last prompt the local model read: one conversation
after another on one slot). The router compares the result with `AXI_LOCAL_MAX_WAIT`.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llm.gate import Priority, Ticket
from llm.tokens import estimate_message
from llm.types import ChatMessage

TYPICAL_REPLY_TOKENS = 150
"""A reply's length when it is not known yet (Axi's replies are short; num_predict is a
ceiling, not an expectation)."""


@dataclass(frozen=True)
class Rates:
    prompt_tps: float
    generation_tps: float


def measured(rates: object) -> Rates | None:
    """Rates from the local client's meter (llm/ollama_timings.MeasuredRates), or None
    until both have been measured."""
    prompt = getattr(rates, "prompt_tps", None)
    generation = getattr(rates, "generation_tps", None)
    if not prompt or not generation:
        return None
    return Rates(float(prompt), float(generation))


def cached_guess(prompt: Sequence[ChatMessage], last: Sequence[ChatMessage]) -> int:
    """Tokens of `prompt` the server likely still holds: the messages it shares, from the
    start, with the last prompt the local model read."""
    shared = 0
    for new, old in zip(prompt, last, strict=False):
        if new != old:
            break
        shared += estimate_message({"role": new.role, "content": new.content})
    return shared


def cached_guess_any(prompt: Sequence[ChatMessage],
                     recent: Iterable[Sequence[ChatMessage]]) -> int:
    """`cached_guess` against the best of the prompts the server's caches likely hold."""
    return max((cached_guess(prompt, last) for last in recent), default=0)


def read_cost_s(prompt_tokens: int, cached: int, rates: Rates) -> float:
    """Reading a request's prompt: its uncached part."""
    return max(0, prompt_tokens - cached) / rates.prompt_tps


def request_cost_s(prompt_tokens: int, cached: int, rates: Rates,
                   reply_tokens: int = TYPICAL_REPLY_TOKENS) -> float:
    """A whole request: its uncached prompt, then its reply."""
    return read_cost_s(prompt_tokens, cached, rates) + reply_tokens / rates.generation_tps


def request_costs(prompt_tokens: int, cached: int, rates: Rates
                  ) -> dict[str, float | None]:
    """The gate's estimates of a request (llm/gate.py): its whole time, its prompt's read."""
    return {"cost_s": request_cost_s(prompt_tokens, cached, rates),
            "read_s": read_cost_s(prompt_tokens, cached, rates)}


def expected_wait_s(ahead: Sequence[Ticket], *, own_prompt_tokens: int, own_cached: int,
                    rates: Rates, now: float, slots: int = 1) -> float:
    """Seconds until this request's first token: what goes before it, then its prompt.

    With `slots` requests at once (AXI_LOCAL_SLOTS), those ahead are served `slots` at a
    time, each by the first slot that frees (held ones first, with what they still
    cost); this request starts when a slot frees for it."""
    free_at = [0.0] * max(slots, 1)  # when each slot is free, from now
    held = [t for t in ahead if t.granted_at is not None]
    waiting = [t for t in ahead if t.granted_at is None]
    for ticket in [*held, *waiting]:
        if ticket.priority is Priority.BACKGROUND:
            continue  # preempted as soon as a person asks
        cost = ticket.cost_s if ticket.cost_s is not None else request_cost_s(0, 0, rates)
        if ticket.granted_at is not None:
            cost -= now - ticket.granted_at
        heapq.heappush(free_at, heapq.heappop(free_at) + max(0.0, cost))  # the first free
    return min(free_at) + max(0, own_prompt_tokens - own_cached) / rates.prompt_tps
