"""The router against both loopback servers: local first, every fallback path, the
rules that forbid falling back (never-leaves-the-server, no key, budget), the circuit
breaker on an injected clock, and streaming."""

from __future__ import annotations

import pytest

from bot.config import DEFAULT_FALLBACK_MODEL, DEFAULT_LOCAL_MODEL
from llm.anthropic_chat import AnthropicChat
from llm.errors import (
    BudgetExceeded,
    LLMUnavailable,
    LocalOnlyUnavailable,
    Overloaded,
)
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import ChatMessage
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.llm.conftest import NUM_CTX, Clock, Recorder, local_config, remote_config

HELLO = [ChatMessage("system", "Tu es Axi."), ChatMessage("user", "Bonjour !")]
HUGE = [ChatMessage("user", "mot " * (NUM_CTX * 2))]


async def test_local_answers_first(router: Router, ollama_server: FakeOllama,
                                   anthropic_server: FakeAnthropic, recorder: Recorder):
    reply = await router.chat(HELLO)
    assert reply.provider == "ollama"
    assert reply.fallback_reason is None
    assert len(ollama_server.chat_bodies) == 1
    assert anthropic_server.requests == []
    [record] = recorder.records
    assert record.ok and record.provider == "ollama" and record.model == DEFAULT_LOCAL_MODEL
    assert record.cost_eur == 0 and record.task == "conversation"


def _down(server: FakeOllama) -> None:
    server.stop()


def _error500(server: FakeOllama) -> None:
    server.fail_status = 500


def _slow(server: FakeOllama) -> None:
    server.delay_s = 1.0


def _no_model(server: FakeOllama) -> None:
    server.models = []


def _truncated(server: FakeOllama) -> None:
    server.prompt_eval_count = NUM_CTX


@pytest.mark.parametrize(
    ("break_local", "reason"),
    [(_down, "unavailable"), (_error500, "unavailable"), (_slow, "timeout"),
     (_no_model, "model_not_found"), (_truncated, "prompt_too_large")],
)
async def test_falls_back_to_remote(
    ollama_server: FakeOllama, anthropic_server: FakeAnthropic, recorder: Recorder,
    clock: Clock, break_local, reason: str,
):
    break_local(ollama_server)
    async with (OllamaChat(local_config(ollama_server, timeout_s=0.3)) as local,
                AnthropicChat(remote_config(anthropic_server)) as remote):
        router = Router(local, remote, record=recorder, clock=clock)
        reply = await router.chat(HELLO)
    assert reply.provider == "anthropic"
    assert reply.text == "Bonjour, ici Claude en secours."
    assert reply.fallback_reason == reason
    assert len(anthropic_server.requests) == 1
    failed, answered = recorder.records
    assert (failed.provider, failed.ok, failed.fallback_reason) == ("ollama", False, None)
    assert failed.error
    assert (answered.provider, answered.ok, answered.fallback_reason) == (
        "anthropic", True, reason)
    assert answered.model == DEFAULT_FALLBACK_MODEL
    assert answered.cost_eur > 0


async def test_prompt_too_large_falls_back_without_calling_local(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    reply = await router.chat(HUGE)
    assert reply.provider == "anthropic" and reply.fallback_reason == "prompt_too_large"
    assert ollama_server.chat_bodies == []
    assert len(anthropic_server.requests) == 1


async def test_local_only_never_calls_remote(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
    recorder: Recorder,
):
    ollama_server.stop()
    with pytest.raises(LocalOnlyUnavailable) as info:
        await router.chat(HELLO, local_only=True)
    assert "en attente" in info.value.user_message
    with pytest.raises(LocalOnlyUnavailable):
        await router.chat_json(HELLO, {"type": "object"}, local_only=True)
    with pytest.raises(LocalOnlyUnavailable):
        await router.stream(HELLO, local_only=True).collect()
    assert anthropic_server.requests == []
    assert all(r.provider == "ollama" and not r.ok for r in recorder.records)


async def test_local_only_still_answers_locally(router: Router, anthropic_server: FakeAnthropic):
    reply = await router.chat(HELLO, local_only=True)
    assert reply.provider == "ollama"
    assert anthropic_server.requests == []


async def test_no_remote_configured(local: OllamaChat, ollama_server: FakeOllama,
                                    recorder: Recorder):
    router = Router(local, None, record=recorder)
    ollama_server.models = []
    with pytest.raises(LLMUnavailable) as info:
        await router.chat(HELLO)
    message = str(info.value)
    assert "ANTHROPIC_API_KEY" in message
    assert f"ollama pull {DEFAULT_LOCAL_MODEL}" in message
    assert len(recorder.records) == 1


async def test_budget_spent_stops_fallback(
    local: OllamaChat, remote: AnthropicChat, ollama_server: FakeOllama,
    anthropic_server: FakeAnthropic, recorder: Recorder,
):
    asked: list[bool] = []

    async def budget_ok() -> bool:
        asked.append(True)
        return False

    router = Router(local, remote, record=recorder, budget_ok=budget_ok)
    assert (await router.chat(HELLO)).provider == "ollama"
    assert asked == []  # the budget only matters for fallbacks
    ollama_server.fail_status = 500
    with pytest.raises(BudgetExceeded, match="budget"):
        await router.chat(HELLO)
    with pytest.raises(BudgetExceeded):
        await router.stream(HELLO).collect()
    assert anthropic_server.requests == []
    assert len(asked) == 2


async def test_budget_left_allows_fallback(
    local: OllamaChat, remote: AnthropicChat, ollama_server: FakeOllama,
):
    async def budget_ok() -> bool:
        return True

    router = Router(local, remote, budget_ok=budget_ok)
    ollama_server.stop()
    assert (await router.chat(HELLO)).provider == "anthropic"


async def test_remote_errors_surface_typed(router: Router, ollama_server: FakeOllama,
                                           anthropic_server: FakeAnthropic, recorder: Recorder):
    ollama_server.stop()
    anthropic_server.fail_status = 529
    with pytest.raises(Overloaded):
        await router.chat(HELLO)
    assert [(r.provider, r.ok) for r in recorder.records] == [
        ("ollama", False), ("anthropic", False)]
    assert recorder.records[1].fallback_reason == "unavailable"


# ---------------------------------------------------------------------- circuit breaker
async def test_breaker_opens_then_half_opens(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic, clock: Clock
):
    ollama_server.fail_status = 500
    for _ in range(3):
        assert (await router.chat(HELLO)).fallback_reason == "unavailable"
    assert len(ollama_server.chat_bodies) == 3
    assert router.breaker.state == "open"

    # Open: local is skipped altogether.
    reply = await router.chat(HELLO)
    assert reply.provider == "anthropic" and reply.fallback_reason == "circuit_open"
    assert len(ollama_server.chat_bodies) == 3

    # Cool-down over, local still broken: one trial, then open again.
    clock.advance(61)
    assert router.breaker.state == "half_open"
    assert (await router.chat(HELLO)).fallback_reason == "unavailable"
    assert len(ollama_server.chat_bodies) == 4
    assert router.breaker.state == "open"
    assert (await router.chat(HELLO)).fallback_reason == "circuit_open"
    assert len(ollama_server.chat_bodies) == 4

    # Local is back: the next trial closes the breaker.
    ollama_server.fail_status = None
    clock.advance(61)
    assert (await router.chat(HELLO)).provider == "ollama"
    assert router.breaker.state == "closed"
    assert (await router.chat(HELLO)).provider == "ollama"
    assert len(ollama_server.chat_bodies) == 6
    assert len(anthropic_server.requests) == 6


async def test_breaker_local_only_waits_while_open(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    ollama_server.stop()
    for _ in range(3):
        with pytest.raises(LocalOnlyUnavailable):
            await router.chat(HELLO, local_only=True)
    with pytest.raises(LocalOnlyUnavailable, match="circuit"):
        await router.chat(HELLO, local_only=True)
    assert anthropic_server.requests == []


async def test_prompt_too_large_does_not_open_breaker(router: Router):
    for _ in range(4):
        assert (await router.chat(HUGE)).fallback_reason == "prompt_too_large"
    assert router.breaker.state == "closed"
    assert (await router.chat(HELLO)).provider == "ollama"


# ---------------------------------------------------------------------- streaming
async def test_stream_local(router: Router, ollama_server: FakeOllama,
                            anthropic_server: FakeAnthropic, recorder: Recorder):
    ollama_server.reply = "Réponse locale en flux."
    stream = router.stream(HELLO)
    chunks = [c async for c in stream]
    assert "".join(chunks) == "Réponse locale en flux."
    assert stream.reply is not None and stream.reply.provider == "ollama"
    assert anthropic_server.requests == []
    assert [(r.provider, r.ok) for r in recorder.records] == [("ollama", True)]


async def test_stream_falls_back_before_first_chunk(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
    recorder: Recorder,
):
    ollama_server.stop()
    anthropic_server.reply = "Réponse de secours en flux."
    stream = router.stream(HELLO)
    chunks = [c async for c in stream]
    assert "".join(chunks) == "Réponse de secours en flux."
    assert stream.reply is not None
    assert stream.reply.provider == "anthropic"
    assert stream.reply.fallback_reason == "unavailable"
    assert anthropic_server.bodies[-1]["stream"] is True
    assert [(r.provider, r.ok) for r in recorder.records] == [
        ("ollama", False), ("anthropic", True)]


async def test_stream_error_line_before_first_chunk_falls_back(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    ollama_server.error_after_chunks = 0
    reply = await router.stream(HELLO).collect()
    assert reply.provider == "anthropic"


async def test_stream_fails_mid_way_without_duplicating(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
    recorder: Recorder,
):
    ollama_server.reply = "un deux trois quatre"
    ollama_server.error_after_chunks = 2
    received: list[str] = []
    with pytest.raises(LLMUnavailable):
        async for chunk in router.stream(HELLO):
            received.append(chunk)
    assert received == ["un", " deux"]
    assert anthropic_server.requests == []
    assert [(r.provider, r.ok) for r in recorder.records] == [("ollama", False)]


async def test_stream_truncation_after_text_is_unavailable(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    ollama_server.prompt_eval_count = NUM_CTX
    with pytest.raises(LLMUnavailable, match="broke after it started"):
        await router.stream(HELLO).collect()
    assert anthropic_server.requests == []


async def test_stream_prompt_too_large_falls_back(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    reply = await router.stream(HUGE).collect()
    assert reply.provider == "anthropic" and reply.fallback_reason == "prompt_too_large"
    assert ollama_server.chat_bodies == []


async def test_abandoned_stream_does_not_block_the_half_open_trial(
    router: Router, ollama_server: FakeOllama, clock: Clock
):
    ollama_server.fail_status = 500
    for _ in range(3):
        await router.chat(HELLO)
    ollama_server.fail_status = None
    clock.advance(61)
    stream = router.stream(HELLO)
    assert await stream.__anext__() == "Bonjour,"
    await stream.aclose()  # the reader went away during the half-open trial
    assert (await router.chat(HELLO)).provider == "ollama"
    assert router.breaker.state == "closed"
