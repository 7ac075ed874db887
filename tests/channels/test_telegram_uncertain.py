"""A Telegram send that timed out after the request left (the real python-telegram-bot
against the loopback Bot API, which delivers then answers late): the sender reports it
retried once, as the Telegram issue asks, then reported uncertain, so the outbox never
sends it again (bot/pipeline.py); one that timed out before leaving is an ordinary
retryable failure."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from telegram import Bot
from telegram.request import HTTPXRequest

from bot.channel import Delivery, OutgoingFile, SendError
from channels.telegram_send import Pace, Sender
from tests.fakes.telegram_server import FakeTelegram

FAST = Pace(per_chat_s=0.0, overall_per_s=1000, typing_every_s=0.05, typing_max_s=5.0,
            draft_every_s=0.0, draft_refresh_s=0.2, edit_every_s=0.1)
LUDO = 1001


class Progress:
    """What the outbox records of a send in parts (bot/pipeline.py does it in the
    database): the parts delivered, for the next attempt's `resume_from`."""

    def __init__(self) -> None:
        self.parts = 0
        self.told: list[tuple[str, int]] = []

    async def leaving(self, part: int) -> None:
        self.told.append(("leaving", part))

    async def delivered(self, parts: int) -> None:
        self.told.append(("delivered", parts))
        self.parts = parts


def reply(message_id: int) -> Delivery:
    return Delivery(message_id=message_id, channel="telegram", address=str(LUDO),
                    conversation=f"telegram:{LUDO}", text="Bien reçu.", in_reply_to=None,
                    thread_ref=None)


async def test_a_timeout_after_the_request_left_is_retried_once_then_uncertain(
        telegram_server: FakeTelegram) -> None:
    telegram_server.send_delay_s = 1.0
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url,
                   request=HTTPXRequest(read_timeout=0.2)) as bot:
        sender = Sender(bot, FAST)
        with pytest.raises(SendError) as first:
            await sender.send(reply(1))
        with pytest.raises(SendError) as second:
            await sender.send(reply(1))
    assert first.value.retryable and not first.value.uncertain
    assert second.value.uncertain and not second.value.retryable
    assert sender.timeouts_after_sending == 2
    # both requests reached Telegram: the one duplicate the issue accepts, no third
    assert [m["text"] for m in telegram_server.chat_messages(LUDO)] == ["Bien reçu."] * 2


async def test_a_timeout_before_the_request_left_is_retried(
        telegram_server: FakeTelegram) -> None:
    """No connection free in time (PTB's pool timeout): nothing left, so nothing is
    uncertain — the outbox retries as after any network failure."""
    telegram_server.send_delay_s = 1.0
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url,
                   request=HTTPXRequest(connection_pool_size=1, pool_timeout=0.2,
                                        read_timeout=5.0)) as bot:
        sender = Sender(bot, FAST)
        first = asyncio.create_task(sender.send(reply(2)))
        await asyncio.sleep(0.3)  # the only connection waits for its late answer
        with pytest.raises(SendError) as caught:
            await sender.send(reply(3))
        await first
    assert not caught.value.uncertain and caught.value.retryable
    assert sender.timeouts_after_sending == 0
    assert len(telegram_server.chat_messages(LUDO)) == 1


async def test_attachments_paced_apart_are_each_sent_once(telegram_server: FakeTelegram) -> None:
    """A message with two attachments at Telegram's real per-chat pace: every part after
    the first goes back to the outbox (postponed) and comes again, resuming after the
    parts the outbox recorded; the text and each file are sent once (the first file was
    sent again at every pass, for ever)."""
    paced = Pace(per_chat_s=0.3, overall_per_s=1000, typing_every_s=0.05, typing_max_s=5.0,
                 draft_every_s=0.0, draft_refresh_s=0.2, edit_every_s=0.1)
    files = (OutgoingFile("a.csv", "text/csv", b"a;b\n"),
             OutgoingFile("b.csv", "text/csv", b"c;d\n"))
    delivery = Delivery(message_id=7, channel="telegram", address=str(LUDO),
                        conversation=f"telegram:{LUDO}", text="Le point du jour.",
                        in_reply_to=None, thread_ref=None, kind="push", attachments=files)
    progress = Progress()
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url) as bot:
        sender = Sender(bot, paced)
        for _ in range(10):
            try:
                await sender.send(replace(delivery, resume_from=progress.parts,
                                          progress=progress))
                break
            except SendError as exc:
                assert exc.postponed, exc
                await asyncio.sleep(exc.retry_after or 0.1)
        else:
            raise AssertionError("never finished")
    assert len(telegram_server.calls_to("sendMessage")) == 1
    names = [m["document"]["file_name"] for m in telegram_server.chat_messages(LUDO)
             if "document" in m]
    assert names == ["a.csv", "b.csv"]
    # `delivered` after all but the last part; each part goes in an attempt of its own
    # when the pace sends it back to the outbox (no `leaving`: the outbox marks each
    # attempt begun), but on a loaded machine a request may take most of the chat's
    # 0.3 s, the next turn is then near enough to wait for (POSTPONE_ABOVE_S), and that
    # part goes in the same attempt, told `leaving`
    assert [t for t in progress.told if t[0] == "delivered"] == [("delivered", 1),
                                                                ("delivered", 2)]
    assert set(progress.told) <= {("delivered", 1), ("delivered", 2), ("leaving", 1),
                                  ("leaving", 2)}
    for step in (("leaving", 1), ("leaving", 2)):  # part k leaves once k parts are in
        if step in progress.told:
            assert progress.told.index(("delivered", step[1])) < progress.told.index(step)


async def test_a_request_under_way_is_known_to_be_in_flight(
        telegram_server: FakeTelegram) -> None:
    telegram_server.send_delay_s = 0.5
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url) as bot:
        sender = Sender(bot, FAST)
        assert not sender.request_in_flight(4)
        task = asyncio.create_task(sender.send(reply(4)))
        while not telegram_server.calls_to("sendMessage"):
            await asyncio.sleep(0.01)
        assert sender.request_in_flight(4)  # Telegram has it; its answer is late
        await task
        assert not sender.request_in_flight(4)


async def test_a_threaded_reply_refused_as_not_found_is_not_postponed_for_ever(
        telegram_server: FakeTelegram) -> None:
    """Telegram answers "not found" to a reply threaded to its question: it is sent once
    more unthreaded, at once — the chat's turn was taken by the refused request, so going
    through the pace again postponed it, and the outbox's next pass did the same, for ever
    (a postponement counts no attempt). A refusal of the unthreaded send too is final."""
    paced = Pace(per_chat_s=0.5, overall_per_s=1000, typing_every_s=0.05, typing_max_s=5.0,
                 draft_every_s=0.0, draft_refresh_s=0.2, edit_every_s=0.1)
    telegram_server.fail("sendMessage", 400, times=2, description="Bad Request: chat not found")
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url) as bot:
        sender = Sender(bot, paced)
        with pytest.raises(SendError) as refused:
            await sender.send(replace(reply(8), thread_ref="5"))
    assert not refused.value.postponed and not refused.value.retryable, refused.value
    assert len(telegram_server.calls_to("sendMessage")) == 2
