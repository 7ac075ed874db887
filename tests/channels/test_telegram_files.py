"""Files sent on Telegram are fetched (`getFile` and the download, real PTB against the
loopback Bot API) and kept with their message, in the same transaction; never for
strangers, never past the size limit, and a failed download loses nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.app import Axi
from channels.telegram_files import FAILED, NOT_FETCHED_FOR_STRANGERS, TOO_LARGE
from memory.database import Database
from memory.messages import StoredMessage
from tests.channels.test_telegram import telegram_axi, texts_to
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.telegram_server import FakeTelegram
from tests.waiting import until

MAX_BYTES = 1000


@pytest.fixture
async def tg(db: Database, database_url: str | None, test_data_dir: Path,
             ollama_server: FakeOllama, telegram_server: FakeTelegram
             ) -> AsyncIterator[tuple[Axi, FakeTelegram]]:
    async with telegram_axi(db, database_url, test_data_dir, ollama_server, telegram_server,
                            max_file_bytes=MAX_BYTES, file_timeout_s=5.0) as app:
        yield app, telegram_server


async def _stored(axi: Axi, update: dict) -> StoredMessage:  # type: ignore[type-arg]
    message = update["message"]
    external = f"{message['chat']['id']}:{message['message_id']}"

    async def find() -> int | None:
        async with axi.store.db.sessions() as session:
            return await session.scalar(text(  # type: ignore[no-any-return]
                "SELECT id FROM messages WHERE sens = 'entrant' AND canal = 'telegram' "
                "AND identifiant_externe = :e"), {"e": external})
    found = await until(find, 20, message=f"message {external} not stored")
    return await axi.store.get_message(found)


def downloads(fake: FakeTelegram) -> list[str]:
    return [c.params["file_path"] for c in fake.calls if c.method == "file"]


async def test_a_known_persons_photo_is_kept_with_the_message(
        tg: tuple[Axi, FakeTelegram]) -> None:
    axi, fake = tg
    update = fake.message(1001, photo=True, caption="La façade de la longère")
    stored = await _stored(axi, update)
    [kept] = await axi.store.received_files(stored.id)
    biggest = update["message"]["photo"][-1]
    assert kept.contenu == fake.file_content(biggest["file_id"]) and kept.rang == 0
    assert stored.pieces_jointes[0]["garde"] is True
    assert stored.texte == "La façade de la longère"
    # the same update again: the same message, no second copy of the file
    fake.raw_update(dict(update))
    await until(lambda: not fake.pending_updates, 10)
    assert len(await axi.store.received_files(stored.id)) == 1


async def test_a_photo_alone_is_acknowledged_as_kept(tg: tuple[Axi, FakeTelegram]) -> None:
    _, fake = tg
    fake.message(1001, photo=True)
    await until(lambda: texts_to(fake, 1001), 20)
    assert "— je garde le fichier" in texts_to(fake, 1001)[0]


async def test_too_large_failed_and_strangers_files_are_recorded_not_fetched(
        tg: tuple[Axi, FakeTelegram]) -> None:
    axi, fake = tg
    fake.add_file("gros", b"%PDF" + b"x" * (MAX_BYTES + 10), "documents/plan.pdf")
    big = fake.message(1001, document={"file_id": "gros", "file_name": "plan.pdf"})
    stranger = fake.message(3003, photo=True, first_name="Paul")
    stored_big, stored_stranger = await _stored(axi, big), await _stored(axi, stranger)
    assert stored_big.pieces_jointes[0]["manque"] == TOO_LARGE
    assert stored_stranger.pieces_jointes[0]["manque"] == NOT_FETCHED_FOR_STRANGERS
    assert stored_stranger.pieces_jointes[0]["ref"] == stranger["message"]["photo"][-1][
        "file_id"]  # still on Telegram, by id
    assert downloads(fake) == []
    assert await axi.store.received_files(stored_big.id) == []
    # a size Telegram did not announce is checked on getFile
    fake.add_file("cache", b"%PDF" + b"y" * (MAX_BYTES + 10), "documents/cache.pdf")
    hidden = fake.message(1001, document={"file_id": "cache", "file_name": "cache.pdf",
                                          "file_size": 10})
    assert (await _stored(axi, hidden)).pieces_jointes[0]["manque"] == TOO_LARGE
    assert downloads(fake) == []
    # getFile failing: the message is stored all the same, the file kept by id
    fake.fail("getFile", 502, times=1)
    failed = fake.message(1001, document={"file_name": "bail.pdf"}, caption="Le bail")
    stored_failed = await _stored(axi, failed)
    assert stored_failed.texte == "Le bail"
    assert stored_failed.pieces_jointes[0]["manque"] == FAILED
