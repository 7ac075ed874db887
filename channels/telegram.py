"""The Telegram channel: Ludo talks to Axi from his phone.

Long polling under Axi's own control (never PTB's `run_polling`, never its `Updater`,
which confirms updates to Telegram before they are stored): `Bot.get_updates` fetches a
batch, every update of it is accepted into the inbox and the next offset is stored in
`curseurs_canal` in the SAME transaction (`services.accept_batch`), and only then does the
next `getUpdates` confirm them to Telegram. The long poll and the first "…" run on a loop
of their own in a thread (channels/telegram_intake.py), so they never wait behind Axi's
other work; storing runs on Axi's loop, the poller waiting for it. A crash anywhere re-fetches what was not
stored, and the (chat id, message id) external id makes a redelivery a no-op.

One poller per bot: a PostgreSQL advisory lock; a second `axi run` on the same database
sends but does not poll, and says why. `getUpdates` has its own connection pool and a
watchdog: a poll that has not returned in `watchdog_s` gets a fresh pool. Sending lives in
channels/telegram_send.py, reading updates in channels/telegram_updates.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from telegram import Bot, CallbackQuery, Message, Update
from telegram.error import Conflict, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.request import HTTPXRequest

from bot.channel import ChannelServices, ChunkFn, CursorUpdate, Delivery
from bot.inbound import Inbound
from channels.telegram_files import with_files
from channels.telegram_intake import IntakeLoop
from channels.telegram_known import KnownSenders
from channels.telegram_send import Pace, Sender, retry_seconds
from channels.telegram_setup import probe_token, register_commands
from channels.telegram_updates import (
    CHANNEL,
    Skipped,
    cursor_value,
    next_offset,
    parse_cursor,
    read_update,
    to_inbound,
)

log = logging.getLogger(__name__)

CURSOR_KEY = "offset"
WEBHOOK_PATH = "/telegram/webhook"
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")
PLACEHOLDER_WAIT_S = 0.25
"""The poller's thread waits this long at most for its placeholders to be shown before it
hands the batch over: Axi's loop, woken by it, would compete for the interpreter."""
CRASH_ENV = "AXI_TEST_CRASH_AT"
"""Test-only: `telegram:after_get_updates` kills the process right after a batch is
fetched and before it is stored (the worst moment), to prove nothing is lost."""


class TelegramStartError(RuntimeError):
    """The Telegram channel cannot work with this configuration."""


@dataclass(frozen=True)
class TelegramConfig:
    token: str = field(repr=False)
    api_url: str
    file_url: str
    groups: frozenset[int] = frozenset()
    max_file_bytes: int = 20 * 1024 * 1024
    file_timeout_s: float = 60.0
    poll_timeout_s: int = 25
    watchdog_s: float = 90.0
    retry_s: float = 2.0
    lock_retry_s: float = 10.0
    lock_check_s: float = 5.0
    webhook_url: str | None = None
    max_webhook_bytes: int = 1_000_000
    pace: Pace = field(default_factory=Pace)


class TelegramChannel:
    name = CHANNEL

    def __init__(self, config: TelegramConfig):
        self.config = config
        self.bot: Bot | None = None
        self.sender: Sender | None = None
        self.services: ChannelServices | None = None
        self.bot_id = 0
        self.bot_username = ""
        self.polling = False
        self.last_poll_ok: float | None = None
        self.watchdog_restarts = 0
        self.lock_losses = 0
        self._background: set[asyncio.Task[Any]] = set()
        self._known = KnownSenders(self._identify, background=self._background)
        self._said_not_polling = False
        self._long_polling = False
        self._intake = IntakeLoop("telegram-intake")
        """getUpdates and the first placeholders run on a loop of their own (a thread)."""
        self._poll_bot: Bot | None = None
        """The intake loop's bot: long polls and placeholders, on pools of its own."""

    # ------------------------------------------------------------------ lifecycle
    async def start(self, services: ChannelServices) -> None:
        cfg = self.config
        if ":" not in cfg.token:
            raise TelegramStartError("AXI_TELEGRAM_TOKEN does not look like a bot token "
                                     "(123456:ABC…); ask @BotFather")
        self.services = services
        self.bot = self._new_bot()
        self.sender = Sender(self.bot, cfg.pace)
        if cfg.webhook_url:
            if not cfg.webhook_url.startswith("https://"):
                raise TelegramStartError("AXI_TELEGRAM_WEBHOOK_URL must be an https:// URL "
                                         "(Telegram calls only https webhooks)")
            services.mount(WEBHOOK_PATH, Route(WEBHOOK_PATH, self._webhook, methods=["POST"]))

    async def probe(self) -> str:
        """For `axi doctor`: the token works (getMe), without polling or sending."""
        return await probe_token(self.config.token, self.config.api_url, self.config.file_url)

    def _new_bot(self) -> Bot:
        cfg = self.config
        # sends and getUpdates on separate pools: a wedged poll never blocks a reply
        return Bot(cfg.token, base_url=cfg.api_url, base_file_url=cfg.file_url,
                   request=HTTPXRequest(connection_pool_size=16, read_timeout=20.0),
                   get_updates_request=HTTPXRequest(
                       connection_pool_size=2, read_timeout=cfg.poll_timeout_s + 10.0))

    async def stop(self) -> None:
        self.polling = False
        for task in list(self._background):
            task.cancel()
        if self._intake.running:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self._intake.call(self._close_poll_bot())
            await asyncio.to_thread(self._intake.stop)
        if self.sender is not None:
            await self.sender.close()
        if self.bot is not None:
            with contextlib.suppress(Exception):
                await self.bot.shutdown()

    def live(self, conversation: str, thread_ref: str | None = None) -> ChunkFn | None:
        return self.sender.live(conversation, thread_ref) if self.sender is not None else None

    def describe(self) -> dict[str, Any]:
        """For /health: polling or not, the last good poll, the watchdog, sends that timed
        out after leaving (each retried once; a second timeout makes an uncertain send,
        counted in queues.uncertain_sends_24h)."""
        sender = self.sender
        return {"polling": self.polling, "webhook": bool(self.config.webhook_url),
                "last_poll_ok": self.last_poll_ok, "watchdog_restarts": self.watchdog_restarts,
                "lock_losses": self.lock_losses,
                "timeouts_after_sending": sender.timeouts_after_sending if sender else 0}

    async def settle(self, conversation: str) -> None:
        if self.sender is not None:
            await self.sender.settle(conversation)

    async def send(self, delivery: Delivery) -> str | None:
        assert self.sender is not None, "send before start"
        return await self.sender.send(delivery)

    def request_in_flight(self, message_id: int) -> bool:
        return self.sender is not None and self.sender.request_in_flight(message_id)

    # ------------------------------------------------------------------ receiving
    async def run(self) -> None:
        """Poll while holding the poller lock; without it, keep trying to get it."""
        assert self.bot is not None and self.services is not None, "run before start"
        try:
            await self.bot.initialize()  # getMe: who we are
        except InvalidToken as exc:
            raise TelegramStartError(
                "Telegram refuse le jeton (AXI_TELEGRAM_TOKEN) / Telegram refused the token "
                "(401): polling stopped; fix the token and restart") from exc
        self.bot_id, self.bot_username = self.bot.id, self.bot.username or ""
        assert self.services is not None
        await register_commands(self.bot, self.services)
        if self.config.webhook_url:
            await self.bot.set_webhook(self.config.webhook_url, secret_token=self.secret,
                                       allowed_updates=list(ALLOWED_UPDATES))
            log.info("Telegram : mode webhook (%s) / webhook mode", self.config.webhook_url)
            await asyncio.Event().wait()  # updates arrive on the HTTP server
        while True:
            async with self.services.lock(f"telegram:poller:{self.bot_id}") as mine:
                if mine:
                    self._said_not_polling = False
                    await self._poll(mine)
                    log.warning("Telegram : verrou de relève perdu (base redémarrée ?) / "
                                "poller lock lost: polling stops until it is held again")
                    continue
            if not self._said_not_polling:
                log.warning("Telegram : un autre processus Axi relève déjà les messages de ce "
                            "bot ; celui-ci envoie seulement / another axi process polls this "
                            "bot (two pollers make Telegram answer 409 Conflict and lose "
                            "updates): this one only sends")
                self._said_not_polling = True
            await asyncio.sleep(self.config.lock_retry_s)

    async def _poll(self, held: Any) -> None:
        """Poll until the poller lock is lost: a watcher checks it every `lock_check_s`
        and cuts a long poll in flight, so two processes never poll for longer than that.
        It cancels the poller itself, only while it waits for `getUpdates` (never while
        a batch is stored): a poll runs in the poller's own task, no task per poll."""
        lost = asyncio.Event()
        poller = asyncio.current_task()

        async def watch() -> None:
            never = asyncio.Event()  # a periodic check: nothing wakes it early
            while await held.still_held():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(never.wait(), self.config.lock_check_s)
            lost.set()
            if self._long_polling and poller is not None:
                poller.cancel()

        watcher = asyncio.create_task(watch(), name="telegram-lock-watch")
        try:
            await self._poll_until(lost)
        finally:
            self.polling = False
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watcher
        self.lock_losses += 1

    async def _poll_until(self, lost: asyncio.Event) -> None:
        assert self.bot is not None and self.services is not None
        cfg = self.config
        with contextlib.suppress(TelegramError):
            await self.bot.delete_webhook(drop_pending_updates=False)
        offset = parse_cursor(await self.services.read_cursor(CHANNEL, CURSOR_KEY), time.time())
        if not self._intake.running:
            self._intake.start()
        if self._poll_bot is None:
            await self._intake.call(self._open_poll_bot())
        self.polling = True
        failures = 0
        log.info("Telegram : relève des messages de @%s / polling", self.bot_username)
        while not lost.is_set():
            try:
                try:
                    self._long_polling = True
                    updates, read, shown = await self._intake.call(self._fetch(offset))
                finally:
                    self._long_polling = False
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if lost.is_set() and task is not None and task.uncancel() == 0:
                    return  # the watcher cut the poll: the lock is lost
                raise
            except TimeoutError:
                self.watchdog_restarts += 1
                log.warning("Telegram: getUpdates silent for %.0f s: new connection pool",
                            cfg.watchdog_s)
                await self._intake.call(self._renew_poll_bot())
                continue
            except InvalidToken as exc:
                self.polling = False
                raise TelegramStartError(
                    "Telegram refuse le jeton (AXI_TELEGRAM_TOKEN) / Telegram refused the "
                    "token (401): polling stopped") from exc
            except Conflict as exc:
                failures += 1
                log.warning("Telegram 409 Conflict (%s): another poller or a webhook; "
                            "backing off", exc)
                await asyncio.sleep(min(60.0, cfg.retry_s * 2 ** min(failures, 5)))
                continue
            except RetryAfter as exc:
                await asyncio.sleep(retry_seconds(exc))
                continue
            except NetworkError as exc:
                failures += 1
                log.warning("Telegram getUpdates failed (%s); retrying", exc)
                await asyncio.sleep(min(60.0, cfg.retry_s * 2 ** min(failures, 5)))
                continue
            except TelegramError:
                raise  # any other refusal of the Bot API: as before, not a reading problem
            except Exception as exc:
                # PTB could not read an update of the batch (whatever it raised): read them
                # one by one, so that one update never blocks all the others
                log.warning("Telegram: an update PTB cannot read (%s: %s): reading one by "
                            "one", type(exc).__name__, str(exc)[:200])
                try:
                    updates = await self._intake.call(self._fetch_one_by_one(offset))
                    read, shown = self._read(updates), frozenset()
                except TelegramError as again:  # e.g. the network, meanwhile: retry it all
                    log.warning("Telegram getUpdates failed (%s); retrying", again)
                    await asyncio.sleep(cfg.retry_s)
                    continue
            failures = 0
            self.last_poll_ok = time.time()
            if not updates:
                continue
            if os.environ.get(CRASH_ENV) == "telegram:after_get_updates":
                os._exit(137)  # test-only: the worst moment, before anything is stored
            moved = await self._accept(updates, shown=shown, read=read)
            if moved is None:  # not one update id that is a number: nothing to confirm
                log.warning("Telegram: a batch without any update id; retrying")
                await asyncio.sleep(cfg.retry_s)
                continue
            offset = moved

    @property
    def secret(self) -> str:
        """The webhook's secret token: derived from the bot token, never stored elsewhere."""
        return hmac.new(self.config.token.encode(), b"axi-telegram-webhook",
                        hashlib.sha256).hexdigest()

    async def _webhook(self, request: Request) -> Response:
        """One update pushed by Telegram: 200 only once it is stored (else Telegram
        retries); a request without our secret token is refused."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if not hmac.compare_digest(given.encode(errors="replace"), self.secret.encode()):
            log.info("Telegram webhook refused: %s secret token (from %s)",
                     "no" if not given else "a wrong",
                     request.client.host if request.client else "?")
            return Response(status_code=401)
        body = await request.body()
        if len(body) > self.config.max_webhook_bytes:
            log.warning("Telegram webhook: %d bytes refused", len(body))
            return Response(status_code=413)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError) as exc:
            log.warning("Telegram webhook: a body that is no JSON dropped (%s)", exc)
            return Response(status_code=200)  # a retry would not make it readable
        item = read_update(data, self.bot)
        try:
            await self._accept((item,), cursor=False)
        except Exception as exc:
            log.warning("Telegram webhook: update %s not stored yet (%s): Telegram will "
                        "retry", item.update_id, exc)
            return Response(status_code=503)
        return Response(status_code=200)

    async def _accept(self, updates: Sequence[Update | Skipped], *, cursor: bool = True,
                      shown: frozenset[str] = frozenset(),
                      read: Sequence[Inbound | Skipped] | None = None) -> int | None:
        """Store a batch and its next offset together (None, and no cursor moved, when no
        update of it has an id that is a number); then acknowledge the buttons. `read`:
        the batch already read by the poller's thread (`_read`), not read twice."""
        assert self.services is not None and self.bot is not None
        inbounds = []
        for item in self._read(updates) if read is None else read:
            if isinstance(item, Skipped):
                log.info("Telegram update %s skipped: %s", item.update_id, item.reason)
                continue
            inbounds.append(item)  # commands, /local included, are the core's (bot/commands.py)
        await self._placeholders(inbounds, shown)
        inbounds = await with_files(self.bot, inbounds, max_bytes=self.config.max_file_bytes,
                                    timeout_s=self.config.file_timeout_s, wanted=self._known)
        offset = next_offset(updates)
        moved = CursorUpdate(CHANNEL, CURSOR_KEY, cursor_value(offset, time.time())) \
            if cursor and offset is not None else None
        if inbounds or moved is not None:  # (a webhook's skipped update: nothing to store)
            await self.services.accept_batch(inbounds, moved)
        for update in updates:
            query = update.callback_query if isinstance(update, Update) else None
            if query is not None:  # stored: acknowledge, and the question loses its buttons
                await self._acknowledge(query)
        return offset

    async def _acknowledge(self, query: CallbackQuery) -> None:
        """A nicety once the batch is stored: whatever fails here is logged, never raised."""
        assert self.bot is not None
        try:
            await self.bot.answer_callback_query(query.id, text="Reçu, je m'en occupe.")
        except Exception as exc:
            log.info("Telegram button %r not acknowledged: %s", query.id, exc)
        anchor = query.message
        if isinstance(anchor, Message) and anchor.reply_markup is not None:
            try:
                await self.bot.edit_message_reply_markup(anchor.chat.id, anchor.message_id,
                                                         reply_markup=None)
            except Exception as exc:
                log.info("Telegram buttons of message %r not removed: %s",
                         anchor.message_id, exc)

    async def _fetch_one_by_one(self, offset: int | None) -> tuple[Update | Skipped, ...]:
        """The pending updates as raw JSON, each read on its own: one PTB cannot read is
        skipped with its reason (and its id, when a number, so the offset moves past it)."""
        assert self._poll_bot is not None
        raw = await self._poll_bot._post("getUpdates", {"offset": offset, "timeout": 0,
                                                  "allowed_updates": list(ALLOWED_UPDATES)})
        return tuple(read_update(item, self._poll_bot) for item in
                     (raw if isinstance(raw, list) else []))

    async def _identify(self, sender: str) -> Any:
        assert self.services is not None
        return await self.services.identify(CHANNEL, sender)

    async def _placeholders(self, inbounds: list[Inbound],
                            shown: frozenset[str] = frozenset()) -> None:
        """"…" at once for the known people's messages (never for strangers, blocked
        people or buttons: nothing will stream for them), but those the poller's thread
        already showed (`shown`, external ids)."""
        if self.sender is None or self.services is None or not self.sender.drafts_wanted:
            return
        wanting = self._wanting_placeholders(inbounds)
        for item in wanting:
            if item.external_id in shown:  # shown from the cache, maybe stale: refresh it
                self._known.now(item.sender)  # behind (the thread's loop cannot ask)
        wanted = [item for item in wanting if item.external_id not in shown]
        if not wanted:
            return
        known = await self._known.of(i.sender for i in wanted)
        started = False
        for item in wanted:
            reserved = self.sender.reserve_draft(f"{CHANNEL}:{item.sender}") \
                if known[item.sender] else None
            if reserved is not None:
                assert self.bot is not None
                task = asyncio.create_task(self.sender.show_placeholder(self.bot, *reserved))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
                started = True
        if started:  # let them go out now, before the batch's transaction takes the loop
            await asyncio.sleep(0)

    @staticmethod
    def _wanting_placeholders(inbounds: Sequence[Inbound]) -> list[Inbound]:
        return [item for item in inbounds if item.event is None and item.text.strip()
                and item.room is None]  # no draft in a group

    # ------------------------------------------------------------------ poller's thread
    async def _fetch(self, offset: int | None) -> tuple[
            Sequence[Update | Skipped], list[Inbound | Skipped], frozenset[str]]:
        """On the intake loop: one long poll, then "…" at once for the messages of people
        known from the cache (the others get theirs on Axi's loop, which may ask the
        database). Returns the batch, as fetched and as read, and the external ids whose
        placeholder is shown."""
        assert self._poll_bot is not None
        async with asyncio.timeout(self.config.watchdog_s):
            updates: Sequence[Update | Skipped] = await self._poll_bot.get_updates(
                offset=offset, timeout=self.config.poll_timeout_s,
                allowed_updates=list(ALLOWED_UPDATES))
        read = self._read(updates)
        sender = self.sender
        if sender is None or not sender.drafts_wanted or not updates:
            return updates, read, frozenset()
        inbounds = [item for item in read if isinstance(item, Inbound)]
        shown, showing = [], []
        for item in self._wanting_placeholders(inbounds):
            if self._known.cached(item.sender):
                reserved = sender.reserve_draft(f"{CHANNEL}:{item.sender}")
                if reserved is not None:
                    showing.append(self._intake.spawn(
                        sender.show_placeholder(self._poll_bot, *reserved)))
                    shown.append(item.external_id)
        if showing:  # shown before the batch is handed over (and Axi's loop wakes up)
            await asyncio.wait(showing, timeout=PLACEHOLDER_WAIT_S)
        return updates, read, frozenset(shown)

    def _read(self, updates: Sequence[Update | Skipped]) -> list[Inbound | Skipped]:
        """Each update as an Inbound, or why it is skipped (pure: either loop may call it)."""
        return [u if isinstance(u, Skipped) else to_inbound(
            u, bot_id=self.bot_id, bot_username=self.bot_username, groups=self.config.groups)
            for u in updates]

    async def _open_poll_bot(self) -> None:
        """On the intake loop: the bot that polls and shows placeholders (its own pools)."""
        bot = self._new_bot()
        with contextlib.suppress(TelegramError):  # getMe: a refusal shows at the poll
            await bot.initialize()
        self._poll_bot = bot

    async def _close_poll_bot(self) -> None:
        bot, self._poll_bot = self._poll_bot, None
        if bot is not None:
            with contextlib.suppress(Exception):
                await bot.shutdown()

    async def _renew_poll_bot(self) -> None:
        """The watchdog: a poll silent for `watchdog_s` gets a fresh connection pool."""
        old = self._poll_bot
        await self._open_poll_bot()
        if old is not None:
            with contextlib.suppress(Exception):
                await old.shutdown()
