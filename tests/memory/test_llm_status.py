"""The local model's measured figures (`axi llm status`) from the call log: the pure
computation on chosen rows, then the same through PostgreSQL with its time windows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import text

from memory.llm_status import DAY_S, TimedCall, local_status, percentile, window_figures
from memory.models import LLMCall
from memory.store import MemoryStore

MISTRAL = "mistral:7b-instruct-q4_K_M"
QWEN = "qwen2.5:3b-instruct"


def local(age_s: float = 60.0, model: str = MISTRAL, **values: Any) -> TimedCall:
    return TimedCall(age_s=age_s, provider="ollama", model=model, ok=True, **values)


def test_percentile_interpolates_like_postgresql() -> None:
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([0.0, 10.0], 0.5) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.95) == pytest.approx(95.05)


def test_figures_of_one_window() -> None:
    calls = [
        # a cold turn: 600 tokens evaluated in 10 s, 90 generated in 10 s
        local(evaluated_tokens=600, cached_tokens=0, cached_estimated=False, prompt_ms=10_000,
              tokens_out=90, generation_ms=10_000, load_ms=100, total_ms=21_100, queue_ms=0),
        # the next turn: 3,000 from the cache, 60 evaluated in 1 s; it waited 4 s in Axi
        local(evaluated_tokens=60, cached_tokens=3000, cached_estimated=True, prompt_ms=1000,
              tokens_out=45, generation_ms=5000, load_ms=50, total_ms=9050, queue_ms=4000),
        # a failure: no timings, but it did queue
        TimedCall(age_s=60, provider="ollama", model=MISTRAL, ok=False, queue_ms=2000),
        local(model=QWEN, evaluated_tokens=200, cached_tokens=0, prompt_ms=1000,
              tokens_out=20, generation_ms=1000),
        TimedCall(age_s=60, provider="anthropic", model="claude-sonnet-4-6", ok=True,
                  tokens_out=50),
        local(age_s=2 * DAY_S, evaluated_tokens=1, prompt_ms=1000),  # outside the window
    ]
    day = window_figures(1, calls)
    assert (day.calls, day.local_calls) == (5, 4)
    assert day.local_share == 0.75  # 4 answers, 3 of them local
    mistral, qwen = day.models
    assert (mistral.model, mistral.calls, mistral.timed_calls) == (MISTRAL, 3, 2)
    assert mistral.prompt_tps == pytest.approx(660 / 11)
    assert mistral.generation_tps == pytest.approx(135 / 15)
    assert mistral.cache_share == pytest.approx(3000 / 3660)
    assert mistral.cache_estimated_calls == 1
    assert (mistral.queue_p50_ms, mistral.queue_p95_ms) == (2000, pytest.approx(3800))
    assert (mistral.server_wait_p50_ms, mistral.server_wait_p95_ms) == (
        2000, pytest.approx(2900))  # 1,000 and 3,000 ms waiting in Ollama
    assert (qwen.prompt_tps, qwen.generation_tps, qwen.cache_share) == (200, 20, 0)
    assert qwen.queue_p50_ms is None and qwen.server_wait_p50_ms is None


def test_no_data() -> None:
    windows = local_status([])
    assert [w.days for w in windows] == [1, 7, 30]
    assert all(not w.has_data and w.models == () and w.local_share is None for w in windows)
    # a call whose prompt took no measurable time rates nothing
    [figures] = window_figures(1, [local(evaluated_tokens=5, prompt_ms=0)]).models
    assert figures.prompt_tps is None and figures.generation_tps is None
    assert figures.cache_share is None


async def test_windows_from_the_call_log(store: MemoryStore) -> None:
    recent = await store.record_llm_call(
        provider="ollama", model=MISTRAL, task="conversation", tokens_in=3060, tokens_out=45,
        cached_tokens=3000, cached_estimated=False, evaluated_tokens=60, prompt_ms=1000,
        generation_ms=5000, load_ms=50, total_ms=9050, queue_ms=1500)
    older = await store.record_llm_call(
        provider="ollama", model=MISTRAL, task="extraction", tokens_in=600, tokens_out=90,
        cached_tokens=0, cached_estimated=False, evaluated_tokens=600, prompt_ms=10_000,
        generation_ms=10_000, load_ms=100, total_ms=20_100, queue_ms=0)
    await store.record_llm_call(provider="anthropic", model="claude-sonnet-4-6",
                                task="conversation", tokens_in=900, tokens_out=50, cost_eur=0.01)
    async with store.db.sessions.begin() as session:
        await session.execute(text(
            "UPDATE appels_llm SET cree_le = now() - interval '3 days' WHERE id = :id"),
            {"id": older})
        row = (await session.execute(text(
            "SELECT jetons_caches, caches_estimes, jetons_evalues, duree_prompt_ms, "
            "duree_generation_ms, duree_chargement_ms, duree_totale_ms, attente_ms "
            "FROM appels_llm WHERE id = :id"), {"id": recent})).one()
    assert tuple(row) == (3000, False, 60, 1000, 5000, 50, 9050, 1500)
    day, week, month = await store.llm_local_status()
    assert (day.calls, day.local_calls, day.local_share) == (2, 1, 0.5)
    assert day.models[0].prompt_tps == 60 and day.models[0].cache_share == pytest.approx(
        3000 / 3060)
    assert (week.calls, week.local_calls) == (3, 2)
    assert week.models[0].prompt_tps == pytest.approx(660 / 11)
    assert week.models[0].queue_p95_ms == pytest.approx(1425)
    assert month == replace(week, days=30)


async def test_the_model_mirrors_the_table(store: MemoryStore) -> None:
    async with store.db.engine.connect() as conn:
        columns = set((await conn.execute(text(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = 'appels_llm'"))).scalars())
    assert columns == set(LLMCall.__table__.columns.keys())
