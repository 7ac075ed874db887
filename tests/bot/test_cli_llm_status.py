"""`axi llm status` shows the local model as measured (issue 9): a real process on the test
database, the figures from recorded calls, "no data" when there are none, and a real
`axi ask` whose Ollama timings land in the call log."""

from __future__ import annotations

import json

from sqlalchemy import text

from memory.store import MemoryStore
from tests.bot.test_cli_chat import axi
from tests.fakes.ollama_server import FakeOllama

MISTRAL = "mistral:7b-instruct-q4_K_M"


async def test_no_data_then_the_figures(cli_env: dict[str, str], store: MemoryStore,
                                        ollama_server: FakeOllama) -> None:
    empty = axi(cli_env, "llm", "status")
    assert empty.returncode == 0, empty.stderr
    assert "Local model, measured: no data" in empty.stdout

    # a cold turn (600 tokens in 10 s) and a warm one (3,000 cached, 60 evaluated in 1 s,
    # 4 s waiting in Axi's queue, 1 s behind another request in Ollama)
    await store.record_llm_call(
        provider="ollama", model=MISTRAL, task="conversation", tokens_in=600, tokens_out=90,
        cached_tokens=0, cached_estimated=False, evaluated_tokens=600, prompt_ms=10_000,
        generation_ms=10_000, load_ms=100, total_ms=20_100, queue_ms=0)
    await store.record_llm_call(
        provider="ollama", model=MISTRAL, task="conversation", tokens_in=3060, tokens_out=45,
        cached_tokens=3000, cached_estimated=True, evaluated_tokens=60, prompt_ms=1000,
        generation_ms=5000, load_ms=50, total_ms=7050, queue_ms=4000)
    shown = axi(cli_env, "llm", "status")
    assert shown.returncode == 0, shown.stderr
    assert f"Local model {MISTRAL}, measured by Ollama" in shown.stdout

    def row(label: str) -> list[str]:
        line = next(x for x in shown.stdout.splitlines() if label in x)
        return [cell.strip() for cell in line.strip("│ ").split("│")]

    assert row("calls") == ["calls", "2", "2", "2"]
    assert row("prompt eval")[1] == "60.0" and row("generation")[1] == "9.0"
    assert row("from cache")[1] == "82 %*"
    assert row("queue wait")[1] == "2.0 / 3.8" and row("server wait")[1] == "0.5 / 0.9"
    assert "* estimated for 1 call(s)" in shown.stdout

    report = json.loads(axi(cli_env, "llm", "status", "--json").stdout)["local_measured"]
    assert set(report) == {"1", "7", "30"}
    day = report["1"]
    assert (day["calls"], day["local_calls"], day["local_share"]) == (2, 2, 1.0)
    [figures] = day["models"]
    assert figures["model"] == MISTRAL
    assert figures["prompt_tps"] == 60.0 and figures["generation_tps"] == 9.0
    assert figures["cache_share"] == 3000 / 3660 and figures["cache_estimated_calls"] == 1
    assert (figures["queue_p50_ms"], figures["queue_p95_ms"]) == (2000, 3800)


async def test_a_real_call_records_ollama_s_timings(cli_env: dict[str, str], store: MemoryStore,
                                                     ollama_server: FakeOllama) -> None:
    """The assistant's own client reads the timings (FakeOllama: 0.8 s of prompt, 0.6 s of
    generation, no cached count: estimated)."""
    ollama_server.reply = "Bonjour Ludo."
    assert axi(cli_env, "ask", "--no-extract", "Bonjour").returncode == 0
    async with store.db.sessions() as session:
        row = (await session.execute(text(
            "SELECT jetons_entree, jetons_evalues, jetons_caches, caches_estimes, "
            "duree_prompt_ms, duree_generation_ms, duree_chargement_ms, duree_totale_ms, "
            "attente_ms FROM appels_llm"))).one()
    assert (row.duree_prompt_ms, row.duree_generation_ms, row.duree_chargement_ms,
            row.duree_totale_ms) == (800, 600, 20, 1500)
    assert row.caches_estimes is True and row.jetons_caches == 0  # the first call: cold
    assert row.jetons_evalues == row.jetons_entree and row.attente_ms == 0
