"""The local model's gate (llm/gate.py): people before background work, background only
when quiet, preempted when a person needs the model, bounded; and the router taking a
turn there for every local call, against the simulated CPU Ollama (tests/fakes/cpu_ollama)
driven by the real `ollama` client."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.config import DEFAULT_LOCAL_MODEL
from llm.gate import HOT, BackgroundTooLong, LocalGate, Preempted, Priority
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import ChatMessage
from tests.fakes.cpu_ollama import CpuOllama, StartCpu
from tests.llm.conftest import local_config

P = Priority


async def _hold(gate: LocalGate, priority: Priority, order: list[str], name: str,
                release: asyncio.Event | None = None) -> None:
    async with gate.turn(priority):
        order.append(name)
        if release is not None:
            await release.wait()


async def test_people_go_first_in_priority_then_arrival_order() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0)
    order: list[str] = []
    first_done = asyncio.Event()
    holder = asyncio.create_task(_hold(gate, P.CLIENT_LIVE, order, "first", first_done))
    await asyncio.sleep(0)
    names = [("fond", P.BACKGROUND), ("mail", P.EMAIL), ("client", P.CLIENT_LIVE),
             ("ludo", P.INNER_LIVE), ("ludo-2", P.INNER_LIVE)]
    tasks = []
    for name, priority in names:
        tasks.append(asyncio.create_task(_hold(gate, priority, order, name)))
        await asyncio.sleep(0)
    assert gate.snapshot()["waiting"] == ["background", "client_live", "email", "inner_live",
                                          "inner_live"]
    first_done.set()
    await asyncio.gather(holder, *tasks)
    assert order == ["first", "ludo", "ludo-2", "client", "mail", "fond"]


async def test_background_waits_until_the_conversations_are_quiet() -> None:
    gate = LocalGate(slots=1, quiet_s=0.15)
    gate.note_person()
    started = time.monotonic()
    async with gate.turn(P.BACKGROUND):
        waited = time.monotonic() - started
    assert waited >= 0.14
    # a person is never made to wait for quiet
    gate.note_person()
    started = time.monotonic()
    async with gate.turn(P.CLIENT_LIVE):
        assert time.monotonic() - started < 0.05


async def test_a_person_preempts_background_work_in_flight() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0)
    running = asyncio.Event()
    cancelled = asyncio.Event()

    async def extraction() -> str:
        running.set()
        try:
            await asyncio.sleep(30)  # a long generation on the CPU
        except asyncio.CancelledError:
            cancelled.set()  # the HTTP request is closed: Ollama stops generating
            raise
        return "jamais"

    background = asyncio.create_task(gate.run(P.BACKGROUND, extraction))
    await running.wait()
    started = time.monotonic()
    async with gate.turn(P.INNER_LIVE):
        waited = time.monotonic() - started
    assert waited < 0.1 and cancelled.is_set()
    with pytest.raises(Preempted, match="person"):
        await background
    assert gate.stats.preempted == 1 and gate.snapshot()["held"] == []


async def test_a_message_accepted_preempts_too_and_background_resumes_later() -> None:
    gate = LocalGate(slots=1, quiet_s=0.1)
    running = asyncio.Event()

    async def extraction() -> str:
        running.set()
        await asyncio.sleep(30)
        return "jamais"

    background = asyncio.create_task(gate.run(P.BACKGROUND, extraction))
    await running.wait()
    gate.note_person()  # a message was accepted: its worker will ask for the model soon
    with pytest.raises(Preempted):
        await background
    # the next background request waits for quiet again, then runs
    started = time.monotonic()
    assert await gate.run(P.BACKGROUND, _quick) == "fait"
    assert time.monotonic() - started >= 0.09


async def _quick() -> str:
    await asyncio.sleep(0)
    return "fait"


async def test_background_work_is_bounded_and_its_failures_are_its_own() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0, background_max_s=0.05)
    with pytest.raises(BackgroundTooLong, match="background model work"):  # its own failure
        await gate.run(P.BACKGROUND, lambda: asyncio.sleep(5))
    with pytest.raises(ZeroDivisionError):
        await gate.run(P.BACKGROUND, _fails)
    assert gate.snapshot()["held"] == [] and await gate.run(P.BACKGROUND, _quick) == "fait"


async def _fails() -> None:
    raise ZeroDivisionError


async def test_a_person_between_the_grant_and_the_call_still_preempts() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0)
    holder = await gate.acquire(P.CLIENT_LIVE)
    called: list[str] = []

    async def work() -> str:
        called.append("fond")
        return "fait"

    background = asyncio.create_task(gate.run(P.BACKGROUND, work))
    await asyncio.sleep(0)
    gate.release(holder)  # background granted; its task has not run yet
    gate.note_person()
    with pytest.raises(Preempted):
        await background
    assert called == []


async def test_a_waiter_cancelled_gives_nothing_away() -> None:
    gate = LocalGate(slots=1, quiet_s=0.0)
    release = asyncio.Event()
    order: list[str] = []
    holder = asyncio.create_task(_hold(gate, P.INNER_LIVE, order, "holder", release))
    await asyncio.sleep(0)
    waiter = asyncio.create_task(_hold(gate, P.INNER_LIVE, order, "gave-up"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    await _hold(gate, P.CLIENT_LIVE, order, "next")
    assert order == ["holder", "next"] and gate.snapshot() == {
        "slots": 1, "reserve_s": 0.0, "reserved_s": 0.0, "held": [], "waiting": [],
        "preempted": 0}


async def test_two_slots_serve_two_people_at_once_and_never_background_beside_them(
) -> None:
    gate = LocalGate(slots=2, quiet_s=0.0)
    release = asyncio.Event()
    order: list[str] = []
    one = asyncio.create_task(_hold(gate, P.INNER_LIVE, order, "ludo", release))
    two = asyncio.create_task(_hold(gate, P.CLIENT_LIVE, order, "client", release))
    background = asyncio.create_task(_hold(gate, P.BACKGROUND, order, "fond"))
    await asyncio.sleep(0.02)
    assert order == ["ludo", "client"]
    release.set()
    await asyncio.gather(one, two, background)
    assert order[-1] == "fond"


async def test_with_two_slots_hot_work_runs_beside_a_reply_being_written_only() -> None:
    """The server decodes a model's slots in one batch: a hot continuation may take the
    free slot once every person held has their first token (never before: it would share
    the CPU with their prompt), never with one slot; a person asking takes it back."""
    for slots, beside in ((2, True), (1, False)):
        gate = LocalGate(slots=slots, quiet_s=60.0)
        gate.note_person()
        ludo = await gate.acquire(P.INNER_LIVE)
        token = HOT.set(True)
        try:
            hot = asyncio.create_task(gate.acquire(P.BACKGROUND))
        finally:
            HOT.reset(token)
        cold = asyncio.create_task(gate.acquire(P.BACKGROUND))
        await asyncio.sleep(0.01)
        assert not hot.done()  # Ludo's prompt is being evaluated
        assert await gate.until_watched(ludo, _first_token) == "Bon"
        await asyncio.sleep(0.01)
        assert hot.done() is beside and not cold.done()  # cold work waits for quiet
        if beside:
            extraction = hot.result()
            waiting = asyncio.create_task(gate.acquire(P.CLIENT_LIVE))
            await asyncio.sleep(0)
            assert extraction.preempted and not ludo.preempted
            gate.release(extraction)
            gate.release(await waiting)
        gate.release(ludo)
        for task in (hot, cold):
            task.cancel()
        await asyncio.gather(hot, cold, return_exceptions=True)


async def test_a_prompt_cut_while_read_holds_background_work_until_its_read_ends() -> None:
    """Ollama reads a prompt to its end even when its client has gone: background work
    cut during its read keeps the others waiting for the rest of that read (its retry
    would read the same prompt again beside it); a person does not wait for it."""
    gate = LocalGate(slots=2, quiet_s=0.0)
    running = asyncio.Event()

    async def warm_up() -> str:
        running.set()
        await asyncio.sleep(30)  # reading ~1,300 tokens at 60 tokens/s
        return "jamais"

    cut = asyncio.create_task(gate.run(P.BACKGROUND, warm_up, read_s=0.3))
    await running.wait()
    started = time.monotonic()
    async with gate.turn(P.CLIENT_LIVE):
        assert time.monotonic() - started < 0.1  # the person went at once
    with pytest.raises(Preempted):
        await cut
    started = time.monotonic()
    assert await gate.run(P.BACKGROUND, _quick) == "fait"  # the retry waited for the read
    assert 0.2 <= time.monotonic() - started < 2
    # cut after its read (or with no estimate): nothing to wait for
    for read_s in (0.0, None):
        running.clear()
        cut = asyncio.create_task(gate.run(P.BACKGROUND, warm_up, read_s=read_s))
        await running.wait()
        gate.note_person()
        with pytest.raises(Preempted):
            await cut
        started = time.monotonic()
        assert await gate.run(P.BACKGROUND, _quick) == "fait"
        assert time.monotonic() - started < 0.15


async def test_with_two_slots_background_work_runs_one_at_a_time() -> None:
    """Two prompts read at once share the compute: the second slot is left to people."""
    gate = LocalGate(slots=2, quiet_s=0.0)
    first = await gate.acquire(P.BACKGROUND)
    second = asyncio.create_task(gate.acquire(P.BACKGROUND))
    client = asyncio.create_task(gate.acquire(P.CLIENT_LIVE))
    await asyncio.sleep(0.01)
    assert client.done() and not second.done()
    gate.release(client.result())
    await asyncio.sleep(0.01)
    assert not second.done()
    gate.release(first)
    gate.release(await asyncio.wait_for(second, 1))


async def test_with_two_slots_the_inner_circle_reads_its_prompt_alone() -> None:
    """Two prompts at once share the CPU's compute: while Ludo's prompt is evaluated
    nobody but the inner circle starts beside it, and a client's reply not shown yet
    that would be read beside his yields (once) even with a slot free."""
    gate = LocalGate(slots=2, quiet_s=60.0)
    client = await gate.acquire(P.CLIENT_LIVE)
    ludo = await gate.acquire(P.INNER_LIVE)  # the second slot, free
    assert client.preempted and not ludo.preempted
    gate.release(client)
    first = asyncio.get_running_loop().create_future()
    stream = asyncio.create_task(gate.until_watched(ludo, lambda: first))
    await asyncio.sleep(0)
    again = asyncio.create_task(gate.acquire(P.CLIENT_LIVE))  # the client, asked again
    other = asyncio.create_task(gate.acquire(P.INNER_LIVE))  # Julie: the inner circle
    await asyncio.sleep(0.01)
    assert other.done() and not again.done()
    gate.release(other.result())
    await asyncio.sleep(0.01)
    assert not again.done()  # a slot is free, but Ludo's prompt is being read
    first.set_result("Bon")
    assert await stream == "Bon"
    await asyncio.sleep(0.01)
    assert again.done() and not again.result().preempted  # his first token came
    gate.release(again.result())
    gate.release(ludo)


async def test_nobody_is_granted_beside_ludo_between_his_grant_and_his_stream() -> None:
    """Cuts give two slots back at once: Ludo's stream is granted one, and the client
    waiting must not take the other before Ludo's prompt is even asked for."""
    gate = LocalGate(slots=2, quiet_s=60.0)
    first = await gate.acquire(P.CLIENT_LIVE)
    second = await gate.acquire(P.CLIENT_LIVE)
    waiting = asyncio.create_task(gate.acquire(P.CLIENT_LIVE))
    ludo = asyncio.create_task(gate.acquire(P.INNER_LIVE, stream=True))
    await asyncio.sleep(0.01)
    assert first.preempted and second.preempted
    gate.release(first)
    gate.release(second)  # the router gives both back, one after the other
    granted = await asyncio.wait_for(ludo, 1)
    await asyncio.sleep(0.01)
    assert not waiting.done()  # his prompt is about to be read: nobody beside it
    assert await gate.until_watched(granted, _first_token) == "Bon"
    await asyncio.sleep(0.01)
    assert waiting.done()
    gate.release(waiting.result())
    gate.release(granted)


async def _first_token() -> str:
    return "Bon"


async def test_a_spare_server_slot_lets_the_inner_circle_in_beside_replies_being_written(
        ) -> None:
    """With a server slot beyond AXI_LOCAL_SLOTS (`spare`), Ludo does not wait for replies
    already shown to end: he takes it when every held request is writing, never while one
    is still read, and nobody else does."""
    gate = LocalGate(slots=2, quiet_s=60.0, spare=1)
    client = await gate.acquire(P.CLIENT_LIVE)
    mine = await gate.acquire(P.INNER_LIVE)  # the client's reply is not shown yet: it yields
    gate.release(client)
    client = await gate.acquire(P.CLIENT_LIVE, seq=client.seq)  # asked again: yielded once
    assert await gate.until_watched(mine, _first_token) == "Bon"
    reading = asyncio.get_running_loop().create_future()
    shown = asyncio.create_task(gate.until_watched(client, lambda: reading))
    await asyncio.sleep(0)
    ludo = asyncio.create_task(gate.acquire(P.INNER_LIVE))
    await asyncio.sleep(0.01)
    assert not ludo.done()  # the client's prompt is being read: not beside it
    reading.set_result("Bonjour")
    assert await shown == "Bonjour"
    other = asyncio.create_task(gate.acquire(P.CLIENT_LIVE))
    await asyncio.sleep(0.01)
    assert ludo.done() and not other.done()  # the spare slot is the inner circle's
    assert gate.snapshot()["held"] == ["client_live", "inner_live", "inner_live"]
    for ticket in (ludo.result(), mine):
        gate.release(ticket)
    gate.release(await asyncio.wait_for(other, 1))
    gate.release(client)
    # without a spare slot he waits for a reply to end
    gate = LocalGate(slots=2, quiet_s=60.0)
    held = [await gate.acquire(P.INNER_LIVE) for _ in range(2)]
    for ticket in held:
        await gate.until_watched(ticket, _first_token)
    ludo = asyncio.create_task(gate.acquire(P.INNER_LIVE))
    await asyncio.sleep(0.01)
    assert not ludo.done()
    gate.release(held[0])
    gate.release(await asyncio.wait_for(ludo, 1))
    gate.release(held[1])


# ------------------------------------------------------------------ on the simulated CPU
@pytest.fixture
def cpu(cpu_servers: StartCpu) -> CpuOllama:
    return cpu_servers(time_scale=0.03, reply_tokens=20)  # the extraction: ~1 s of wall time


EXTRACT = [ChatMessage.system("Tu extrais des faits."),
           ChatMessage.user("Ludo habite à Peyrebrune. " * 150)]
HELLO = [ChatMessage.system("Tu es Axi."), ChatMessage.user("Bonjour Axi")]


async def test_on_the_cpu_server_ludo_does_not_wait_behind_an_extraction(
        cpu: CpuOllama) -> None:
    cpu.json_reply = '{"faits": []}'
    gate = LocalGate(slots=1, quiet_s=0.0)
    async with OllamaChat(local_config(cpu, model=DEFAULT_LOCAL_MODEL,  # type: ignore[arg-type]
                                       extraction_model=DEFAULT_LOCAL_MODEL,
                                       timeout_s=60.0)) as local:
        router = Router(local, None, gate=gate)
        schema = {"type": "object", "properties": {"faits": {"type": "array"}},
                  "required": ["faits"]}
        extraction = asyncio.create_task(router.chat_json(EXTRACT, schema, retries=0))
        await asyncio.sleep(0.05)  # the extraction is on the server, evaluating its prompt
        assert gate.snapshot()["held"] == ["background"]
        reply = await router.chat(HELLO, priority=P.INNER_LIVE)
        assert reply.text
        with pytest.raises(Preempted):
            await extraction
    extracted, ludo = cpu.records
    assert extracted.finished_s is None  # the client went away: the server stopped it
    assert ludo.queue_s < 1.0, f"Ludo queued {ludo.queue_s:.1f} simulated s behind it"
