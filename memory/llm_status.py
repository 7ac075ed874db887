"""The local model as measured, from the call log: the figures of `axi llm status`.

Why: the design's numbers (prompt tokens/s, generated tokens/s, how much of each prompt the
KV cache saves, how long a call queues) are assumptions until the real server is measured.
Each local call's row in `appels_llm` carries Ollama's own account (migration 0015); this
module turns the rows of the last days into the figures Anthony reads and compares with
`ollama run --verbose`. Pure (no I/O): the rows come from `LLMCallsMixin.llm_timing_rows`.

Definitions (the runbook explains them in French):
- prompt rate: tokens evaluated / time evaluating the prompt, summed over the calls, so a
  big evaluation weighs more than a small one (as `prompt eval rate` of `--verbose`);
  calls whose prompt took no measurable time are left out (nothing was timed);
- generation rate: tokens generated / generation time, summed (`eval rate`);
- from cache: prompt tokens served from the KV cache / all prompt tokens, over the calls
  whose cached count is known (reported by Ollama, or estimated: `cache_estimated_calls`);
- queue: time waiting in Axi's queue before the call (`attente_ms`); server wait: time on
  the server neither loading nor computing (total - load - prompt - generation), i.e.
  waiting behind other requests inside Ollama; both as p50 / p95 (linear interpolation);
- local share: successful calls answered by the local model / all successful calls.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LOCAL_PROVIDER = "ollama"
WINDOWS_DAYS = (1, 7, 30)
DAY_S = 86_400.0


@dataclass(frozen=True)
class TimedCall:
    """One `appels_llm` row as the figures need it (`age_s`: seconds since the call)."""

    age_s: float
    provider: str
    model: str
    ok: bool
    tokens_out: int = 0
    evaluated_tokens: int | None = None
    cached_tokens: int | None = None
    cached_estimated: bool | None = None
    prompt_ms: int | None = None
    generation_ms: int | None = None
    load_ms: int | None = None
    total_ms: int | None = None
    queue_ms: int | None = None

    @property
    def server_wait_ms(self) -> int | None:
        parts = (self.total_ms, self.load_ms, self.prompt_ms, self.generation_ms)
        if any(p is None for p in parts):
            return None
        total, load, prompt, generation = (p or 0 for p in parts)
        return max(total - load - prompt - generation, 0)


@dataclass(frozen=True)
class ModelFigures:
    """One local model over one window. A rate or share is None when nothing measured it."""

    model: str
    calls: int  # attempts on this model, failed ones included
    timed_calls: int  # of which the server's timings are known
    prompt_tps: float | None
    generation_tps: float | None
    cache_share: float | None
    cache_estimated_calls: int  # calls whose cached count is an estimate
    queue_p50_ms: float | None
    queue_p95_ms: float | None
    server_wait_p50_ms: float | None
    server_wait_p95_ms: float | None


@dataclass(frozen=True)
class WindowFigures:
    """All calls over the last `days` days, and each local model's figures."""

    days: int
    calls: int  # every attempt, both providers
    local_calls: int
    local_share: float | None  # of the successful calls; None when there were none
    models: tuple[ModelFigures, ...]

    @property
    def has_data(self) -> bool:
        return self.local_calls > 0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1) with linear interpolation (PostgreSQL's percentile_cont)."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _ratio(numerator: float, denominator: float, scale: float = 1.0) -> float | None:
    return numerator * scale / denominator if denominator > 0 else None


def model_figures(model: str, calls: Sequence[TimedCall]) -> ModelFigures:
    """The figures of one local model from its calls (see the module's definitions)."""
    prompt_timed = [c for c in calls if c.evaluated_tokens is not None and (c.prompt_ms or 0) > 0]
    generation_timed = [c for c in calls if (c.generation_ms or 0) > 0]
    cache_known = [c for c in calls if c.cached_tokens is not None
                   and c.evaluated_tokens is not None]
    cached = sum(c.cached_tokens or 0 for c in cache_known)
    prompt_total = cached + sum(c.evaluated_tokens or 0 for c in cache_known)
    queues = [float(c.queue_ms) for c in calls if c.queue_ms is not None]
    waits = [float(w) for c in calls if (w := c.server_wait_ms) is not None]
    return ModelFigures(
        model=model,
        calls=len(calls),
        timed_calls=sum(1 for c in calls if c.prompt_ms is not None or c.generation_ms is not None),
        prompt_tps=_ratio(sum(c.evaluated_tokens or 0 for c in prompt_timed),
                          sum(c.prompt_ms or 0 for c in prompt_timed), 1000.0),
        generation_tps=_ratio(sum(c.tokens_out for c in generation_timed),
                              sum(c.generation_ms or 0 for c in generation_timed), 1000.0),
        cache_share=_ratio(cached, prompt_total),
        cache_estimated_calls=sum(1 for c in cache_known if c.cached_estimated),
        queue_p50_ms=percentile(queues, 0.5),
        queue_p95_ms=percentile(queues, 0.95),
        server_wait_p50_ms=percentile(waits, 0.5),
        server_wait_p95_ms=percentile(waits, 0.95),
    )


def window_figures(days: int, calls: Iterable[TimedCall]) -> WindowFigures:
    """The figures of the calls made in the last `days` days."""
    within = [c for c in calls if c.age_s <= days * DAY_S]
    local = [c for c in within if c.provider == LOCAL_PROVIDER]
    answers = [c for c in within if c.ok]
    by_model: dict[str, list[TimedCall]] = {}
    for call in local:
        by_model.setdefault(call.model, []).append(call)
    models = sorted(by_model.items(), key=lambda item: (-len(item[1]), item[0]))
    return WindowFigures(
        days=days,
        calls=len(within),
        local_calls=len(local),
        local_share=_ratio(sum(1 for c in answers if c.provider == LOCAL_PROVIDER),
                           len(answers)),
        models=tuple(model_figures(name, rows) for name, rows in models),
    )


def local_status(calls: Iterable[TimedCall],
                 windows: Sequence[int] = WINDOWS_DAYS) -> list[WindowFigures]:
    """One `WindowFigures` per window (1, 7 and 30 days by default)."""
    rows = list(calls)
    return [window_figures(days, rows) for days in windows]
