"""The inner-circle reserve (AXI_LOCAL_RESERVE_S, llm/gate.py + llm/router.py): while Ludo
or the team used the local model within `reserve_s` seconds, a client's live request that
may use the fallback gets it at once (reason "local_reserved"), what must stay on the
server stays local and takes its turn, emails wait for the reserve to lapse (never failed),
and once it lapses everything is as without it. Off (0) by default: nothing changes."""

from __future__ import annotations

import asyncio
import time

import pytest

from llm.anthropic_chat import AnthropicChat
from llm.gate import LocalGate, Preempted, Priority
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import ChatMessage
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.llm.conftest import Clock, local_config, remote_config

P = Priority
HELLO = [ChatMessage.system("Tu es Axi."), ChatMessage.user("La longère est-elle libre ?")]


async def _ludo_asks(gate: LocalGate) -> None:
    """One of Ludo's live requests at the local model: asked, answered, given back."""
    async with gate.turn(P.INNER_LIVE):
        pass


async def test_the_gate_records_the_inner_circle_and_the_reserve_lapses(clock: Clock) -> None:
    off = LocalGate(slots=1, quiet_s=0.0, clock=clock)
    await _ludo_asks(off)
    assert off.reserved_s() == 0.0  # off by default
    gate = LocalGate(slots=1, quiet_s=0.0, reserve_s=300.0, clock=clock)
    assert gate.reserved_s() == 0.0  # nobody of the inner circle yet
    async with gate.turn(P.CLIENT_LIVE):
        assert gate.reserved_s() == 0.0  # a client does not reserve anything
    ludo = await gate.acquire(P.INNER_LIVE)
    clock.advance(250)  # a long reply: the reserve runs from its end
    assert gate.reserved_s() == 300.0
    gate.release(ludo)
    clock.advance(200)
    assert gate.reserved_s() == pytest.approx(100.0)
    clock.advance(100)
    assert gate.reserved_s() == 0.0
    with pytest.raises(ValueError):
        LocalGate(reserve_s=-1.0)


async def test_with_the_reserve_off_a_client_and_an_email_go_local_right_after_ludo(
        ollama_server: FakeOllama, anthropic_server: FakeAnthropic, clock: Clock) -> None:
    gate = LocalGate(slots=1, quiet_s=0.0, clock=clock)
    async with (OllamaChat(local_config(ollama_server)) as local,
                AnthropicChat(remote_config(anthropic_server)) as remote):
        router = Router(local, remote, gate=gate, max_wait_s=120.0)
        await _ludo_asks(gate)
        reply = await router.chat(HELLO, priority=P.CLIENT_LIVE)
        assert (reply.provider, reply.fallback_reason) == ("ollama", None)
        email = await asyncio.wait_for(router.chat(HELLO, priority=P.EMAIL), 5)
        assert email.provider == "ollama"
    assert anthropic_server.requests == []


async def test_while_ludo_is_active_a_client_gets_the_fallback_unless_it_must_stay(
        ollama_server: FakeOllama, anthropic_server: FakeAnthropic, clock: Clock) -> None:
    anthropic_server.reply = "Ici Claude."
    gate = LocalGate(slots=1, quiet_s=0.0, reserve_s=300.0, clock=clock)
    budget = {"left": True}

    async def budget_ok() -> bool:
        return budget["left"]

    async with (OllamaChat(local_config(ollama_server)) as local,
                AnthropicChat(remote_config(anthropic_server)) as remote):
        # no wait estimate (no rates): only the reserve sends anyone to the fallback
        router = Router(local, remote, gate=gate, max_wait_s=120.0, budget_ok=budget_ok)
        await _ludo_asks(gate)
        clock.advance(120)
        reply = await router.chat(HELLO, priority=P.CLIENT_LIVE)
        assert (reply.provider, reply.fallback_reason) == ("anthropic", "local_reserved")
        streamed = router.stream(HELLO, priority=P.CLIENT_LIVE)
        assert "".join([c async for c in streamed]) == "Ici Claude."
        assert streamed.reply is not None
        assert streamed.reply.fallback_reason == "local_reserved"
        assert len(anthropic_server.requests) == 2
        # what must never leave the server (local-only content, a never-cloud person)
        # stays local: the model is free, it answers at once
        stays = await asyncio.wait_for(router.chat(HELLO, priority=P.CLIENT_LIVE,
                                                   local_only=True), 5)
        assert (stays.provider, stays.fallback_reason) == ("ollama", None)
        # the inner circle itself is never sent away by its own reserve
        assert (await router.chat(HELLO, priority=P.INNER_LIVE)).provider == "ollama"
        # no budget left: no fallback to give, the client takes the local model's turn
        budget["left"] = False
        assert (await router.chat(HELLO, priority=P.CLIENT_LIVE)).provider == "ollama"
        budget["left"] = True
        # the reserve lapses: clients go local again
        clock.advance(301)
        assert gate.reserved_s() == 0.0
        again = await router.chat(HELLO, priority=P.CLIENT_LIVE)
        assert (again.provider, again.fallback_reason) == ("ollama", None)
    assert len(anthropic_server.requests) == 2


async def test_an_email_waits_for_the_reserve_to_lapse_and_background_work_yields_to_it(
        ) -> None:
    gate = LocalGate(slots=1, quiet_s=0.0, reserve_s=0.4)
    await _ludo_asks(gate)
    ludo_done = time.monotonic()
    email = asyncio.create_task(gate.acquire(P.EMAIL))
    await asyncio.sleep(0.05)
    assert not email.done() and gate.snapshot()["waiting"] == ["email"]
    # a client's turn (local-only content, say) is not held back by the parked email
    async with gate.turn(P.CLIENT_LIVE):
        pass
    # background work may use the idle model meanwhile, and yields when the email may go
    cancelled = asyncio.Event()

    async def summary() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "jamais"

    background = asyncio.create_task(gate.run(P.BACKGROUND, summary))
    await asyncio.sleep(0.05)
    assert gate.snapshot()["held"] == ["background"] and not email.done()
    ticket = await asyncio.wait_for(email, 5)  # waiting, never failed
    assert time.monotonic() - ludo_done >= 0.39
    with pytest.raises(Preempted):
        await background
    assert cancelled.is_set()
    gate.release(ticket)


async def test_ludo_writing_again_keeps_the_email_waiting() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0, reserve_s=0.3)
    await _ludo_asks(gate)
    email = asyncio.create_task(gate.acquire(P.EMAIL))
    await asyncio.sleep(0.2)
    assert not email.done()
    await asyncio.wait_for(_ludo_asks(gate), 5)  # the reserve runs again from here
    renewed = time.monotonic()
    await asyncio.wait_for(email, 5)
    assert time.monotonic() - renewed >= 0.29
    gate.release(email.result())


async def test_an_email_parked_behind_background_work_gets_it_when_the_reserve_lapses(
        ) -> None:
    gate = LocalGate(slots=1, quiet_s=0.0, reserve_s=0.3)
    await _ludo_asks(gate)

    async def summary() -> str:
        await asyncio.sleep(30)
        return "jamais"

    background = asyncio.create_task(gate.run(P.BACKGROUND, summary))
    await asyncio.sleep(0.05)
    assert gate.snapshot()["held"] == ["background"]
    email = asyncio.create_task(gate.acquire(P.EMAIL))  # parked: it does not preempt yet
    await asyncio.sleep(0.05)
    assert not email.done() and not background.done()
    gate.release(await asyncio.wait_for(email, 5))
    with pytest.raises(Preempted):
        await background
