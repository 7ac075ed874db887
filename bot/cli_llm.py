"""The local model's measured figures in `axi llm status`: rendering only.

Why apart from `bot/cli_chat.py`: the figures (computed in `memory/llm_status.py` from the
call log) need their own table and JSON shape, and the runbook ("Lire `axi llm status`")
explains them column by column, so their wording lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bot.cli_support import out, print_table
from memory.llm_status import ModelFigures, WindowFigures

NO_DATA = "no data"


def figures_json(windows: list[WindowFigures]) -> dict[str, Any]:
    """{"1": {...}, "7": {...}, "30": {...}}: per window, the counts and each local
    model's figures (rates in tokens/s, shares 0..1, waits in ms; null: not measured)."""
    return {str(w.days): {"days": w.days, "calls": w.calls, "local_calls": w.local_calls,
                          "local_share": w.local_share,
                          "models": [asdict(m) for m in w.models]}
            for w in windows}


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _share(figures: ModelFigures) -> str:
    if figures.cache_share is None:
        return "—"
    estimated = "*" if figures.cache_estimated_calls else ""
    return f"{100 * figures.cache_share:.0f} %{estimated}"


def _pair(p50: float | None, p95: float | None) -> str:
    if p50 is None or p95 is None:
        return "—"
    return f"{p50 / 1000:.1f} / {p95 / 1000:.1f}"


FIGURES: tuple[tuple[str, Callable[[ModelFigures], str]], ...] = (
    ("calls", lambda f: str(f.calls)),
    ("prompt eval (tokens/s)", lambda f: _rate(f.prompt_tps)),
    ("generation (tokens/s)", lambda f: _rate(f.generation_tps)),
    ("prompt served from cache", _share),
    ("queue wait p50 / p95 (s)", lambda f: _pair(f.queue_p50_ms, f.queue_p95_ms)),
    ("server wait p50 / p95 (s)", lambda f: _pair(f.server_wait_p50_ms, f.server_wait_p95_ms)),
)


def print_figures(windows: list[WindowFigures]) -> None:
    """One table per local model (figures down, windows across, so it fits 80 columns),
    and a note when a cache share is an estimate."""
    if not any(w.has_data for w in windows):
        out.print("Local model, measured: no data (no local call recorded in the last "
                  f"{max((w.days for w in windows), default=0)} days)", highlight=False)
        return
    names: list[str] = []
    for window in sorted(windows, key=lambda w: -w.days):  # the widest window first
        names += [m.model for m in window.models if m.model not in names]
    for name in names:
        found = [next((m for m in w.models if m.model == name), None) for w in windows]
        rows = [(label, *(show(f) if f is not None else "0" if label == "calls" else NO_DATA
                          for f in found))
                for label, show in FIGURES]
        print_table(f"Local model {name}, measured by Ollama",
                    ["", *(f"{w.days} d" for w in windows)], rows)
    estimated = sum(m.cache_estimated_calls for m in windows[-1].models)
    if estimated:
        out.print(f"* estimated for {estimated} call(s): the server does not report "
                  "prompt_eval_cached_count (see the runbook)", highlight=False)
