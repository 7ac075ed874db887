"""The gate wired into Axi (issue: one CPU, one model): who gets which priority, a message
accepted preempts background extraction at once, and the preempted item is not lost nor
counted as a failure: it stays queued and is done later."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text

from bot.app import Axi
from bot.policy import OPERATOR, interlocutor, model_priority
from llm.gate import Preempted, Priority
from llm.wait_estimate import Rates
from memory.records import PersonRecord
from tests.bot.conftest import say
from tests.bot.test_pipeline import run_all, telegram
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until


async def _queued(axi: Axi) -> list[tuple[int, dict[str, Any]]]:
    """The souvenirs queued for extraction (id, metadata)."""
    async with axi.store.db.sessions() as session:
        rows = (await session.execute(text(
            "SELECT id, metadata FROM souvenirs WHERE metadata->>'extraction' = 'a_faire' "
            "ORDER BY id"))).all()
    return [(r.id, r.metadata) for r in rows]


def _person(relation: str) -> PersonRecord:
    return PersonRecord(id=7, personne="X", relation=relation, comment_interagir=None,
                        details={}, cree_le=None, bloque=False,  # type: ignore[arg-type]
                        jamais_hors_serveur=False)


def test_who_gets_the_model_first() -> None:
    def of(person: PersonRecord | None, channel: str) -> Priority:
        return model_priority(interlocutor(person, channel=channel, address="a",
                                           verified=True))
    assert of(_person("créateur"), "telegram") == Priority.INNER_LIVE
    assert of(_person("équipe"), "web") == Priority.INNER_LIVE
    assert of(OPERATOR, "console") == Priority.INNER_LIVE
    assert of(_person("client"), "telegram") == Priority.CLIENT_LIVE
    assert of(None, "site") == Priority.CLIENT_LIVE
    assert of(_person("créateur"), "email") == Priority.EMAIL
    assert of(_person("client"), "email") == Priority.EMAIL


async def test_a_message_accepted_preempts_extraction_and_nothing_is_lost(
        axi: Axi, ollama_server: FakeOllama) -> None:
    await say(axi, "1001", "Retiens que j'habite à Peyrebrune.")
    [(queued, _)] = await _queued(axi)
    ollama_server.delay_s = 5.0  # the extraction is slow on the CPU
    extraction = asyncio.create_task(axi.extractor.extract_one())
    await asyncio.sleep(0.3)
    assert axi.gate.snapshot()["held"] == ["background"]
    started = time.monotonic()
    await axi.pipeline.accept(telegram("2002", "Bonjour, la longère est-elle libre ?"))
    with pytest.raises(Preempted):
        await extraction
    assert time.monotonic() - started < 1.0
    [(still, meta)] = await _queued(axi)
    assert still == queued
    assert "extraction_essais" not in meta  # not a failure: not counted
    ollama_server.delay_s = 0.0
    while await axi.extractor.extract_one():
        pass
    assert await _queued(axi) == []  # done, once quiet again


async def test_too_busy_a_client_gets_claude_and_is_told_why_ludos_secret_waits(
        axi: Axi, anthropic_server: FakeAnthropic) -> None:
    anthropic_server.reply = "Bonjour, la longère est encore disponible."
    axi.router.rates = lambda task: Rates(prompt_tps=60.0, generation_tps=10.0)
    busy = await axi.gate.acquire(Priority.INNER_LIVE, cost_s=900.0)  # 15 minutes of work
    try:
        asked = await say(axi, "2002", "La longère de Vergt est-elle libre ?")
        sent = [d for d in axi.channels["telegram"].sent  # type: ignore[attr-defined]
                if d.in_reply_to == asked]
        assert [d.kind for d in sent] == ["notice", "reply"]
        assert "très occupé" in sent[0].text and "vous répond" in sent[0].text
        assert sent[1].text == "Bonjour, la longère est encore disponible."
        # a message that must stay on the server waits for the local model, and says so
        before = len(anthropic_server.requests)
        mid = await axi.pipeline.accept(telegram("1001", "Mon prix plancher ?",
                                                 local_only=True))
        worker = asyncio.create_task(axi.pipeline.process_one(message_id=mid))
        await until(axi.pipeline.deliver_one, 10, message="no notice of the wait")
        notice = axi.channels["telegram"].sent[-1]  # type: ignore[attr-defined]
        assert notice.kind == "notice" and "il me faudra environ 15 minutes" in notice.text
        assert not worker.done()
    finally:
        axi.gate.release(busy)
    await worker
    await run_all(axi)
    assert len(anthropic_server.requests) == before
    reply = axi.channels["telegram"].sent[-1]  # type: ignore[attr-defined]
    assert reply.kind == "reply" and reply.in_reply_to == mid


async def test_the_reserve_sends_a_client_to_claude_while_ludo_chats_and_says_why(
        axi: Axi, anthropic_server: FakeAnthropic, ollama_server: FakeOllama) -> None:
    anthropic_server.reply = "Bonjour, la longère est encore disponible."
    axi.gate.reserve_s = 300.0  # AXI_LOCAL_RESERVE_S
    await say(axi, "1001", "Bonjour Axi, on fait le point ?")  # Ludo, on the local model
    assert anthropic_server.requests == []
    asked = await say(axi, "2002", "La longère de Vergt est-elle libre ?")
    sent = [d for d in axi.channels["telegram"].sent  # type: ignore[attr-defined]
            if d.in_reply_to == asked]
    assert [d.kind for d in sent] == ["notice", "reply"]
    assert "occupé par l'équipe" in sent[0].text and "vous répond" in sent[0].text
    assert sent[1].text == "Bonjour, la longère est encore disponible."
    assert len(anthropic_server.requests) == 1
    # what must stay on the server is answered by the local model, reserve or not
    mid = await axi.pipeline.accept(telegram("2002", "Mon budget maximum ?", local_only=True))
    await run_all(axi)
    reply = axi.channels["telegram"].sent[-1]  # type: ignore[attr-defined]
    assert reply.kind == "reply" and reply.in_reply_to == mid
    assert len(anthropic_server.requests) == 1


async def test_background_work_too_long_is_a_counted_failure_not_a_loop(
        axi: Axi, ollama_server: FakeOllama) -> None:
    await say(axi, "1001", "Retiens que j'habite à Peyrebrune.")
    axi.gate.background_max_s = 0.2
    ollama_server.delay_s = 1.0
    assert await axi.extractor.extract_one()  # done with, for now: not preempted
    [(_, meta)] = await _queued(axi)  # still queued, but counted and not due at once
    assert meta["extraction_essais"] == 1 and "BackgroundTooLong" in meta["extraction_erreur"]
    assert "extraction_apres" in meta
    assert not await axi.extractor.extract_one()  # nothing due: no loop on the same item


async def test_a_lane_waiting_for_the_model_lets_ludos_message_be_claimed(
        axi: Axi, ollama_server: FakeOllama) -> None:
    """Two lanes, two clients' messages first: one is being answered, the other waits at
    the gate. Ludo's message, written third, is claimed by a lane standing in for the
    waiting one, so it reaches the gate (without stand-ins it waited for a lane, behind
    that client) — and, nothing of the client's reply being shown yet, it goes first
    (llm/gate.py, yields_to): that client is answered right after him."""
    await axi.store.add_person("M. Martin", relation="client",
                               identities=[("telegram", "2003")])
    axi.pipeline.concurrency = 2
    axi.pipeline.max_lanes = 4
    ollama_server.delay_s = 0.8
    for who, said in (("2002", "Bonjour, la longère est libre ?"),
                      ("2003", "Bonjour, quel est le prix du moulin ?"),
                      ("1001", "Tu me rappelles le rendez-vous de demain ?")):
        await axi.pipeline.accept(telegram(who, said))
    stop = asyncio.Event()
    worker = asyncio.create_task(axi.pipeline.run_worker(stop))
    most_lanes = 0

    async def answered() -> list[str] | None:
        nonlocal most_lanes
        most_lanes = max(most_lanes, len(axi.pipeline._lanes))
        async with axi.store.db.sessions() as session:
            who = list((await session.scalars(text(
                "SELECT adresse FROM messages WHERE sens = 'sortant' ORDER BY id"))).all())
        return who if len(who) == 3 else None
    try:
        order = await until(answered, 30, interval=0.05)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 10)
    # Ludo first: the client in flight yielded (once) and is answered after him
    assert order[0] == "1001" and sorted(order) == ["1001", "2002", "2003"]
    assert 2 < most_lanes <= 4
    assert axi.pipeline.parked_lanes == 0 and not axi.pipeline._lanes


async def test_strangers_and_blocked_senders_do_not_hold_background_work_back(
        axi: Axi, ollama_server: FakeOllama) -> None:
    """Anyone may write every few seconds: only a known, unblocked person makes background
    work yield and wait for quiet — else a stranger could stop extraction and the veilles'
    summaries for ever."""
    await axi.store.add_person("Spammeur", relation="client",
                               identities=[("telegram", "6666")])
    await axi.store.update_person("Spammeur", bloque=True)
    await say(axi, "1001", "Retiens que j'habite à Peyrebrune.")
    ollama_server.delay_s = 0.8
    extraction = asyncio.create_task(axi.extractor.extract_one())
    await until(lambda: axi.gate.snapshot()["held"] == ["background"], 5)
    quiet_before = axi.gate._quiet_for()
    await axi.pipeline.accept(telegram("9999", "Bonjour, qui êtes-vous ?"))  # a stranger
    await axi.pipeline.accept(telegram("6666", "Encore moi !"))  # blocked
    await axi.pipeline.accept(telegram("1001", "ignored", verified=False))  # forged
    assert await extraction  # done, not preempted
    assert axi.gate.stats.preempted == 0
    assert axi.gate._quiet_for() >= quiet_before
    ollama_server.delay_s = 0.0
    await axi.pipeline.accept(telegram("2002", "Bonjour !"))  # a client: a person
    await until(lambda: axi.gate._quiet_for() < 1.0, 5)  # the hint runs beside accept


async def test_accepting_never_waits_for_the_hint_to_the_gate(axi: Axi) -> None:
    """A channel fetches its next batch (Telegram's next getUpdates) only once its batch is
    accepted: the hint that someone wrote (a database read: who is it?) runs beside it,
    never in its way, and still comes."""
    release = asyncio.Event()
    hinted: list[int] = []

    async def slow_hint(messages: Any) -> None:
        await release.wait()
        hinted.extend(m.id for m in messages)

    axi.pipeline.on_accept = slow_hint
    ids = await asyncio.wait_for(
        axi.pipeline.accept_batch([telegram("2002", "Bonjour !")], None), 5)
    assert hinted == []
    release.set()
    await until(lambda: hinted == ids, 5)


async def test_surplus_lanes_deciding_together_leave_the_configured_lanes(axi: Axi) -> None:
    """A stand-in lane ends once the lane it stood in for came back. Lanes deciding in the
    same turn of the event loop, none finished yet, each leave the count as they decide:
    counted as still there, they could all end, leaving no lane to answer anything
    accepted afterwards."""
    pipeline = axi.pipeline
    pipeline.concurrency = 1
    lanes = [asyncio.create_task(asyncio.sleep(30)) for _ in range(3)]
    pipeline._lanes.update(lanes)
    try:
        assert [pipeline._leave_if_surplus(lane) for lane in lanes] == [True, True, False]
        assert pipeline._lanes == {lanes[2]}
    finally:
        for lane in lanes:
            lane.cancel()
        pipeline._lanes.clear()
