"""The call log in PostgreSQL: the router's records land in `appels_llm`, usage and the
local share are computed from them, and this month's Claude spend drives the budget."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bot.alerts import budget_with_alert
from bot.llm_wiring import call_recorder
from llm.anthropic_chat import AnthropicChat
from llm.errors import BudgetExceeded
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import ChatMessage
from memory.store import MemoryStore
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama

HELLO = [ChatMessage("user", "Bonjour !")]


async def test_router_attempts_are_written(
    store: MemoryStore, local: OllamaChat, remote: AnthropicChat, ollama_server: FakeOllama
):
    router = Router(local, remote, record=call_recorder(store))
    for _ in range(4):
        await router.chat(HELLO)
    ollama_server.fail_status = 500
    await router.chat(HELLO, task="summary")

    async with store.db.sessions() as session:
        rows = (await session.execute(text(
            "SELECT fournisseur, modele, tache, jetons_entree, jetons_sortie, latence_ms, "
            "succes, erreur, raison_repli, cout_eur, cree_le FROM appels_llm ORDER BY id"
        ))).all()
    assert [(r.fournisseur, r.succes) for r in rows] == [
        ("ollama", True)] * 4 + [("ollama", False), ("anthropic", True)]
    failed, fallback = rows[4], rows[5]
    assert failed.tache == "summary" and "500" in failed.erreur and failed.raison_repli is None
    assert fallback.raison_repli == "unavailable" and float(fallback.cout_eur) > 0
    assert all(r.cree_le is not None for r in rows)
    assert rows[0].jetons_sortie > 0

    usage = await store.llm_usage(7)
    assert usage["calls"] == 6
    assert usage["replies"] == 5
    assert usage["local_replies"] == 4 and usage["remote_replies"] == 1
    assert usage["failures"] == 1 and usage["fallbacks"] == 1
    assert usage["local_share"] == 0.8
    assert usage["spend_eur"] == round(float(fallback.cout_eur), 6)
    assert usage["tokens_out"] == sum(r.jetons_sortie for r in rows)


async def test_usage_window_and_empty_log(store: MemoryStore):
    empty = await store.llm_usage(30)
    assert empty["calls"] == 0 and empty["local_share"] is None and empty["spend_eur"] == 0
    await store.record_llm_call(provider="anthropic", model="claude-sonnet-4-5",
                                task="conversation", ok=True, cost_eur=1.5)
    old = await store.record_llm_call(provider="ollama", model="m",
                                      task="conversation")
    async with store.db.sessions.begin() as session:
        await session.execute(text(
            "UPDATE appels_llm SET cree_le = now() - interval '10 days' WHERE id = :id"),
            {"id": old})
    usage = await store.llm_usage(7)
    assert usage["calls"] == 1 and usage["local_share"] == 0.0
    assert (await store.llm_usage(30))["local_share"] == 0.5


async def test_claude_spend_this_month_in_paris_time(store: MemoryStore):
    await store.record_llm_call(provider="anthropic", model="claude-sonnet-4-5",
                                task="conversation", cost_eur=2.25)
    await store.record_llm_call(provider="anthropic", model="claude-sonnet-4-5",
                                task="conversation", cost_eur=0.75)
    last_month = await store.record_llm_call(
        provider="anthropic", model="claude-sonnet-4-5", task="conversation", cost_eur=100)
    await store.record_llm_call(provider="ollama", model="m", task="conversation",
                                cost_eur=9)
    async with store.db.sessions.begin() as session:
        # One second before midnight on the 1st of this month, Paris time: last month.
        await session.execute(text(
            "UPDATE appels_llm SET cree_le = (date_trunc('month', now() AT TIME ZONE "
            "'Europe/Paris') AT TIME ZONE 'Europe/Paris') - interval '1 second' WHERE id = :id"),
            {"id": last_month})
    assert await store.claude_spend_this_month() == 3.0


async def test_budget_from_the_log_stops_fallbacks(
    store: MemoryStore, local: OllamaChat, remote: AnthropicChat,
    ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
):
    router = Router(local, remote, record=call_recorder(store),
                    budget_ok=budget_with_alert(store.claude_spend_this_month, 5.0,
                                                notify=None))
    ollama_server.stop()
    assert (await router.chat(HELLO)).provider == "anthropic"
    await store.record_llm_call(provider="anthropic", model="claude-sonnet-4-5",
                                task="conversation", cost_eur=5.0)
    with pytest.raises(BudgetExceeded):
        await router.chat(HELLO)
    assert len(anthropic_server.requests) == 1
