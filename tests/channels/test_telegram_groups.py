"""Telegram groups end to end (real PTB, loopback Bot API, whole assistant): only the
groups allowed by id, only messages addressed to Axi (a mention, or a reply to one of its
messages), the answer in the group, threaded, streamed by edits (drafts exist in private
chats only) at the group pace. What Axi may say there is tests/bot/test_group_privacy.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path

import pytest

from bot.app import Axi
from channels.telegram_send import Pace
from memory.database import Database
from tests.channels.test_telegram import telegram_axi, texts_to
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.telegram_server import FakeTelegram
from tests.waiting import until

GROUP, OTHER_GROUP = -100777, -100888
PACE = Pace(per_chat_s=0.0, per_group_s=0.3, overall_per_s=1000, typing_every_s=0.05,
            typing_max_s=5.0, draft_every_s=0.0, draft_refresh_s=0.2, edit_every_s=0.1)


@pytest.fixture
async def tg(db: Database, database_url: str | None, test_data_dir: Path,
             ollama_server: FakeOllama, telegram_server: FakeTelegram
             ) -> AsyncIterator[tuple[Axi, FakeTelegram]]:
    async with telegram_axi(db, database_url, test_data_dir, ollama_server, telegram_server,
                            groups=frozenset({GROUP}), pace=PACE) as app:
        yield app, telegram_server


async def _all_fetched(fake: FakeTelegram) -> None:
    await until(lambda: not fake.pending_updates, 10, message="updates not confirmed")


async def test_axi_answers_in_an_allowed_group_only_when_addressed(
        tg: tuple[Axi, FakeTelegram], ollama_server: FakeOllama) -> None:
    axi, fake = tg
    fake.message(1001, "On visite la longère samedi ?", chat_id=GROUP, chat_type="supergroup")
    fake.message(1001, "@axi_test_bot bonjour", chat_id=OTHER_GROUP, chat_type="supergroup")
    asked = fake.message(1001, "@Axi_Test_Bot bonjour, tu es là ?", chat_id=GROUP,
                         chat_type="supergroup")
    await until(lambda: texts_to(fake, GROUP) == ["Salut, tu peux compter sur moi."], 20,
                message="no answer in the group")  # Ludo, tutoyé
    await _all_fetched(fake)
    [answer] = fake.chat_messages(GROUP)
    assert answer["reply_to_message"]["message_id"] == asked["message"]["message_id"]
    assert texts_to(fake, OTHER_GROUP) == [] and texts_to(fake, 1001) == []
    model_read = ollama_server.chat_bodies[-1]["messages"][-1]["content"]
    assert model_read.endswith("bonjour, tu es là ?") and "@" not in model_read.split(
        "Message :")[-1]
    assert "tout le monde dans le groupe" in ollama_server.chat_bodies[-1]["messages"][0][
        "content"]
    # only the addressed message was stored: the others never reached the inbox
    async def stored() -> list[str]:  # the edits can show the reply before it is committed
        history, _ = await axi.store.conversation_history(f"telegram:{GROUP}", current_id=0)
        return [h.texte for h in history if h.sens == "entrant"]
    assert await until(stored, 10) == ["bonjour, tu es là ?"]
    # drafts are for private chats: no placeholder, no draft in a group
    assert not [c for c in fake.drafts if int(c.params.get("chat_id", 0)) < 0]


async def test_a_reply_to_axi_in_the_group_is_addressed_to_it(
        tg: tuple[Axi, FakeTelegram]) -> None:
    _, fake = tg
    fake.message(2002, "@axi_test_bot Bonjour", chat_id=GROUP, chat_type="supergroup",
                 first_name="Julie")
    await until(lambda: texts_to(fake, GROUP) == ["Bonjour, vous pouvez compter sur nous."],
                20)  # a client: vouvoyée
    first = fake.chat_messages(GROUP)[0]
    fake.message(2002, "Et pour samedi ?", chat_id=GROUP, chat_type="supergroup",
                 reply_to=first["message_id"])
    await until(lambda: len(texts_to(fake, GROUP)) == 2, 20,
                message="a reply to Axi's message was not answered")


async def test_a_slow_answer_grows_by_edits_of_one_message_at_the_group_pace(
        tg: tuple[Axi, FakeTelegram], ollama_server: FakeOllama) -> None:
    _, fake = tg
    ollama_server.reply = ("La longère de Vergt se visite samedi à dix heures, avec le "
                           "propriétaire, et nous passerons ensuite voir la grange.")
    ollama_server.chunk_delay_s = 0.05
    fake.message(1001, "@axi_test_bot on visite quand ?", chat_id=GROUP,
                 chat_type="supergroup")
    await until(lambda: any("grange." in t for t in texts_to(fake, GROUP)), 30)
    await _all_fetched(fake)
    assert len(texts_to(fake, GROUP)) == 1  # streamed into one message, completed by edits
    writes = sorted(c.at for c in fake.calls
                    if c.method in ("sendMessage", "editMessageText")
                    and int(c.params.get("chat_id", 0)) == GROUP)
    assert len(writes) >= 2, "the answer was not streamed"
    gaps = [b - a for a, b in pairwise(writes)]
    assert min(gaps) >= PACE.per_group_s - 0.05, gaps


async def test_an_unknown_member_of_the_group_is_answered_as_the_public(
        tg: tuple[Axi, FakeTelegram]) -> None:
    """The group was allowed by Ludo: its members are answered there as the public would
    be (nothing private can be in that prompt), without asking Ludo who each one is."""
    _, fake = tg
    fake.message(5005, "@axi_test_bot Bonjour, vous avez des longères ?", chat_id=GROUP,
                 chat_type="supergroup", first_name="Inconnu")
    await until(lambda: texts_to(fake, GROUP) == ["Bonjour, vous pouvez compter sur nous."],
                20)
    await _all_fetched(fake)
    assert texts_to(fake, 1001) == []  # no pairing question
