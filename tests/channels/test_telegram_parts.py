"""A Telegram message sent in parts (a long push, a digest and its files): the outbox
records each part delivered (memory/send_attempts.py, migration 0023), so an attempt cut
between two parts resumes after the delivered ones, and only a part whose request may
have left is uncertain. The real python-telegram-bot against the loopback Bot API, the
whole Axi on the test database; the outbox is driven one delivery at a time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.app import Axi
from bot.channel import ChannelSet, OutgoingFile
from bot.notify import OWNER
from channels.telegram import TelegramChannel
from channels.telegram_send import Pace
from memory.database import Database
from tests.bot.test_pipeline import make_settings, scripted_reply
from tests.channels.test_telegram import telegram_config, texts_to
from tests.conftest import empty_tables
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.telegram_server import FakeTelegram
from tests.waiting import until

LUDO = 1001
LONG = "\n\n".join(f"Paragraphe {i} : " + "la longère de Vergt a du charme. " * 30
                   for i in range(6))
"""A push Telegram gets in two parts (over 4,096 characters)."""


@pytest.fixture
async def outbox_axi(db: Database, database_url: str | None, test_data_dir: Path,
                     ollama_server: FakeOllama, telegram_server: FakeTelegram
                     ) -> AsyncIterator[Axi]:
    """A whole Axi with its Telegram channel started but no loop running: the test calls
    the outbox itself. Ludo is known as Telegram 1001."""
    await empty_tables(db)
    ollama_server.reply = scripted_reply
    cfg = make_settings(ollama_server, None, database_url, test_data_dir,
                        AXI_QUIET_HOURS="off")
    pace = Pace(per_chat_s=0.0, overall_per_s=1000, typing_every_s=0.05, typing_max_s=5.0,
                draft_every_s=0.0, draft_refresh_s=0.2, edit_every_s=0.1)
    channel = TelegramChannel(telegram_config(telegram_server, pace=pace))
    async with Axi(cfg, ChannelSet({"telegram": channel}, frozenset({"telegram"}),
                                   None)) as app:
        await app.store.add_person("Ludo", relation="créateur", comment_interagir="tutoie",
                                   identities=[("telegram", str(LUDO))])
        await app.start_channels()
        yield app


async def queue_push(axi: Axi, **options: Any) -> int:
    [outbound] = await axi.notifier.notify(OWNER, LONG, key="long-push", **options)
    return outbound


async def set_marker(axi: Axi, message_id: int, parts: int, in_flight: bool) -> None:
    async with axi.store.db.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO envois_commences (message_id, parties, en_vol) VALUES (:i, :p, :f)"),
            {"i": message_id, "p": parts, "f": in_flight})


async def state(axi: Axi, message_id: int) -> tuple[str, str | None, Any]:
    async with axi.store.db.engine.connect() as conn:
        etat, erreur = (await conn.execute(text(
            "SELECT etat, erreur FROM messages WHERE id = :i"), {"i": message_id})).one()
        marker = (await conn.execute(text(
            "SELECT parties, en_vol FROM envois_commences WHERE message_id = :i"),
            {"i": message_id})).first()
    return str(etat), erreur, None if marker is None else tuple(marker)


async def test_a_push_in_two_parts_is_sent_whole_and_leaves_no_marker(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    outbound = await queue_push(outbox_axi)
    assert await outbox_axi.pipeline.deliver_one()
    parts = texts_to(telegram_server, LUDO)
    assert len(parts) == 2 and parts[0].startswith("Paragraphe 0 :")
    assert await state(outbox_axi, outbound) == ("envoye", None, None)


async def test_an_attempt_cut_after_its_first_part_resumes_with_the_second(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    """The marker says part 1 was delivered and nothing is under way (the process
    stopped, or was killed, between the two parts): only part 2 is sent."""
    outbound = await queue_push(outbox_axi)
    await set_marker(outbox_axi, outbound, parts=1, in_flight=False)
    assert await outbox_axi.pipeline.deliver_one()
    [second] = texts_to(telegram_server, LUDO)
    assert second.startswith("Paragraphe ") and not second.startswith("Paragraphe 0 :")
    assert await state(outbox_axi, outbound) == ("envoye", None, None)


async def test_a_part_whose_request_may_have_left_is_uncertain_not_resent(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    outbound = await queue_push(outbox_axi)
    await set_marker(outbox_axi, outbound, parts=1, in_flight=True)
    assert await outbox_axi.pipeline.deliver_one()
    assert telegram_server.chat_messages(LUDO) == []
    etat, erreur, marker = await state(outbox_axi, outbound)
    assert (etat, marker) == ("envoye", None)
    assert erreur is not None and erreur.startswith("envoi incertain") and "part 2" in erreur
    assert await outbox_axi.store.uncertain_sends() == 1


async def test_a_failed_second_part_is_retried_alone(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    """A 502 on part 2: the delivered part is counted in the database (not only in the
    process's memory), and the retry sends part 2 only."""
    outbound = await queue_push(outbox_axi)
    telegram_server.fail("sendMessage", 502, after=1)
    assert await outbox_axi.pipeline.deliver_one()
    assert len(texts_to(telegram_server, LUDO)) == 1
    etat, _, marker = await state(outbox_axi, outbound)
    assert (etat, marker) == ("a_envoyer", (1, False))
    async with outbox_axi.store.db.engine.begin() as conn:  # the retry is due now
        await conn.execute(text("UPDATE messages SET prochain_essai = now() WHERE id = :i"),
                           {"i": outbound})
    assert await outbox_axi.pipeline.deliver_one()
    parts = texts_to(telegram_server, LUDO)
    assert len(parts) == 2 and parts[0].startswith("Paragraphe 0 :")
    assert len(telegram_server.calls_to("sendMessage")) == 3  # part 1, the 502, part 2
    assert await state(outbox_axi, outbound) == ("envoye", None, None)


async def test_a_failure_of_the_first_part_leaves_no_marker(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    outbound = await queue_push(outbox_axi)
    telegram_server.fail("sendMessage", 502)
    assert await outbox_axi.pipeline.deliver_one()
    assert telegram_server.chat_messages(LUDO) == []
    etat, _, marker = await state(outbox_axi, outbound)
    assert (etat, marker) == ("a_envoyer", None)  # tried again later from the start


async def test_attachments_after_a_delivered_text_are_sent_once_each(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    files = (OutgoingFile("a.csv", "text/csv", b"a;b\n"),
             OutgoingFile("b.csv", "text/csv", b"c;d\n"))
    [outbound] = await outbox_axi.notifier.notify(OWNER, "Le point du jour.", key="digest",
                                                  attachments=files)
    await set_marker(outbox_axi, outbound, parts=2, in_flight=False)  # text and a.csv
    assert await outbox_axi.pipeline.deliver_one()
    names = [m["document"]["file_name"] for m in telegram_server.chat_messages(LUDO)
             if "document" in m]
    assert names == ["b.csv"] and telegram_server.calls_to("sendMessage") == []
    assert await state(outbox_axi, outbound) == ("envoye", None, None)


async def test_while_part_two_is_under_way_the_marker_says_it_may_arrive(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    """Killed now, the next claim must find part 2 uncertain, not resend it."""
    outbound = await queue_push(outbox_axi)
    telegram_server.send_delay_s = 0.5  # each part delivered, its answer late
    delivering = asyncio.create_task(outbox_axi.pipeline.deliver_one())
    await until(lambda: len(telegram_server.calls_to("sendMessage")) == 2, 10,
                message="part 2 never left")
    assert (await state(outbox_axi, outbound))[2] == (1, True)
    assert await delivering
    assert await state(outbox_axi, outbound) == ("envoye", None, None)


async def test_a_stop_while_a_part_is_under_way_keeps_it_uncertain(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    """`axi run` stopped (the outbox task cancelled) while Telegram holds part 1's request
    (delivered, its answer late): the request may have arrived, so the marker must stay
    and the next start must not send part 1 again. Found by a review: the sender forgot
    the request as the cancellation went through it, before the outbox asked whether one
    was in flight, so the marker was dropped and the whole push went out twice."""
    outbound = await queue_push(outbox_axi)
    telegram_server.send_delay_s = 1.5
    delivering = asyncio.create_task(outbox_axi.pipeline.deliver_one())
    await until(lambda: telegram_server.calls_to("sendMessage"), 10,
                message="part 1 never left")
    delivering.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await delivering
    telegram_server.send_delay_s = 0.0
    assert await state(outbox_axi, outbound) == ("a_envoyer", None, (0, True))
    assert await outbox_axi.pipeline.deliver_one()  # the next start
    parts = texts_to(telegram_server, LUDO)
    assert len(parts) == 1 and parts[0].startswith("Paragraphe 0 :")  # never twice
    etat, erreur, marker = await state(outbox_axi, outbound)
    assert (etat, marker) == ("envoye", None)
    assert erreur is not None and erreur.startswith("envoi incertain")


async def test_a_stop_before_a_delivered_part_is_recorded_keeps_it_uncertain(
        outbox_axi: Axi, telegram_server: FakeTelegram) -> None:
    """Part 1 came back delivered, and the stop came while its delivery was being recorded
    (the marker's row held by another transaction meanwhile): part 1 is not recorded, so
    the marker must keep saying a request may have arrived — else it is sent again."""
    outbound = await queue_push(outbox_axi)
    telegram_server.send_delay_s = 0.5
    delivering = asyncio.create_task(outbox_axi.pipeline.deliver_one())
    await until(lambda: telegram_server.calls_to("sendMessage"), 10,
                message="part 1 never left")
    async with outbox_axi.store.db.engine.connect() as holder:
        await holder.execute(text("BEGIN"))
        await holder.execute(text(
            "SELECT 1 FROM envois_commences WHERE message_id = :i FOR UPDATE"), {"i": outbound})

        async def recording() -> bool:  # the delivery's UPDATE waits for our row lock
            async with outbox_axi.store.db.engine.connect() as conn:
                return bool(await conn.scalar(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'UPDATE envois_commences%'")))

        await until(recording, 10, message="part 1's delivery never recorded")
        delivering.cancel()
        await asyncio.sleep(0.2)
        await holder.execute(text("ROLLBACK"))
    with contextlib.suppress(asyncio.CancelledError):
        await delivering
    telegram_server.send_delay_s = 0.0
    assert await outbox_axi.pipeline.deliver_one()  # the next start
    parts = texts_to(telegram_server, LUDO)
    assert [p[:14] for p in parts].count("Paragraphe 0 :") == 1  # never twice
