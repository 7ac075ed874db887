"""A conversation's live feel on Telegram while Axi prepares a reply: "typing…" renewed
until the reply is sent, and the reply streamed as a native draft (or, where drafts fail
and in groups, by editing one message at a safe pace).

Why apart from channels/telegram_send.py: the sender owns the messages that stay; the
live view only shows what is coming, and is always torn down (`close()`, in a finally).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import Bot, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, TelegramError

from channels.telegram_format import to_html
from channels.telegram_pace import Pace, RateLimiter
from channels.telegram_split import split_message

log = logging.getLogger(__name__)


class LiveView:
    """One conversation's live feel while a reply is prepared: "typing…" renewed until
    the reply (or a notice) is sent, and, when the reply is streamed, a native draft
    showing the text so far. Always torn down by `close()` (in a finally)."""

    def __init__(self, bot: Bot, chat_id: int, pace: Pace, draft_id: int,
                 limiter: RateLimiter | None = None, thread_ref: str | None = None):
        self.bot, self.chat_id, self.pace, self.draft_id = bot, chat_id, pace, draft_id
        self.reply_to = (ReplyParameters(message_id=int(thread_ref),
                                         allow_sending_without_reply=True)
                         if thread_ref is not None and thread_ref.isdigit() else None)
        """The edited message threads to the question, as the final reply would."""
        self.limiter = limiter or RateLimiter(pace)
        self.text = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self.drafts_ok = chat_id > 0
        """Native drafts exist in private chats only (a group's id is negative): a group
        sees its reply grow by edits of one message."""
        self.message_id: int | None = None
        self.edited_at = 0.0
        """Where drafts fail: the message being edited as the reply grows (the final
        reply replaces its text instead of arriving as a second message)."""
        self._tasks = [asyncio.create_task(self._typing(), name=f"typing-{chat_id}")]
        self._draft_task: asyncio.Task[None] | None = None

    def chunk(self, piece: str) -> None:
        self.text += piece
        self._changed.set()
        if self._draft_task is None:  # streams by drafts, or by edits where there are none
            self._draft_task = asyncio.create_task(self._drafts(), name=f"draft-{self.chat_id}")
            self._tasks.append(self._draft_task)

    async def _typing(self) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + self.pace.typing_max_s
        while loop.time() < until:
            with contextlib.suppress(TelegramError):
                await self.bot.send_chat_action(self.chat_id, "typing")
            await asyncio.sleep(self.pace.typing_every_s)

    async def _drafts(self) -> None:
        loop = asyncio.get_running_loop()
        last = 0.0
        while True:
            refresh = False
            try:
                await asyncio.wait_for(self._changed.wait(), self.pace.draft_refresh_s)
            except TimeoutError:
                refresh = True  # a draft lasts ~30 s: show it again while the model is slow
            self._changed.clear()
            pause = last + self.pace.draft_every_s - loop.time()
            if pause > 0:
                await asyncio.sleep(pause)
            text = self.text.strip()
            if not text:
                continue
            shown = split_message(text)[0]
            if shown == self._shown and not (refresh and self.drafts_ok):
                continue
            if not self.drafts_ok:
                last = await self._edit(shown, last)
                continue
            try:
                await self.bot.send_message_draft(self.chat_id, self.draft_id,
                                                  text=to_html(shown), parse_mode=ParseMode.HTML)
                self._shown, last = shown, loop.time()
            except BadRequest as exc:
                log.info("drafts unavailable in chat %s (%s): editing one message instead",
                         self.chat_id, exc)
                self.drafts_ok = False
                self._changed.set()
            except TelegramError:
                last = loop.time()

    async def _edit(self, shown: str, last: float) -> float:
        """The edit fallback: one message, edited no more often than `edit_every_s`."""
        loop = asyncio.get_running_loop()
        pause = last + self.pace.edit_every_s - loop.time()
        if pause > 0:
            await asyncio.sleep(pause)
            shown = split_message(self.text.strip())[0]
        try:
            await self.limiter.wait(self.chat_id)
            try:
                if self.message_id is None:
                    sent = await self.bot.send_message(self.chat_id, to_html(shown),
                                                       parse_mode=ParseMode.HTML,
                                                       reply_parameters=self.reply_to)
                    self.message_id = sent.message_id
                else:
                    await self.bot.edit_message_text(to_html(shown), chat_id=self.chat_id,
                                                     message_id=self.message_id,
                                                     parse_mode=ParseMode.HTML)
            finally:
                self.limiter.done(self.chat_id)
            self._shown = shown
            self.edited_at = loop.time()
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                log.info("live edit refused in chat %s (%s)", self.chat_id, exc)
        except TelegramError:
            pass
        return loop.time()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
