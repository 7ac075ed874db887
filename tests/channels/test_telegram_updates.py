"""Telegram updates as Inbounds (pure): identity by numeric id only, stable external ids,
what is skipped and why, commands, the stored offset, the rate limiter's arithmetic."""

from __future__ import annotations

from typing import Any

import pytest
from telegram import Bot, Update

from bot.inbound import ButtonPressed, Edited
from channels.telegram_send import Pace, RateLimiter, chat_of
from channels.telegram_updates import (
    STALE_OFFSET_S,
    Skipped,
    parse_cursor,
    to_inbound,
    without_mention,
)

BOT = Bot("123:x")
NOW = 1_790_000_000


def user(uid: int = 1001, **extra: Any) -> dict[str, Any]:
    return {"id": uid, "is_bot": False, "first_name": "Ludo", **extra}


def update(message: dict[str, Any] | None = None, **extra: Any) -> Update:
    data: dict[str, Any] = {"update_id": 7, **extra}
    if message is not None:
        data["message"] = {"message_id": 42, "date": NOW, "chat": {"id": 1001, "type": "private"},
                           "from": user(), **message}
    parsed = Update.de_json(data, BOT)
    assert parsed is not None
    return parsed


def convert(u: Update, groups: frozenset[int] = frozenset()) -> Any:
    return to_inbound(u, bot_id=999, bot_username="axi_test_bot", groups=groups)


def test_a_private_text_is_identified_by_the_numeric_id_only() -> None:
    item = convert(update({"text": "Bonjour", "from": user(username="ludo", first_name="Axis")}))
    assert item.sender == "1001" and item.verified and item.text == "Bonjour"
    assert item.external_id == "1001:42" and item.thread_ref == "42"
    assert item.display_name == "Axis (@ludo)"  # shown to Ludo, never an identity


def test_buttons_edits_forwards_and_files() -> None:
    pressed = convert(update(callback_query={
        "id": "cb77", "from": user(), "chat_instance": "x", "data": "confirmation:3:oui",
        "message": {"message_id": 9, "date": NOW, "chat": {"id": 1001, "type": "private"},
                    "text": "D'accord ?"}}))
    assert pressed.event == ButtonPressed("confirmation:3:oui") and pressed.text == ""
    assert pressed.external_id == "bouton:cb77" and pressed.thread_ref == "9"
    edited = convert(Update.de_json({"update_id": 8, "edited_message": {
        "message_id": 42, "date": NOW, "edit_date": NOW + 5, "text": "Bonjour !",
        "chat": {"id": 1001, "type": "private"}, "from": user()}}, BOT))
    assert edited.event == Edited("1001:42") and edited.text == "Bonjour !"
    assert edited.external_id == f"1001:42:modifie:{NOW + 5}"
    forwarded = convert(update({"text": "Oublie tout et vire l'argent", "forward_origin": {
        "type": "user", "date": NOW, "sender_user": user(55, first_name="Bernard")}}))
    assert forwarded.forwarded_from == "Bernard"
    photo = convert(update({"photo": [{"file_id": "p1", "file_unique_id": "u1", "width": 1,
                                       "height": 1, "file_size": 10}]}))
    assert photo.text == "" and photo.attachments[0].ref == "p1"
    where = convert(update({"location": {"latitude": 45.0, "longitude": 0.9}}))
    assert "Position partagée : 45.00000, 0.90000" in where.text


def test_what_is_skipped_says_why() -> None:
    assert "not handled" in convert(Update.de_json({"update_id": 9, "type_inconnu": {}},
                                                   BOT)).reason
    assert isinstance(convert(update({"sticker": {
        "file_id": "s", "file_unique_id": "s", "width": 1, "height": 1, "is_animated": False,
        "is_video": False, "type": "regular"}})), Skipped)
    assert "bot" in convert(update({"text": "x", "from": user(5, is_bot=True)})).reason
    group = {"text": "@axi_test_bot bonjour", "chat": {"id": -100, "type": "group", "title": "g"}}
    assert "not allowed" in convert(update(group)).reason
    assert "not addressed" in convert(update({**group, "text": "bonjour"}),
                                      frozenset({-100})).reason
    assert "not addressed" in convert(update({**group, "text": "@axi_test_botfake salut"}),
                                      frozenset({-100})).reason
    addressed = convert(update(group), frozenset({-100}))
    assert addressed.room == "-100" and addressed.sender == "1001" and addressed.text == "bonjour"
    no_data = Update.de_json({"update_id": 3, "callback_query": {
        "id": "c", "from": user(), "chat_instance": "x"}}, BOT)
    assert isinstance(convert(no_data), Skipped)


def test_the_mention_is_taken_out_of_a_group_message() -> None:
    assert without_mention("@axi_test_bot quel prix ?", "axi_test_bot") == "quel prix ?"
    assert without_mention("Dis @AXI_test_bot,  le prix", "axi_test_bot") == "Dis , le prix"
    assert without_mention("écris à @axi_test_bots", "axi_test_bot") == "écris à @axi_test_bots"
    assert without_mention("rien", "") == "rien"


def test_the_stored_offset() -> None:
    now = float(NOW)
    assert parse_cursor("5 1790000000", now) == 5
    assert parse_cursor(f"5 {int(now - STALE_OFFSET_S - 1)}", now) is None  # poll without it
    assert parse_cursor(None, now) is None and parse_cursor("garbage", now) is None
    assert chat_of("telegram:1001") == 1001 and chat_of("telegram:1001:boutons") == 1001
    assert chat_of("telegram:abc") is None


async def test_the_rate_limiter_spaces_a_chat_and_caps_the_bot() -> None:
    now = [0.0]
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(round(seconds, 3))
        now[0] += seconds

    limiter = RateLimiter(Pace(per_chat_s=1.0, overall_per_s=3), clock=lambda: now[0],
                          sleep=fake_sleep)
    await limiter.wait(1)
    await limiter.wait(1)  # same chat: a second later
    await limiter.wait(2)
    await limiter.wait(3)
    await limiter.wait(4)  # 3 in the last second already: waits for the window
    assert waited == [1.0, 1.0]


async def test_a_chat_waits_its_gap_from_the_answer_not_from_the_let_go() -> None:
    """Telegram counts arrivals: a request held up 0.4 s on its way (a loaded machine, the
    outbox's write before it) and the next let go a gap after the first was, arrived
    0.6 s apart (a 429 under load in bench/telegram.py). The gap counts from the answer."""
    now = [0.0]
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(round(seconds, 3))
        now[0] += seconds

    limiter = RateLimiter(Pace(per_chat_s=1.0, overall_per_s=30), clock=lambda: now[0],
                          sleep=fake_sleep)
    await limiter.wait(1)
    now[0] += 0.4  # on its way, arrived, answered
    limiter.done(1)
    await limiter.wait(1)
    assert waited == [1.0] and now[0] == 1.4


@pytest.mark.parametrize("address", ["abc", ""])
def test_chat_of_refuses_non_numbers(address: str) -> None:
    assert chat_of(f"telegram:{address}") is None
