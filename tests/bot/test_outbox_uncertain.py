"""The outbox's one rule for a send that may have been delivered (bot/pipeline.py
`deliver_one`): reported by the channel (a timeout after the request left) or found by
its attempt marker (the process died between the send and its commit), it is recorded as
sent — uncertain, counted on /health — and never sent again; a channel whose send is
repeatable takes no marker. The real crash is in
tests/channels/test_telegram_processes.py; the real Telegram timeout in
tests/channels/test_telegram_uncertain.py."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import text

from bot.app import Axi
from bot.channel import Delivery, SendError
from tests.bot.test_pipeline import run_all, sent, telegram


async def _outbound(axi: Axi) -> list[tuple[str, str | None]]:
    async with axi.db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT etat, erreur FROM messages WHERE sens = 'sortant' ORDER BY id"))).all()
    return [(r.etat, r.erreur) for r in rows]


async def _markers(axi: Axi) -> int:
    async with axi.db.engine.connect() as conn:
        return int(await conn.scalar(text("SELECT count(*) FROM envois_commences")) or 0)


async def test_a_send_that_timed_out_after_leaving_is_not_sent_again(axi: Axi) -> None:
    channel = axi.channels["telegram"]
    calls: list[Delivery] = []

    async def timing_out(delivery: Delivery) -> str | None:
        calls.append(delivery)
        raise SendError("timed out after sending", uncertain=True)

    channel.send = timing_out  # type: ignore[method-assign]
    await axi.pipeline.accept(telegram("1001", "Bonjour"))
    await run_all(axi)
    async with axi.db.engine.begin() as conn:  # whatever its retry time, it is due now
        await conn.execute(text("UPDATE messages SET prochain_essai = now() WHERE sens='sortant'"))
    await run_all(axi)
    assert len(calls) == 1
    [(etat, erreur)] = await _outbound(axi)
    assert etat == "envoye" and erreur == "envoi incertain : timed out after sending"
    assert await axi.store.uncertain_sends() == 1 and await _markers(axi) == 0
    assert (await axi.health())["components"]["queues"]["uncertain_sends_24h"] == 1


async def test_a_marker_left_by_a_crash_stops_a_second_send(axi: Axi) -> None:
    channel = axi.channels["telegram"]
    channel.fail_next = 1  # type: ignore[attr-defined]
    await axi.pipeline.accept(telegram("1001", "Bonjour"))
    await run_all(axi)  # the first attempt failed cleanly: no marker left, retried later
    assert sent(axi) == [] and await _markers(axi) == 0
    [(etat, _)] = await _outbound(axi)
    assert etat == "a_envoyer"
    # as a process killed after the send and before its commit leaves it
    async with axi.db.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO envois_commences (message_id) SELECT id FROM messages "
            "WHERE sens = 'sortant'"))
        await conn.execute(text("UPDATE messages SET prochain_essai = now() WHERE sens='sortant'"))
    await run_all(axi)
    assert sent(axi) == []
    [(etat, erreur)] = await _outbound(axi)
    assert etat == "envoye" and erreur is not None and erreur.startswith("envoi incertain : ")
    assert await _markers(axi) == 0


async def test_a_repeatable_channel_takes_no_marker(axi: Axi) -> None:
    channel = axi.channels["telegram"]
    seen: list[int] = []

    async def send(delivery: Delivery) -> str | None:
        seen.append(await _markers(axi))
        return "ok"

    channel.send = send  # type: ignore[method-assign]
    await axi.pipeline.accept(telegram("1001", "Bonjour"))
    await run_all(axi)
    channel.repeatable_send = True  # type: ignore[attr-defined]
    await axi.pipeline.accept(telegram("1001", "Encore"))
    await run_all(axi)
    assert seen == [1, 0] and await _markers(axi) == 0


async def test_a_send_stopped_before_any_request_left_is_sent_normally_later(axi: Axi) -> None:
    """`axi run` stopped (the outbox task cancelled) while the channel waited for its pace:
    nothing left, so the marker goes and the next start sends the reply — it is not
    recorded as uncertain (found by a review: a routine restart dropped replies)."""
    channel = axi.channels["telegram"]
    pacing = asyncio.Event()

    async def paced(delivery: Delivery) -> str | None:
        pacing.set()
        await asyncio.sleep(3600)  # waiting for the chat's turn: no request yet
        return None

    channel.send = paced  # type: ignore[method-assign]
    channel.request_in_flight = lambda message_id: False  # type: ignore[attr-defined]
    await axi.pipeline.accept(telegram("1001", "Bonjour"))
    await axi.pipeline.process_one()
    outbox = asyncio.create_task(axi.pipeline.deliver_one())
    await asyncio.wait_for(pacing.wait(), 10)
    assert await _markers(axi) == 1
    outbox.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await outbox
    assert await _markers(axi) == 0
    del channel.send  # type: ignore[attr-defined]
    await run_all(axi)
    assert len(sent(axi)) == 1
    [(etat, erreur)] = await _outbound(axi)
    assert etat == "envoye" and erreur is None


async def test_a_send_stopped_with_a_request_in_flight_stays_uncertain(axi: Axi) -> None:
    channel = axi.channels["telegram"]
    leaving = asyncio.Event()

    async def in_flight(delivery: Delivery) -> str | None:
        leaving.set()
        await asyncio.sleep(3600)  # the request is out; its answer never comes
        return None

    channel.send = in_flight  # type: ignore[method-assign]
    channel.request_in_flight = lambda message_id: True  # type: ignore[attr-defined]
    await axi.pipeline.accept(telegram("1001", "Bonjour"))
    await axi.pipeline.process_one()
    outbox = asyncio.create_task(axi.pipeline.deliver_one())
    await asyncio.wait_for(leaving.wait(), 10)
    outbox.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await outbox
    assert await _markers(axi) == 1
    del channel.send  # type: ignore[attr-defined]
    await run_all(axi)
    assert sent(axi) == []
    [(etat, erreur)] = await _outbound(axi)
    assert etat == "envoye" and erreur is not None and erreur.startswith("envoi incertain")


async def test_a_send_failing_outside_the_contract_never_holds_the_queue(axi: Axi) -> None:
    """A channel's send raising something else than SendError (a bug; a mail that could
    not be built): a failure like any other, retried later, and the messages queued
    after it go (found by a review: the oldest due message is claimed first, so it was
    claimed, raised and claimed again at every pass, and nothing else left)."""
    channel = axi.channels["telegram"]
    recording = channel.send

    async def broken_for_one(delivery: Delivery) -> str | None:
        if delivery.address == "1001":
            raise RuntimeError("boom")
        return await recording(delivery)

    channel.send = broken_for_one  # type: ignore[method-assign]
    channel.request_in_flight = lambda message_id: False  # type: ignore[attr-defined]
    await axi.pipeline.accept(telegram("1001", "Bonjour"))
    await axi.pipeline.accept(telegram("1002", "Bonjour"))
    await run_all(axi)
    assert [d.address for d in sent(axi)] == ["1002"]
    async with axi.db.engine.connect() as conn:  # the reply, and the question who 1002 is
        rows = (await conn.execute(text(
            "SELECT etat, erreur, tentatives, prochain_essai > now() AS later FROM messages "
            "WHERE sens = 'sortant' AND adresse = '1001'"))).all()
    assert rows and {(r.etat, r.erreur, r.tentatives, r.later) for r in rows} == {
        ("a_envoyer", "RuntimeError: boom", 1, True)}
    assert await _markers(axi) == 0  # nothing left: tried again as if never tried


async def test_a_send_failing_outside_the_contract_with_a_request_out_is_uncertain(
        axi: Axi) -> None:
    """The same fault while a request may have left (or the channel cannot tell): the
    rule for an uncertain send, never a second send."""
    channel = axi.channels["telegram"]

    async def broken(delivery: Delivery) -> str | None:
        raise RuntimeError("boom")

    channel.send = broken  # type: ignore[method-assign]
    channel.request_in_flight = lambda message_id: True  # type: ignore[attr-defined]
    await axi.pipeline.accept(telegram("1001", "Bonjour"))
    await run_all(axi)
    [(etat, erreur)] = await _outbound(axi)
    assert etat == "envoye" and erreur == "envoi incertain : RuntimeError: boom"
    assert await _markers(axi) == 0
