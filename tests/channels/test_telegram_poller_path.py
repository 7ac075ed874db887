"""The poller's path: between a `getUpdates` answer and the next `getUpdates`, updates that
arrive wait, so the channel does there only what must come before confirming a batch
(store it with its offset) and what shows the person at once that Axi read them ("…").
Real PTB against the loopback Bot API, the whole assistant on real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path

from sqlalchemy import text

from bot.app import Axi
from bot.channel import ChannelSet, KnownPerson
from channels.telegram import TelegramChannel
from memory.database import Database
from tests.bot.test_pipeline import make_settings, scripted_reply
from tests.channels.test_telegram import telegram_axi, telegram_config, texts_to
from tests.conftest import empty_tables
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.telegram_server import Call, FakeTelegram
from tests.waiting import until


async def test_a_new_sender_is_looked_up_once_per_batch_and_each_message_shows_its_draft(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama, telegram_server: FakeTelegram) -> None:
    """Three lines from someone the channel never saw, fetched in one batch: the database
    is asked once who they are (it was asked once per message, each ask in the way of the
    batch's storing), and each line still gets its "…" at once."""
    fake = telegram_server
    await empty_tables(db)
    ollama_server.reply = scripted_reply
    cfg = make_settings(ollama_server, None, database_url, test_data_dir,
                        AXI_QUIET_HOURS="off")
    channel = TelegramChannel(telegram_config(fake))
    async with Axi(cfg, ChannelSet({"telegram": channel}, frozenset({"telegram"}),
                                   None)) as app:
        await app.store.add_person("Mme Durand", relation="client",
                                   identities=[("telegram", "2002")])
        for line in ("Bonjour", "Vous êtes là ?", "La longère est-elle libre ?"):
            fake.message(2002, line)  # before the first poll: one batch
        asked: list[str] = []
        identify = app.services.identify

        async def counted(channel_name: str, address: str) -> KnownPerson | None:
            asked.append(address)
            return await identify(channel_name, address)

        app.services = dataclasses.replace(app.services, identify=counted)
        await app.start_channels()
        app.start_loops(extractor=False, maintenance=False, embeddings=False)
        await until(lambda: len(texts_to(fake, 2002)) == 3, 30, message="not all answered")
    assert asked == ["2002"]
    placeholders = [c for c in fake.drafts if c.params.get("text") == "…"]
    assert len(placeholders) == 3
    assert len({c.params["draft_id"] for c in placeholders}) == 3


async def test_a_lost_lock_cuts_the_long_poll_in_flight_and_polling_resumes(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama, telegram_server: FakeTelegram) -> None:
    """The poll runs in the poller's own task (no task per poll): the lock's watcher cuts a
    long poll by cancelling it, which ends that poll, not the channel."""
    fake = telegram_server
    async with telegram_axi(db, database_url, test_data_dir, ollama_server, fake,
                            poll_timeout_s=20, watchdog_s=40.0) as axi:
        channel = axi.channels["telegram"]
        await until(lambda: channel.polling and fake.calls_to("getUpdates"), 10)  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)  # a 20 s poll is in flight
        async with axi.db.engine.begin() as conn:  # the lock's connection dies
            await conn.execute(text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                "AND granted AND pid <> pg_backend_pid() AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())"))
        cut = time.monotonic()
        await until(lambda: channel.lock_losses == 1, 5)  # type: ignore[attr-defined]
        assert time.monotonic() - cut < 3.0  # not the 20 s of the poll
        fake.message(1001, "Toujours là ?")  # the lock is taken again, polling goes on
        await until(lambda: texts_to(fake, 1001), 30, message="polling did not resume")
        assert len(texts_to(fake, 1001)) == 1


async def test_the_placeholder_shows_while_axis_own_loop_is_busy(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama, telegram_server: FakeTelegram) -> None:
    """The long poll and the "…" run on the poller's own loop (a thread): a message that
    arrives while Axi's loop is busy elsewhere (here: blocked for 3 s) shows its
    placeholder at once, not once Axi's loop is free again; the message is then stored
    and answered as usual."""
    fake = telegram_server
    async with telegram_axi(db, database_url, test_data_dir, ollama_server, fake):
        await _placeholder_while_blocked(fake)


async def _placeholder_while_blocked(fake: FakeTelegram) -> None:
    fake.message(1001, "Bonjour")
    await until(lambda: texts_to(fake, 1001), 30, message="no first reply")  # Ludo is known
    before = len(placeholders_to(fake, 1001))
    blocking = threading.Event()
    pushed: list[float] = []

    def push() -> None:  # Ludo writes while Axi's loop is blocked
        blocking.wait(10)
        time.sleep(0.1)
        pushed.append(time.monotonic())
        fake.message(1001, "Tu as eu le notaire ?")

    def block() -> None:
        blocking.set()
        time.sleep(3.0)  # Axi's loop runs nothing else meanwhile

    writer = threading.Thread(target=push)
    writer.start()
    asyncio.get_running_loop().call_soon(block)
    await asyncio.sleep(0)  # the loop runs `block` now
    await asyncio.to_thread(writer.join)
    await until(lambda: len(placeholders_to(fake, 1001)) > before, 10, message="no placeholder")
    shown = placeholders_to(fake, 1001)[before]
    assert shown.at - pushed[0] < 2.0  # Axi's loop was blocked until pushed + 2.9 s
    await until(lambda: len(texts_to(fake, 1001)) == 2, 30, message="no second reply")


def placeholders_to(fake: FakeTelegram, chat_id: int) -> list[Call]:
    return [c for c in fake.drafts if c.params.get("text") == "…"
            and c.params.get("chat_id") == chat_id]


async def test_a_person_blocked_since_stops_getting_the_placeholder(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama, telegram_server: FakeTelegram) -> None:
    """The poller's thread shows "…" from the known-senders cache, which it cannot refresh
    (the database is on Axi's loop): Axi's loop refreshes a stale entry behind it, so a
    person Ludo blocked stops seeing "…" once the cache's time is up."""
    fake = telegram_server
    async with telegram_axi(db, database_url, test_data_dir, ollama_server, fake) as axi:
        channel = axi.channels["telegram"]
        fake.message(2002, "Bonjour")
        await until(lambda: texts_to(fake, 2002), 30, message="no first reply")
        assert len(placeholders_to(fake, 2002)) == 1
        await axi.store.update_person("Mme Durand", bloque=True)
        channel._known.ttl_s = 0.0  # type: ignore[attr-defined]  # stale from now on
        fake.message(2002, "Vous êtes là ?")  # "…" from the stale cache, refreshed behind
        await until(lambda: channel._known.cached("2002") is False, 10,  # type: ignore[attr-defined]
                    message="the stale entry was never refreshed")
        fake.message(2002, "Allô ?")

        async def settled() -> bool:
            return await axi.store.pending_counts() == {}
        await until(settled, 20, message="messages still pending")
        assert len(placeholders_to(fake, 2002)) == 2  # none for "Allô ?"
        assert texts_to(fake, 2002) == [texts_to(fake, 2002)[0]]  # nothing answered since
