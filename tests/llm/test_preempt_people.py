"""The inner circle preempts what nobody watches yet (llm/gate.py `yields_to`, llm/router.py):
an email reply, or a client's live reply before its first token, gives the local model up
to Ludo — its request is closed, so the server stops — and is asked again right after him,
answered once; a reply whose first words were shown is never cut; a client does not
preempt an email. Against the simulated CPU Ollama (tests/fakes/cpu_ollama) and the real
`ollama` client."""

from __future__ import annotations

import asyncio

import pytest

from bot.config import DEFAULT_LOCAL_MODEL
from llm.anthropic_chat import AnthropicChat
from llm.gate import LocalGate, Preempted, Priority, Ticket, yields_to
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import ChatMessage
from llm.wait_estimate import Rates
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.cpu_ollama import StartCpu
from tests.llm.conftest import local_config, remote_config

P = Priority
EMAIL = [ChatMessage.user("Bonjour, nous avons vu votre annonce pour la longère. " * 120)]
CLIENT = [ChatMessage.user("Bonjour, la grange de Limeuil est-elle disponible ? " * 120)]
LUDO = [ChatMessage.user("Où en est-on avec M. Petit ?")]


def _ticket(priority: Priority, *, watched: bool = False) -> Ticket:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    return Ticket(priority, 0, 0.0, future, watched=watched)


async def test_the_rule_in_one_place() -> None:
    assert yields_to(_ticket(P.BACKGROUND), None)  # a person wrote
    assert yields_to(_ticket(P.BACKGROUND), P.EMAIL)
    for held in (P.EMAIL, P.CLIENT_LIVE):
        assert yields_to(_ticket(held), P.INNER_LIVE)
        assert not yields_to(_ticket(held), None)  # a message accepted is not a request yet
        assert not yields_to(_ticket(held, watched=True), P.INNER_LIVE)
    assert not yields_to(_ticket(P.EMAIL), P.CLIENT_LIVE)
    assert not yields_to(_ticket(P.CLIENT_LIVE), P.CLIENT_LIVE)
    assert not yields_to(_ticket(P.INNER_LIVE), P.INNER_LIVE)


async def test_a_client_does_not_preempt_an_email_ludo_does() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0)
    running = asyncio.Event()

    async def email_reply() -> str:
        running.set()
        await asyncio.sleep(30)
        return "jamais"

    email = asyncio.create_task(gate.run(P.EMAIL, email_reply))
    await running.wait()
    client = asyncio.create_task(gate.acquire(P.CLIENT_LIVE))
    await asyncio.sleep(0.02)
    assert not email.done() and not client.done()
    ludo = await asyncio.wait_for(gate.acquire(P.INNER_LIVE), 1)  # first, at once
    with pytest.raises(Preempted):
        await email
    assert not client.done() and gate.stats.preempted == 1
    gate.release(ludo)
    gate.release(await asyncio.wait_for(client, 1))


async def test_an_email_reply_in_flight_yields_to_ludo_and_is_answered_once_after_him(
        cpu_servers: StartCpu) -> None:
    cpu = cpu_servers(time_scale=0.03, reply_tokens=20)
    gate = LocalGate(slots=1, quiet_s=0.0)
    async with OllamaChat(local_config(cpu, model=DEFAULT_LOCAL_MODEL,  # type: ignore[arg-type]
                                       timeout_s=60.0)) as local:
        router = Router(local, None, gate=gate)
        email = asyncio.create_task(router.chat(EMAIL, priority=P.EMAIL))
        await asyncio.sleep(0.1)  # the email's prompt is being evaluated (~20 simulated s)
        assert gate.snapshot()["held"] == ["email"]
        stream = router.stream(LUDO, priority=P.INNER_LIVE)
        ludo_text = "".join([chunk async for chunk in stream])
        assert ludo_text and not email.done()
        reply = await asyncio.wait_for(email, 30)
    assert reply.provider == "ollama" and reply.text
    cut, ludo, again = cpu.records
    assert cut.finished_s is None  # the request was closed: the server stopped it
    assert ludo.queue_s < 1.0, f"Ludo queued {ludo.queue_s:.1f} simulated s"
    assert again.finished_s is not None and gate.stats.preempted == 1
    assert again.arrival_s >= ludo.arrival_s


async def _client_stream(router: Router, shown: list[str]) -> str:
    stream = router.stream(CLIENT, priority=P.CLIENT_LIVE)
    async for chunk in stream:
        shown.append(chunk)
    assert stream.reply is not None
    return stream.reply.text


async def test_a_client_reply_not_shown_yet_yields_to_ludo_and_shows_once(
        cpu_servers: StartCpu) -> None:
    cpu = cpu_servers(time_scale=0.03, reply_tokens=20)
    gate = LocalGate(slots=1, quiet_s=0.0)
    async with OllamaChat(local_config(cpu, model=DEFAULT_LOCAL_MODEL,  # type: ignore[arg-type]
                                       timeout_s=60.0)) as local:
        router = Router(local, None, gate=gate)
        shown: list[str] = []
        client = asyncio.create_task(_client_stream(router, shown))
        await asyncio.sleep(0.1)  # evaluating the client's prompt: nothing shown yet
        assert shown == [] and gate.snapshot()["held"] == ["client_live"]
        assert await router.chat(LUDO, priority=P.INNER_LIVE)
        text = await asyncio.wait_for(client, 30)
    assert "".join(shown) == text  # shown once, from the rerun
    cut, ludo, again = cpu.records
    assert cut.finished_s is None and again.finished_s is not None
    assert ludo.queue_s < 1.0 and gate.stats.preempted == 1


async def test_a_client_reply_being_shown_is_never_cut(cpu_servers: StartCpu) -> None:
    cpu = cpu_servers(time_scale=0.03, reply_tokens=200)  # ~22 simulated s of reply
    gate = LocalGate(slots=1, quiet_s=0.0)
    async with OllamaChat(local_config(cpu, model=DEFAULT_LOCAL_MODEL,  # type: ignore[arg-type]
                                       timeout_s=60.0)) as local:
        router = Router(local, None, gate=gate)
        shown: list[str] = []
        client = asyncio.create_task(_client_stream(router, shown))
        while not shown:  # its first words are on the client's screen
            await asyncio.sleep(0.01)
        assert await router.chat(LUDO, priority=P.INNER_LIVE)
        text = await asyncio.wait_for(client, 30)
    assert "".join(shown) == text and gate.stats.preempted == 0
    client_record, ludo = cpu.records
    assert client_record.finished_s is not None  # Ludo waited for its end, at the gate
    assert ludo.arrival_s >= client_record.finished_s - 0.5


async def test_in_the_wait_estimate_what_would_yield_to_ludo_does_not_count() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0)
    email = await gate.acquire(P.EMAIL)
    assert gate.ahead_of(P.INNER_LIVE) == [] and gate.ahead_of(P.CLIENT_LIVE) == [email]
    email.watched = True  # (a streamed email being shown: it would not yield)
    assert gate.ahead_of(P.INNER_LIVE) == [email]
    gate.release(email)


async def test_a_client_preempted_who_would_now_wait_too_long_gets_the_fallback(
        cpu_servers: StartCpu, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.reply = "Ici Claude."
    cpu = cpu_servers(time_scale=0.03, reply_tokens=20)
    gate = LocalGate(slots=1, quiet_s=0.0)
    async with (OllamaChat(local_config(cpu, model=DEFAULT_LOCAL_MODEL,  # type: ignore[arg-type]
                                        timeout_s=60.0)) as local,
                AnthropicChat(remote_config(anthropic_server)) as remote):
        router = Router(local, remote, gate=gate, max_wait_s=120.0,
                        rates=lambda task: Rates(prompt_tps=60.0, generation_tps=9.0))
        shown: list[str] = []
        client = asyncio.create_task(_client_stream(router, shown))
        await asyncio.sleep(0.1)  # evaluating the client's prompt: nothing shown yet
        ludo = await gate.acquire(P.INNER_LIVE, cost_s=600.0)  # ten minutes of Ludo's work
        text = await asyncio.wait_for(client, 30)
        gate.release(ludo)
    assert text == "Ici Claude." == "".join(shown)
    [cut] = cpu.records
    assert cut.finished_s is None and len(anthropic_server.requests) == 1
    assert gate._yielded == {}  # never asked again: its count of yields is not kept


async def test_a_client_yields_once_then_keeps_its_turn() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0)
    seq = gate.place()
    first = await gate.acquire(P.CLIENT_LIVE, seq=seq)
    ludo = asyncio.create_task(gate.acquire(P.INNER_LIVE))
    await asyncio.sleep(0)
    assert first.preempted  # it yields once...
    gate.release(first)
    gate.release(await ludo)
    again = await gate.acquire(P.CLIENT_LIVE, seq=seq)  # ...asked again at its place
    assert again.yielded == 1 and not yields_to(again, P.INNER_LIVE)
    ludo = asyncio.create_task(gate.acquire(P.INNER_LIVE))
    await asyncio.sleep(0.02)
    assert not again.preempted and not ludo.done()  # Ludo waits for it this time
    gate.release(again)
    gate.release(await ludo)
    email = await gate.acquire(P.EMAIL)
    assert yields_to(email, P.INNER_LIVE) and email.yielded == 0
    gate.release(email)


async def test_a_client_cut_while_its_prompt_is_read_is_asked_again_once_that_read_ends() -> None:
    """Ollama reads a cut prompt to its end: the client's request asked again waits for
    that read (then finds it cached) instead of reading it a second time beside it."""
    gate = LocalGate(slots=1, quiet_s=0.0)
    seq = gate.place()
    client = await gate.acquire(P.CLIENT_LIVE, read_s=0.3, seq=seq)
    reading = asyncio.create_task(gate.until_watched(client, lambda: asyncio.sleep(30)))
    await asyncio.sleep(0.01)
    ludo = asyncio.create_task(gate.acquire(P.INNER_LIVE))
    with pytest.raises(Preempted):
        await reading
    gate.release(client)  # as the router does, before asking again
    gate.release(await asyncio.wait_for(ludo, 1))  # Ludo went at once
    started = asyncio.get_running_loop().time()
    again = await asyncio.wait_for(gate.acquire(P.CLIENT_LIVE, read_s=0.01, seq=seq), 2)
    assert asyncio.get_running_loop().time() - started >= 0.2
    gate.release(again)
    # another client is not held back by it
    other = await asyncio.wait_for(gate.acquire(P.CLIENT_LIVE), 0.1)
    gate.release(other)
