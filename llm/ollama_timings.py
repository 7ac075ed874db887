"""Reading what Ollama says a call cost: tokens, cache hits and durations, from every
response (issue 9, "know the real server").

Why a module of its own: the numbers need two pieces of care the chat client should not
carry inline.

1. The `ollama` client (0.6.x) parses each response into a pydantic model that drops the
   fields it does not declare, and `prompt_eval_cached_count` (the part of the prompt the
   server took from its KV cache, sent by current Ollama) is one of them. `TimingsClient`
   is the library's `AsyncClient` whose chat responses keep unknown fields
   (`model_extra`): the raw final chunk's fields, read without a second parser. It
   overrides the library's private `_request` only to swap the response class; if a
   future library stops calling it, nothing breaks: the cached count is then estimated
   (below), and `tests/llm/test_ollama_timings.py` says so.

2. The meaning of `prompt_eval_count` changed: Ollama since mid-2024 counts the WHOLE
   prompt, cached part included; Ollama 0.1.x counted only the evaluated tokens (and left
   it out when everything was cached). So the evaluated tokens are `count - cached` when
   the server reports the cached count (a reported count larger than the prompt count can
   only come from a server counting evaluated tokens: then `count` is what was evaluated).

   When the server reports no cached count, it is estimated: the tokens evaluated are the
   prompt duration times the measured prompt rate, the rest of the prompt came from the
   cache. The rate is measured by `RateMeter`: from calls whose cache is known, the real
   rate; otherwise the LOWEST apparent rate (count / duration) of recent calls of a
   reasonable size. The apparent rate of a call is at least the real rate (the cached part
   costs no time), and equals it for a call that found nothing in the cache (the first
   turn of a conversation, a reload), so the lowest one is the real rate as soon as one
   such call was seen; before that the rate is overestimated, which UNDERestimates the
   cache (the estimate errs on the side of "the cache did not help"). On an Ollama that
   counts only evaluated tokens the estimate finds ~0 cached tokens: there, the cache
   share cannot be known (the runbook says so).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import ollama
from pydantic import ConfigDict

from llm.types import ServerTimings

CACHED_FIELD = "prompt_eval_cached_count"
# An apparent rate is trusted only from a call big and long enough that fixed overheads
# (tokenising, scheduling) do not drag it below the real rate.
MIN_SAMPLE_TOKENS = 32
MIN_SAMPLE_S = 0.05
WINDOW = 64  # recent calls the meter remembers


class _ChatResponse(ollama.ChatResponse):
    """The library's ChatResponse, keeping the fields it does not declare."""

    model_config = ConfigDict(extra="allow")


class _GenerateResponse(ollama.GenerateResponse):
    model_config = ConfigDict(extra="allow")


_KEEPING = {ollama.ChatResponse: _ChatResponse, ollama.GenerateResponse: _GenerateResponse}


class TimingsClient(ollama.AsyncClient):
    """`ollama.AsyncClient` whose chat and generate responses keep every field the server
    sent (`response.model_extra`), among them `prompt_eval_cached_count`."""

    async def _request(self, cls: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return await super()._request(_KEEPING.get(cls, cls), *args, **kwargs)


def extra_field(part: Any, name: str) -> Any:
    """A field the library does not declare, if the response kept it."""
    extra = getattr(part, "model_extra", None) or {}
    return extra.get(name)


def _ms(ns: int | None) -> int | None:
    return None if ns is None else round(ns / 1e6)


@dataclass(frozen=True)
class MeasuredRates:
    """The local model's recent speed, tokens per second (None: not measured yet)."""

    prompt_tps: float | None
    generation_tps: float | None


class RateMeter:
    """The prompt-evaluation and generation rates of recent calls, in this process.

    Exact prompt samples (cache known) give the rate as evaluated tokens over duration,
    summed over the window; without any, the lowest apparent rate (see the module's
    docstring). Generation: generated tokens over generation time, summed."""

    def __init__(self, window: int = WINDOW):
        self._exact: deque[tuple[int, float]] = deque(maxlen=window)
        self._apparent: deque[float] = deque(maxlen=window)
        self._generation: deque[tuple[int, float]] = deque(maxlen=window)

    def observe_prompt(self, tokens: int, seconds: float, *, exact: bool) -> None:
        """`tokens` evaluated in `seconds` (exact), or the whole prompt's count (apparent)."""
        if exact:
            if tokens > 0 and seconds > 0:
                self._exact.append((tokens, seconds))
        elif tokens >= MIN_SAMPLE_TOKENS and seconds >= MIN_SAMPLE_S:
            self._apparent.append(tokens / seconds)

    def observe_generation(self, tokens: int, seconds: float) -> None:
        if tokens > 0 and seconds > 0:
            self._generation.append((tokens, seconds))

    @property
    def prompt_tps(self) -> float | None:
        if self._exact:
            return sum(t for t, _ in self._exact) / sum(s for _, s in self._exact)
        return min(self._apparent, default=None)

    @property
    def generation_tps(self) -> float | None:
        if not self._generation:
            return None
        return sum(t for t, _ in self._generation) / sum(s for _, s in self._generation)

    def rates(self) -> MeasuredRates:
        return MeasuredRates(self.prompt_tps, self.generation_tps)


def read_timings(part: Any, meter: RateMeter) -> ServerTimings | None:
    """The timings of an Ollama final chunk (chat or generate), the meter updated with
    them. None when the server sent no timing at all."""
    count = part.prompt_eval_count
    prompt_ns = part.prompt_eval_duration
    if count is None and prompt_ns is None and part.eval_duration is None:
        return None
    count = count or 0
    prompt_s = (prompt_ns or 0) / 1e9
    reported = extra_field(part, CACHED_FIELD)
    cached: int | None
    estimated = False
    if isinstance(reported, int) and reported >= 0:
        cached = reported
        evaluated = count - reported if reported <= count else count
        meter.observe_prompt(evaluated, prompt_s, exact=True)
    else:
        meter.observe_prompt(count, prompt_s, exact=False)
        rate = meter.prompt_tps
        if rate is None or prompt_ns is None:
            cached, evaluated = None, count
        else:
            evaluated = min(count, round(rate * prompt_s))
            cached, estimated = count - evaluated, True
    if part.eval_count is not None and part.eval_duration is not None:
        meter.observe_generation(part.eval_count, part.eval_duration / 1e9)
    return ServerTimings(
        evaluated_tokens=evaluated,
        cached_tokens=cached,
        cached_estimated=estimated,
        prompt_ms=_ms(prompt_ns),
        generation_ms=_ms(part.eval_duration),
        load_ms=_ms(part.load_duration),
        total_ms=_ms(part.total_duration),
    )
