"""Telegram on the way out: replies, notices, pushes and confirmations as Telegram
messages, and the live feel of a conversation ("typing…", drafts while the model writes).

Text is the model's Markdown turned into Telegram HTML (channels/telegram_format.py),
split at 4,096 visible characters (channels/telegram_split.py), the first part threaded to
the question; when Telegram refuses the HTML the plain text goes instead. A split reply
interrupted half-way is resumed after the parts the outbox recorded as delivered, never
resent from the start. Telegram's limits (about one message a second per chat, thirty a
second overall) are kept here; its `RetryAfter` becomes the outbox's `retry_after`. A
confirmation carries one button per choice (green "Oui", red "Non"); the answer to a
button removes the buttons from the question.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import itertools
import logging
from collections.abc import Iterator

import httpx
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)

from bot.channel import ChunkFn, Delivery, SendError
from channels.telegram_format import plain_text, to_html
from channels.telegram_live import LiveView
from channels.telegram_pace import Pace, RateLimiter, chat_of
from channels.telegram_split import split_html, split_message

log = logging.getLogger(__name__)

BUTTON_STYLES = {"oui": "success", "non": "danger"}
POSTPONE_ABOVE_S = 0.25
"""A chat's turn further away than this: the message returns to the outbox for later."""


class Sender:
    def __init__(self, bot: Bot, pace: Pace):
        self.bot = bot
        self.pace = pace
        self.limiter = RateLimiter(pace)
        self._live: dict[str, LiveView] = {}
        self._streamed: dict[str, collections.deque[tuple[int, float]]] = {}
        self._reserved: dict[str, collections.deque[int]] = {}
        """Per conversation, the draft ids of placeholders shown for fetched messages, for
        the live views of their replies, oldest first."""
        """Per conversation, the messages streamed by edits whose reply is still to send,
        oldest first (replies leave in the order their messages were answered)."""
        self._closing: set[asyncio.Future[None]] = set()
        self._timeouts: dict[int, int] = {}
        """Timeouts after the request left, by outbound id: one retry at most."""
        self._in_flight: set[int] = set()
        """Outbound ids with a request to Telegram under way (it may arrive)."""
        self._editing: dict[int, tuple[int, float]] = {}
        """A reply whose first part replaces the text of the message streamed by edits."""
        self._draft_ids = itertools.count(1)
        """Draft ids: `next` on a count is atomic, and the poller's thread takes some."""
        self.drafts_wanted = True
        """Placeholders and drafts are shown (off for chats where Telegram refuses them)."""
        self.timeouts_after_sending = 0
        """Sends that timed out after the request left (they may have been delivered): the
        first is retried, a second is an uncertain send (bot/pipeline.py)."""

    # ------------------------------------------------------------------ live
    def live(self, conversation: str, thread_ref: str | None = None) -> ChunkFn | None:
        chat_id = chat_of(conversation)
        if chat_id is None:
            return None
        old = self._live.pop(conversation, None)
        if old is not None:  # a reply that never came (the message waits): stop its view
            closing = asyncio.ensure_future(old.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        reserved = self._reserved.get(conversation)
        view = LiveView(self.bot, chat_id, self.pace,
                        draft_id=reserved.popleft() if reserved else self._next_draft_id(),
                        limiter=self.limiter, thread_ref=thread_ref)
        self._live[conversation] = view
        return view.chunk

    def _next_draft_id(self) -> int:
        return next(self._draft_ids)

    def reserve_draft(self, conversation: str) -> tuple[int, int] | None:
        """(chat id, draft id) of a placeholder for a fetched message: the draft its reply
        will stream into (same draft id, so Telegram animates it). Safe from the poller's
        thread: the live view (Axi's loop) only pops what was appended before the batch
        was stored."""
        chat_id = chat_of(conversation)
        if chat_id is None:
            return None
        draft_id = self._next_draft_id()
        self._reserved.setdefault(conversation, collections.deque(maxlen=32)).append(draft_id)
        return chat_id, draft_id

    @staticmethod
    async def show_placeholder(bot: Bot, chat_id: int, draft_id: int) -> None:
        """Show "…" in the chat as soon as a message is fetched, before it is stored."""
        with contextlib.suppress(TelegramError):
            await bot.send_message_draft(chat_id, draft_id, text="…")

    async def end_live(self, conversation: str) -> None:
        view = self._live.pop(conversation, None)
        if view is not None:
            await view.close()

    async def settle(self, conversation: str) -> None:
        """The claim is over: stop "typing…" and drafts (a message that got no reply shows
        no activity); a message streamed by edits waits for its reply to complete it."""
        view = self._live.pop(conversation, None)
        if view is None:
            return
        await view.close()
        if view.message_id is not None:
            queue = self._streamed.setdefault(conversation, collections.deque(maxlen=16))
            queue.append((view.message_id, view.edited_at))

    async def close(self) -> None:
        for conversation in list(self._live):
            await self.end_live(conversation)

    # ------------------------------------------------------------------ send
    async def send(self, delivery: Delivery) -> str | None:
        try:
            chat_id = int(delivery.address)
        except ValueError:
            raise SendError(f"not a Telegram chat id: {delivery.address!r}",
                            retryable=False) from None
        self._in_flight.discard(delivery.message_id)  # a new attempt: nothing under way yet
        streamed = self._streamed.get(delivery.conversation)
        if (streamed and delivery.kind == "reply" and delivery.resume_from == 0
                and delivery.message_id not in self._editing):
            # (an attempt resumed after its first part has no use for a streamed message:
            # the one streamed meanwhile is the next reply's)
            self._editing[delivery.message_id] = streamed.popleft()
        try:
            return await self._attempt(chat_id, delivery)
        except SendError as exc:
            if not exc.retryable:  # given up: nothing to resume
                self._forget(delivery.message_id)
            raise

    def request_in_flight(self, message_id: int) -> bool:
        """Whether a request for this outbound message is under way, or delivered a part
        not yet recorded (`_landed`): one cut now (the process stopping) may have reached
        Telegram; otherwise nothing left at all."""
        return message_id in self._in_flight

    @contextlib.contextmanager
    def _request(self, message_id: int, chat_id: int) -> Iterator[None]:
        """One paced request for an outbound message (let go by the limiter; its end
        starts the chat's next gap). It stays in flight when it is cut (the stop's
        cancellation goes through here before the outbox asks `request_in_flight`) and
        when it succeeds, until its part is recorded (`_landed`); only an answer or a
        transport failure from Telegram (a SendError says which) ends it here."""
        self._in_flight.add(message_id)
        try:
            yield
        except TelegramError:
            self._in_flight.discard(message_id)
            raise
        finally:
            self.limiter.done(chat_id)

    async def _landed(self, steps: _Steps, message_id: int, index: int) -> None:
        """Part `index` was delivered: recorded, then no request is under way."""
        await steps.delivered(index)
        self._in_flight.discard(message_id)

    def _forget(self, message_id: int) -> None:
        self._timeouts.pop(message_id, None)
        self._editing.pop(message_id, None)

    async def _attempt(self, chat_id: int, delivery: Delivery) -> str | None:
        try:
            return await self._send(chat_id, delivery)
        except RetryAfter as exc:
            seconds = retry_seconds(exc)
            raise SendError(f"Telegram asks to wait {seconds:.0f} s", retry_after=seconds,
                            postponed=True) from exc
        except Forbidden as exc:  # the person blocked the bot, or left
            raise SendError(f"Telegram refused: {exc}", retryable=False) from exc
        except InvalidToken as exc:
            raise SendError("Telegram refused the token (AXI_TELEGRAM_TOKEN)") from exc
        except TimedOut as exc:
            if isinstance(exc.__cause__, httpx.ConnectTimeout | httpx.PoolTimeout
                          | httpx.WriteTimeout):  # nothing, or half a request, left
                raise SendError(f"timed out before sending: {exc}") from exc
            # the request may have reached Telegram (counted for /health): retried once at
            # most, as the Telegram issue asks; a second such timeout is left to the
            # outbox's rule for an uncertain send (bot/pipeline.py: not sent again)
            self.timeouts_after_sending += 1
            count = self._timeouts[delivery.message_id] = self._timeouts.get(
                delivery.message_id, 0) + 1
            log.warning("sending #%s timed out after the request left (it may have been "
                        "delivered); %s", delivery.message_id,
                        "retrying once" if count < 2 else "not sending it again")
            raise SendError(f"timed out after sending: {exc}", uncertain=count >= 2) from exc
        except BadRequest as exc:
            raise SendError(f"Telegram refused the message: {exc}", retryable=False) from exc
        except NetworkError as exc:
            raise SendError(f"network: {exc}") from exc
        except ChatMigrated as exc:  # a group became a supergroup: its old id is gone
            raise SendError(f"the chat moved to {exc.new_chat_id}: {exc}",
                            retryable=False) from exc
        except TelegramError as exc:  # anything else Telegram answered: refused, retried
            raise SendError(f"Telegram: {exc}") from exc

    async def _send(self, chat_id: int, delivery: Delivery) -> str | None:
        # only the model's replies are Markdown; what Axi writes itself (digests, alerts,
        # notices, questions to Ludo) quotes text from outside (a DPE's address, a
        # stranger's first words, a visitor's memo): shown as typed, never as a link
        source = (to_html(delivery.text) if delivery.kind == "reply"
                  else html.escape(delivery.text, quote=False))
        parts = split_html(source)
        total = len(parts) + len(delivery.attachments)
        steps = _Steps(delivery, total)
        last_id: int | None = None
        for index, part in enumerate(parts):
            if index < delivery.resume_from:  # delivered by an earlier attempt: never twice
                continue
            markup = self._buttons(delivery) if index == len(parts) - 1 else None
            thread = delivery.thread_ref if index == 0 else None
            streamed = self._editing.get(delivery.message_id) if index == 0 else None
            edited = streamed is not None and await self._finish_edit(
                chat_id, *streamed, part, markup, outbound=delivery.message_id,
                steps=steps, index=index)
            if streamed is not None:  # completed, or not editable: used either way (an
                self._editing.pop(delivery.message_id, None)  # error keeps it for a retry)
            if edited:
                assert streamed is not None
                last_id = streamed[0]
            else:
                last_id = await self._one(chat_id, part, delivery, thread, markup,
                                          steps=steps, index=index)
            await self._landed(steps, delivery.message_id, index)
        for number, file in enumerate(delivery.attachments, start=len(parts)):
            if number < delivery.resume_from:
                continue
            await self._paced(chat_id)
            await steps.leaving(number)
            with self._request(delivery.message_id, chat_id):
                sent = await self.bot.send_document(
                    chat_id, document=InputFile(file.data, filename=file.filename),
                    caption=None)
            last_id = sent.message_id
            await self._landed(steps, delivery.message_id, number)
        self._forget(delivery.message_id)
        return str(last_id) if last_id is not None else None

    async def _finish_edit(self, chat_id: int, message_id: int, edited_at: float, html: str,
                           markup: InlineKeyboardMarkup | None, *, outbound: int,
                           steps: _Steps, index: int) -> bool:
        """The streamed message takes the reply's final text; False: send it instead."""
        pause = edited_at + self.pace.edit_every_s - asyncio.get_running_loop().time()
        if pause > 0:
            await asyncio.sleep(pause)
        await self.limiter.wait(chat_id)
        await steps.leaving(index)
        try:
            with self._request(outbound, chat_id):
                await self.bot.edit_message_text(html, chat_id=chat_id, message_id=message_id,
                                                 parse_mode=ParseMode.HTML, reply_markup=markup)
        except BadRequest as exc:
            return "not modified" in str(exc).lower()
        return True

    async def _paced(self, chat_id: int) -> None:
        """Wait for the chat's turn; a long wait goes back to the outbox (postponed, not
        a failure) so that one busy chat never holds up the others' messages."""
        pause = self.limiter.chat_pause(chat_id)
        if pause > POSTPONE_ABOVE_S:
            raise SendError(f"chat {chat_id} paced", retry_after=pause, postponed=True)
        await self.limiter.wait(chat_id)

    async def _one(self, chat_id: int, html: str, delivery: Delivery, thread: str | None,
                   markup: InlineKeyboardMarkup | None, *, steps: _Steps, index: int,
                   again: bool = False) -> int:
        """`again`: sent once more after a refusal, which took the chat's turn: waited
        for, never postponed (the outbox's next pass would be refused and postponed in
        turn, for ever)."""
        reply = None
        if thread is not None and thread.isdigit():
            reply = ReplyParameters(message_id=int(thread), allow_sending_without_reply=True)
        if again:
            await self.limiter.wait(chat_id)
        else:
            await self._paced(chat_id)
        await steps.leaving(index)
        try:
            with self._request(delivery.message_id, chat_id):
                message = await self.bot.send_message(
                    chat_id, html, parse_mode=ParseMode.HTML, reply_parameters=reply,
                    reply_markup=markup)
        except BadRequest as exc:
            if reply is not None and "not found" in str(exc).lower():
                log.info("the question of #%s is gone (%s): sent without threading",
                         delivery.message_id, exc)
                return await self._one(chat_id, html, delivery, None, markup,
                                       steps=steps, index=index, again=True)
            if "parse entities" not in str(exc).lower():
                raise
            log.warning("Telegram refused the HTML of #%s (%s): sending plain text",
                        delivery.message_id, exc)
            await self.limiter.wait(chat_id)
            with self._request(delivery.message_id, chat_id):
                message = await self.bot.send_message(chat_id, plain_text_of(html),
                                                      reply_parameters=reply, reply_markup=markup)
        return message.message_id

    @staticmethod
    def _buttons(delivery: Delivery) -> InlineKeyboardMarkup | None:
        if delivery.kind != "confirmation" or not delivery.choices:
            return None
        row = [InlineKeyboardButton(label, callback_data=data[:64],
                                    style=BUTTON_STYLES.get(data.rsplit(":", 1)[-1]))
               for label, data in delivery.choices]
        return InlineKeyboardMarkup([row])


class _Steps:
    """One attempt's parts told to the outbox (bot.channel.SendProgress): `leaving` before
    each request but the attempt's first (the outbox marked the attempt begun), and
    `delivered` after each part but the last (recorded with the message itself) — a
    message in one part costs no extra write."""

    def __init__(self, delivery: Delivery, total: int):
        self.progress = delivery.progress
        self.first = delivery.resume_from
        self.total = total

    async def leaving(self, part: int) -> None:
        if self.progress is not None and part > self.first:
            await self.progress.leaving(part)

    async def delivered(self, part: int) -> None:
        if self.progress is not None and part + 1 < self.total:
            await self.progress.delivered(part + 1)


def retry_seconds(exc: RetryAfter) -> float:
    """RetryAfter's wait in seconds (an int today, a timedelta in PTB's next major)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wait = exc.retry_after
    return wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait)


def plain_text_of(html: str) -> str:
    """The visible text of our own HTML, for Telegram to take as plain text."""
    import html as html_lib
    import re

    return html_lib.unescape(re.sub(r"<[^>]+>", "", html))


__all__ = ["Pace", "RateLimiter", "Sender", "chat_of", "plain_text", "split_message"]
