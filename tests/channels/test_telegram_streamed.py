"""A reply streamed by edits of one message (a group: drafts exist in private chats only)
takes that message for its first part; a message in parts resumed after a pace must not
take the message streamed for the NEXT reply meanwhile. The real python-telegram-bot
against the loopback Bot API, the channel's sender alone."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from telegram import Bot

from bot.channel import Delivery, SendError
from channels.telegram_send import Pace, Sender
from tests.fakes.telegram_server import FakeTelegram
from tests.waiting import until

GROUP = -100777
CONVERSATION = f"telegram:{GROUP}"
PACE = Pace(per_chat_s=0.0, per_group_s=0.5, overall_per_s=1000, typing_every_s=0.05,
            typing_max_s=5.0, draft_every_s=0.0, draft_refresh_s=0.2, edit_every_s=0.05)
LONG = "\n\n".join(f"Paragraphe {i} : " + "la longère de Vergt a du charme. " * 30
                   for i in range(6))


class Progress:
    def __init__(self) -> None:
        self.parts = 0

    async def leaving(self, part: int) -> None:
        pass

    async def delivered(self, parts: int) -> None:
        self.parts = parts


def texts(fake: FakeTelegram) -> list[str]:
    return [m.get("text") or "" for m in fake.chat_messages(GROUP)]


async def stream(sender: Sender, fake: FakeTelegram, text: str) -> None:
    """A reply streamed by edits until its first words are shown, then settled (the
    claim is over: the message waits for its reply in the outbox)."""
    chunk = sender.live(CONVERSATION)
    assert chunk is not None
    chunk(text)
    await until(lambda: text in texts(fake), 10, message="nothing streamed")
    await sender.settle(CONVERSATION)


async def test_a_resumed_reply_leaves_the_next_replys_streamed_message_alone(
        telegram_server: FakeTelegram) -> None:
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url) as bot:
        sender = Sender(bot, PACE)
        await stream(sender, telegram_server, "Paragraphe 0 : la longère")
        first = Delivery(message_id=1, channel="telegram", address=str(GROUP),
                         conversation=CONVERSATION, text=LONG, in_reply_to=None,
                         thread_ref=None)
        progress = Progress()
        try:  # part 1 takes the streamed message; part 2 must wait for the group's pace
            await sender.send(replace(first, progress=progress))
            raise AssertionError("part 2 was not paced")
        except SendError as exc:
            assert exc.postponed, exc
        assert progress.parts == 1
        # meanwhile the next message is answered, streamed by edits of a message of its own
        await asyncio.sleep(PACE.per_group_s)
        await stream(sender, telegram_server, "Pour samedi")
        await asyncio.sleep(PACE.per_group_s)
        await sender.send(replace(first, resume_from=1, progress=progress))  # part 2
        await asyncio.sleep(PACE.per_group_s)
        await sender.send(Delivery(message_id=2, channel="telegram", address=str(GROUP),
                                   conversation=CONVERSATION, text="Pour samedi, c'est bon.",
                                   in_reply_to=None, thread_ref=None))
    shown = texts(telegram_server)
    # the second reply completes the message streamed for it: nothing left half-written
    assert "Pour samedi" not in shown, shown
    # (by message id: the second reply's streamed message came before part 2)
    assert len(shown) == 3 and shown[1] == "Pour samedi, c'est bon.", shown
    assert shown[0].startswith("Paragraphe 0 :") and shown[2].startswith("Paragraphe "), shown
