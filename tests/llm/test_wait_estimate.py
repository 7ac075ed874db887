"""How long a person would wait for the local model (llm/wait_estimate.py), and the rule
the router applies with it: past AXI_LOCAL_MAX_WAIT, the fallback answers a person who may
use it; a message that must stay on the server waits."""

from __future__ import annotations

import asyncio

import pytest

from llm.anthropic_chat import AnthropicChat
from llm.gate import LocalGate, Priority
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import ChatMessage
from llm.wait_estimate import Rates, cached_guess, expected_wait_s, measured
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.llm.conftest import local_config, remote_config

RATES = Rates(prompt_tps=60.0, generation_tps=10.0)
HELLO = [ChatMessage.system("Tu es Axi."), ChatMessage.user("Bonjour")]


async def test_the_wait_is_what_goes_before_then_the_uncached_prompt() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0, clock=lambda: 100.0)
    held = await gate.acquire(Priority.CLIENT_LIVE, cost_s=30.0)
    held.granted_at = 90.0  # it has run for 10 s
    waiting = [asyncio.create_task(gate.acquire(p, cost_s=c)) for p, c in (
        (Priority.INNER_LIVE, 12.0), (Priority.EMAIL, 50.0), (Priority.BACKGROUND, 99.0))]
    await asyncio.sleep(0)
    ahead = gate.ahead_of(Priority.CLIENT_LIVE)  # Ludo's goes first, the email after
    assert expected_wait_s(ahead, own_prompt_tokens=660, own_cached=60, rates=RATES,
                           now=100.0) == pytest.approx(20 + 12 + 10)
    everything = gate.ahead_of(Priority.BACKGROUND)  # background ahead never counts
    assert expected_wait_s(everything, own_prompt_tokens=0, own_cached=0, rates=RATES,
                           now=100.0) == pytest.approx(20 + 12 + 50)
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_with_two_slots_the_wait_is_until_the_first_slot_frees() -> None:
    gate = LocalGate(slots=2, quiet_s=0.0, clock=lambda: 100.0)
    client = await gate.acquire(Priority.CLIENT_LIVE, cost_s=30.0)
    client.granted_at = 90.0  # 20 s still to go
    mail = await gate.acquire(Priority.EMAIL, cost_s=50.0)
    mail.granted_at = 95.0  # 45 s still to go
    ludo = asyncio.create_task(gate.acquire(Priority.INNER_LIVE, cost_s=12.0))
    await asyncio.sleep(0)
    ahead = gate.ahead_of(Priority.CLIENT_LIVE)  # both held, then Ludo's on the first free
    assert expected_wait_s(ahead, own_prompt_tokens=660, own_cached=60, rates=RATES,
                           now=100.0, slots=2) == pytest.approx(32 + 10)
    assert expected_wait_s(ahead, own_prompt_tokens=660, own_cached=60, rates=RATES,
                           now=100.0) == pytest.approx(20 + 45 + 12 + 10)  # one at a time
    assert expected_wait_s([], own_prompt_tokens=660, own_cached=60, rates=RATES,
                           now=100.0, slots=2) == pytest.approx(10)
    ludo.cancel()
    await asyncio.gather(ludo, return_exceptions=True)


def test_the_cache_likely_holds_the_shared_messages() -> None:
    turn1 = [*HELLO, ChatMessage.assistant("Salut"), ChatMessage.user("Et la longère ?")]
    assert cached_guess(turn1, HELLO) == cached_guess(HELLO, HELLO) > 0
    assert cached_guess(turn1, [ChatMessage.system("Autre")]) == 0
    assert measured(type("M", (), {"prompt_tps": 55.0, "generation_tps": None})()) is None
    assert measured(type("M", (), {"prompt_tps": 55.0, "generation_tps": 8.0})()) == Rates(
        55.0, 8.0)


async def test_a_person_who_would_wait_too_long_gets_the_fallback_unless_it_must_stay(
        ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.reply = "Ici Claude, pour ne pas vous faire attendre."
    gate = LocalGate(slots=1, quiet_s=0.0)
    async with (OllamaChat(local_config(ollama_server)) as local,
                AnthropicChat(remote_config(anthropic_server)) as remote):
        router = Router(local, remote, gate=gate, rates=lambda task: RATES, max_wait_s=120.0)
        assert router.expected_wait(HELLO, Priority.CLIENT_LIVE) == pytest.approx(
            cached_guess(HELLO, []) / 60.0, abs=1.0)
        busy = await gate.acquire(Priority.INNER_LIVE, cost_s=600.0)  # ten minutes' work
        reply = await router.chat(HELLO, priority=Priority.CLIENT_LIVE)
        assert (reply.provider, reply.fallback_reason) == ("anthropic", "local_busy")
        streamed = router.stream(HELLO, priority=Priority.CLIENT_LIVE)
        assert "".join([c async for c in streamed]) and streamed.reply is not None
        assert streamed.reply.fallback_reason == "local_busy"
        # must stay on the server: waits for its turn, then the local model answers
        stays = asyncio.create_task(router.chat(HELLO, priority=Priority.CLIENT_LIVE,
                                                local_only=True))
        await asyncio.sleep(0.1)
        assert not stays.done()
        gate.release(busy)
        assert (await stays).provider == "ollama"
    assert len(anthropic_server.requests) == 2


def _conversation(name: str, turns: int) -> list[ChatMessage]:
    messages = [ChatMessage.user(f"Tu parles avec {name}. " + "Consignes de l'agence. " * 60),
                ChatMessage.assistant("Compris.")]
    for i in range(turns):
        messages += [ChatMessage.user(f"Question {i} de {name} sur la longère de Vergt."),
                     ChatMessage.assistant(f"Réponse {i}.")]
    return messages


async def test_with_several_server_caches_each_conversation_keeps_its_cached_prefix(
        ollama_server: FakeOllama) -> None:
    """OLLAMA_NUM_PARALLEL=8 with the multi-user cache keeps one prompt per recent
    conversation: the guess looks at as many recent prompts (AXI_LOCAL_CACHES), so Ludo's
    next turn is not estimated as a whole prompt to read because a client spoke last."""
    ludo, client = _conversation("Ludo", 6), _conversation("M. Petit", 2)
    ludo_next = [*ludo, ChatMessage.user("Et pour Mme Durand ?")]
    async with OllamaChat(local_config(ollama_server)) as local:
        waits = {}
        for caches in (1, 8):
            router = Router(local, None, gate=LocalGate(slots=1, quiet_s=0.0),
                            rates=lambda task: RATES, caches=caches)
            await router.chat(ludo, priority=Priority.INNER_LIVE)
            await router.chat(client, priority=Priority.CLIENT_LIVE)
            waits[caches] = router.expected_wait(ludo_next, Priority.INNER_LIVE)
    assert waits[1] is not None and waits[1] > 10.0  # one cache: the client's evicted his
    assert waits[8] is not None and waits[8] < 0.2 * waits[1]  # only his new message
