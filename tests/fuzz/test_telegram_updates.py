"""Telegram updates (channels/telegram_updates.py) from generated Bot API JSON.

What this proves, on `Update.de_json` of generated dicts then `to_inbound`:

- every update shaped as the Bot API documents it (any mix of optional fields, huge and
  hostile strings, photos, files, locations, contacts, forwards, replies, buttons, edits,
  groups allowed or not, bots) becomes an `Inbound` or a `Skipped` with its reason, never
  an exception; the sender is the numeric user id, never a name; nothing is lost: a
  private message's text reaches the Inbound unchanged, and a file its attachment;
- identity: a group message is taken only from an allowed group and only when addressed
  to Axi, a bot's message never;
- any JSON object at all, read as the channel reads one update (`read_update`, then
  `to_inbound`), is an `Inbound` or a `Skipped` with its reason, never an exception, and
  the offset moves past it when its update id is a number, never from one that is not.
  The shapes that once stopped the poll for good (PTB failing with an exception the poller
  did not expect, `to_inbound` failing on what PTB read, an update id that is a string)
  are kept as explicit examples; the last test proves it end to end on the loopback Bot
  API: an update PTB cannot read blocks none behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from telegram import Bot, Update

from bot.app import Axi
from bot.inbound import ButtonPressed, Edited, Inbound
from channels.telegram_updates import Skipped, next_offset, read_update, to_inbound
from memory.database import Database
from tests.channels.test_telegram import telegram_axi
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.telegram_server import FakeTelegram
from tests.fuzz.support import fuzz, hostile_text, json_values, scalar
from tests.waiting import until

BOT = Bot("123:x")
BOT_ID, BOT_NAME = 999, "axi_test_bot"
GROUP = -100123
NOW = 1_790_000_000
Draw = Callable[[st.SearchStrategy[Any]], Any]


# ------------------------------------------------------------------ the Bot API's shapes
def text(max_size: int = 60) -> st.SearchStrategy[str]:
    """A string as Telegram sends it (valid UTF-8: no lone surrogate), hostile otherwise."""
    return hostile_text(max_size).map(lambda s: s.encode("utf-8", "replace").decode("utf-8"))


ids = st.integers(min_value=1, max_value=2**52)


@st.composite
def users(draw: Draw, *, bot: bool | None = None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": draw(ids), "first_name": draw(text(30)),
                            "is_bot": draw(st.booleans()) if bot is None else bot}
    for name in ("last_name", "username", "language_code"):
        if draw(st.booleans()):
            user[name] = draw(text(20))
    return user


@st.composite
def chats(draw: Draw, user: dict[str, Any]) -> dict[str, Any]:
    kind = draw(st.sampled_from(["private", "private", "group", "supergroup", "channel"]))
    if kind == "private":
        return {"id": user["id"], "type": "private", "first_name": user["first_name"]}
    return {"id": draw(st.sampled_from([GROUP, -1, -(10**12)])), "type": kind,
            "title": draw(text(20))}


def file_fields(draw: Draw) -> dict[str, Any]:
    return {"file_id": draw(text(20)) or "f", "file_unique_id": "u",
            **({"file_size": draw(st.integers(0, 2**40))} if draw(st.booleans()) else {})}


@st.composite
def messages(draw: Draw, depth: int = 0) -> dict[str, Any]:
    user = draw(users())
    message: dict[str, Any] = {"message_id": draw(st.integers(1, 2**31 - 1)),
                               "date": draw(st.integers(0, 4_000_000_000)),
                               "chat": draw(chats(user))}
    if draw(st.integers(0, 5)):
        message["from"] = user
    if draw(st.booleans()):
        mention = draw(st.sampled_from(["", f"@{BOT_NAME} ", f"@{BOT_NAME.upper()}",
                                        f"@{BOT_NAME}fake "]))
        message["text"] = mention + draw(text(200))
    if draw(st.integers(0, 3)) == 0:
        message["caption"] = draw(text(50))
    if draw(st.integers(0, 4)) == 0:
        message["photo"] = [{**file_fields(draw), "width": 1, "height": 1}
                            for _ in range(draw(st.integers(1, 3)))]
    if draw(st.integers(0, 4)) == 0:
        document = file_fields(draw)
        if draw(st.booleans()):
            document["file_name"] = draw(text(40))
        if draw(st.booleans()):
            document["mime_type"] = draw(text(20))
        message["document"] = document
    if draw(st.integers(0, 6)) == 0:
        message["voice"] = {**file_fields(draw), "duration": 3}
    if draw(st.integers(0, 6)) == 0:
        message["location"] = {"latitude": draw(st.floats(-90, 90)),
                               "longitude": draw(st.floats(-180, 180))}
    if draw(st.integers(0, 6)) == 0:
        message["contact"] = {"phone_number": draw(text(20)), "first_name": draw(text(20))}
    if draw(st.integers(0, 5)) == 0:
        origin_kind = draw(st.sampled_from(["user", "hidden_user", "chat", "channel"]))
        origin: dict[str, Any] = {"type": origin_kind, "date": NOW}
        if origin_kind == "user":
            origin["sender_user"] = draw(users())
        elif origin_kind == "hidden_user":
            origin["sender_user_name"] = draw(text(20))
        else:
            key = "chat" if origin_kind == "channel" else "sender_chat"
            origin[key] = {"id": -5, "type": "channel", "title": draw(text(20))}
            if origin_kind == "channel":
                origin["message_id"] = 1
        message["forward_origin"] = origin
    if depth == 0 and draw(st.integers(0, 4)) == 0:
        reply = draw(messages(depth=1))
        if draw(st.booleans()):
            reply["from"] = {"id": BOT_ID, "is_bot": True, "first_name": "Axi"}
        message["reply_to_message"] = reply
    return message


@st.composite
def updates(draw: Draw) -> dict[str, Any]:
    update: dict[str, Any] = {"update_id": draw(st.integers(0, 2**31 - 1))}
    kind = draw(st.sampled_from(["message", "message", "edited_message", "callback_query",
                                 "channel_post", "unknown", "nothing"]))
    if kind in ("message", "channel_post"):
        update[kind] = draw(messages())
    elif kind == "edited_message":
        update[kind] = {**draw(messages()), "edit_date": draw(st.integers(0, 4_000_000_000))}
    elif kind == "callback_query":
        query: dict[str, Any] = {"id": draw(text(20)) or "q", "from": draw(users()),
                                 "chat_instance": "c"}
        if draw(st.integers(0, 3)):  # Axi's own data mostly; blank, NUL, anything else too
            query["data"] = draw(st.one_of(text(64).map("confirmation:".__add__), text(64)))
        if draw(st.booleans()):
            query["message"] = draw(messages(depth=1))
        update[kind] = query
    elif kind == "unknown":  # a type newer than PTB (kept in api_kwargs)
        update["type_inconnu"] = draw(json_values())
    return update


def convert(update: Update) -> Inbound | Skipped:
    return to_inbound(update, bot_id=BOT_ID, bot_username=BOT_NAME, groups=frozenset({GROUP}))


@fuzz(250)
@given(updates())
def test_every_update_of_the_bot_api_is_an_inbound_or_a_skip_with_its_reason(
        data: dict[str, Any]) -> None:
    update = Update.de_json(data, BOT)
    assert update is not None
    item = convert(update)
    if isinstance(item, Skipped):
        assert item.reason and item.update_id == data["update_id"]
        return
    assert isinstance(item, Inbound) and item.verified and item.channel == "telegram"
    query = data.get("callback_query")
    if query is not None:  # a button: its data, from the presser's id
        assert item.sender == str(query["from"]["id"])
        assert isinstance(item.event, ButtonPressed) and query["data"].startswith(item.event.data)
        assert query["data"].replace("\x00", "").strip()
        return
    message = data.get("message") or data["edited_message"]
    user, chat = message["from"], message["chat"]
    assert not user["is_bot"] and item.sender == str(user["id"])  # the id, never a name
    assert item.external_id.startswith(f"{chat['id']}:{message['message_id']}")
    assert isinstance(item.event, Edited) == ("edited_message" in data)
    if chat["type"] == "private":
        assert item.room is None
        if "location" not in message and "contact" not in message:  # nothing lost
            assert item.text == (message.get("text") or message.get("caption") or "")
    else:
        assert chat["id"] == GROUP and item.room == str(GROUP)
    files = sum(1 for k in ("document", "voice", "photo") if k in message)
    assert len(item.attachments) == files


# ------------------------------------------------------------------ any JSON object
JUNK_KEYS = ["update_id", "message", "edited_message", "callback_query", "message_id", "date",
             "chat", "from", "id", "type", "text", "entities", "photo", "location", "data"]


def junk_is_handled(data: Any) -> None:
    """The contract the channel relies on, for ANY JSON value read as one update: PTB reads
    it or it is skipped, what PTB reads becomes an Inbound or a Skipped with its reason
    (never an exception), and the offset moves past it when its update id is a number,
    never from one that is not."""
    read = read_update(data, BOT)
    item = read if isinstance(read, Skipped) else convert(read)
    assert isinstance(item, Inbound | Skipped)
    given_id = data.get("update_id") if isinstance(data, dict) else None
    an_id = given_id if type(given_id) is int and 0 <= given_id < 2**62 else None
    if isinstance(item, Skipped):
        assert item.reason and item.update_id == an_id
    else:
        assert an_id is not None
    assert next_offset([read]) == (an_id + 1 if an_id is not None else None)


VALID: dict[str, Any] = {"message_id": 1, "date": NOW, "chat": {"id": 7, "type": "private"},
                         "from": {"id": 7, "is_bot": False, "first_name": "Ludo"}, "text": "Bonjour"}


@fuzz(150)
@example({"update_id": 1, "message": {**VALID, "entities": [5]}})  # PTB: AttributeError
@example({"update_id": 1, "message": {**VALID, "date": 10**20}})  # PTB: OverflowError
@example([{"update_id": 1}])
@given(st.one_of(json_values(JUNK_KEYS).filter(lambda v: isinstance(v, dict)), json_values()))
def test_an_update_ptb_cannot_read_is_skipped_with_its_reason(data: Any) -> None:
    junk_is_handled(data)


@fuzz(150)
@example({"update_id": 1, "message": {**VALID, "text": 5}})
@example({"update_id": 1, "callback_query": {"id": "q", "chat_instance": "c", "data": "oui"}})
@example({"update_id": 1, "callback_query": {"id": "q", "chat_instance": "c", "data": " ",
                                             "from": VALID["from"]}})
@example({"update_id": 1, "callback_query": {"id": "q", "chat_instance": "c", "data": "\x00",
                                             "from": VALID["from"]}})
@example({"update_id": 1, "message": {**VALID, "location": {"latitude": "a", "longitude": 1}}})
@example({"update_id": 1, "message": {**VALID, "document": {
    "file_id": 5, "file_unique_id": "u", "file_size": "grand", "file_name": ["x"]}}})
@given(json_values(JUNK_KEYS).filter(lambda v: isinstance(v, dict)))
def test_an_update_ptb_reads_but_axi_cannot_is_skipped_with_its_reason(
        data: dict[str, Any]) -> None:
    junk_is_handled(data)


@fuzz(50)
@example("abc", {"update_id": 0, "message": VALID})
@example(True, {"update_id": 0, "message": VALID})
@example(-1, {"update_id": 0, "message": VALID})
@example(2**70, {"update_id": 0, "message": VALID})
@given(st.one_of(json_values(), st.floats()), updates())
def test_an_update_id_that_is_no_number_never_moves_the_offset(
        update_id: Any, data: dict[str, Any]) -> None:
    junk_is_handled({**data, "update_id": update_id})
    read = read_update({**data, "update_id": update_id}, BOT)
    is_an_id = type(update_id) is int and 0 <= update_id < 2**62
    behind = read_update({"update_id": 41}, BOT)  # the next one of the batch
    assert next_offset([read, behind]) == max(update_id if is_an_id else 0, 41) + 1


@pytest.fixture
async def polling(db: Database, database_url: str | None, test_data_dir: Path,
                  ollama_server: FakeOllama, telegram_server: FakeTelegram
                  ) -> AsyncIterator[tuple[Axi, FakeTelegram]]:
    async with telegram_axi(db, database_url, test_data_dir, ollama_server,
                            telegram_server) as app:
        yield app, telegram_server


async def test_an_update_ptb_fails_on_with_any_exception_blocks_no_later_one(
        polling: tuple[Axi, FakeTelegram]) -> None:
    axi, fake = polling
    fake.raw_update({"message": {**VALID, "entities": [5]}})
    fake.message(1001, "Et celui-ci ?")

    async def stored() -> bool:
        return bool(await scalar(axi, "SELECT count(*) FROM messages WHERE texte = :t",
                                 t="Et celui-ci ?"))
    await until(stored, 3, message="the message after an unreadable update was never stored")
