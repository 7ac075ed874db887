"""Reading Axi's mailbox over IMAP: every mail exactly once, even across crashes.

The cursor is (mailbox, UIDVALIDITY, last UID), stored in `curseurs_canal` in the same
transaction as the messages accepted up to it (the email channel commits both through
`ChannelServices.accept_batch`). `\\Seen` is never used: a person reading the mailbox must
not hide mail from Axi, so everything is fetched with `BODY.PEEK[]`.

- First start (no cursor): the mail already there is NOT answered (the earlier assistants
  replayed years of old mail); the cursor starts after the newest UID, and says so.
- Every wake-up (IDLE push, IDLE renewal at most every 29 minutes, reconnect, poll) runs
  `UID SEARCH UID last+1:*`: IDLE is only a hint, and a server without IDLE is polled.
- A UIDVALIDITY change (the mailbox was rebuilt) is a resync: the messages received since
  a day before the last one accepted are fetched again, and those already accepted are
  recognised by the SHA-256 of their raw bytes (the message's external id), never by
  Message-ID alone (a sender may reuse one).

This module speaks IMAP (aioimaplib) and nothing else: what a mail means is
channels/email_parse.py's, what to do with it channels/email.py's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from aioimaplib import aioimaplib

log = logging.getLogger(__name__)

IDLE_RENEW_S = 29 * 60
"""RFC 2177: a client re-issues IDLE at least every 29 minutes (servers drop idlers at 30)."""
FETCH_BATCH = 50
"""UIDs fetched and accepted per transaction (and per cursor move)."""
RESYNC_DAYS_BACK = 1

_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_LITERAL = re.compile(rb"FETCH \(.*\{(\d+)\}\s*$")
_FETCH_UID = re.compile(rb"UID (\d+)")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_INTERNALDATE = re.compile(rb'INTERNALDATE "([^"]+)"')


class ImapError(Exception):
    """The server refused or the connection broke: the reader reconnects with backoff."""


@dataclass(frozen=True)
class ImapConfig:
    host: str
    port: int
    user: str
    password: str = ""
    tls: str = "ssl"  # "ssl" or "none" (starttls is refused by the settings)
    folder: str = "INBOX"
    timeout_s: float = 60.0
    poll_s: float = 60.0  # a server without IDLE is polled this often
    idle_renew_s: float = IDLE_RENEW_S
    max_message_bytes: int = 60 * 1024 * 1024
    ssl_context: ssl.SSLContext | None = None

    @property
    def cursor_key(self) -> str:
        return f"imap:{self.user}@{self.host}/{self.folder}"


@dataclass(frozen=True)
class Cursor:
    uidvalidity: int
    last_uid: int
    since: str  # ISO date: the newest accepted message's arrival (resyncs start a day before)
    resync_top: int = 0
    """While a resync is under way: the highest UID when it began (mail at or below it is
    read only if recent); 0 otherwise. Stored, so a crash mid-resync resumes it."""

    def dumps(self) -> str:
        return json.dumps({"uidvalidity": self.uidvalidity, "last_uid": self.last_uid,
                           "since": self.since, "resync_top": self.resync_top})

    @classmethod
    def loads(cls, value: str | None) -> Cursor | None:
        if not value:
            return None
        try:
            data = json.loads(value)
            return cls(int(data["uidvalidity"]), int(data["last_uid"]), str(data.get("since", "")),
                       int(data.get("resync_top") or 0))
        except (ValueError, KeyError, TypeError):
            log.warning("unreadable IMAP cursor %r: starting after the newest mail", value[:200])
            return None


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes
    internal_date: datetime | None
    too_big: int | None = None
    """The message's size when it is over `max_message_bytes`: then `raw` holds only its
    header (the channel holds it, with the reason; nothing is read into memory)."""


class ImapSession:
    """One logged-in connection with the folder selected."""

    def __init__(self, config: ImapConfig):
        self.config = config
        self.client: Any = None
        self.uidvalidity = 0
        self.idle_supported = False
        self.lost = asyncio.Event()  # the server closed the connection (restart, crash)
        self.news = False
        """The server announced new mail (EXISTS/RECENT) outside IDLE, e.g. at the end of a
        FETCH: Dovecot says it once, and the next IDLE would not say it again — so the
        reader searches again instead of idling (else the mail waits up to 29 minutes)."""

    async def open(self) -> None:
        cfg = self.config
        try:
            context = None
            if cfg.tls == "ssl":
                context = cfg.ssl_context or ssl.create_default_context()
            # IMAP4 with a context is IMAP4_SSL, which cannot report a lost connection
            self.client = aioimaplib.IMAP4(cfg.host, cfg.port, timeout=cfg.timeout_s,
                                           conn_lost_cb=lambda _exc: self.lost.set(),
                                           ssl_context=context)
            self._watch_news()
            await asyncio.wait_for(self.client.wait_hello_from_server(), cfg.timeout_s)
            login = await self.client.login(cfg.user, cfg.password)
            if login.result != "OK":
                raise ImapError(f"IMAP login refused for {cfg.user}: {_said(login)}")
            selected = await self.client.select(_quote(cfg.folder))
            if selected.result != "OK":
                raise ImapError(f"cannot open folder {cfg.folder!r}: {_said(selected)}")
        except (OSError, TimeoutError, aioimaplib.Abort) as exc:
            await self.close()
            raise ImapError(f"IMAP {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}") from exc
        except BaseException:
            await self.close()
            raise
        found = next((m for line in selected.lines if (m := _UIDVALIDITY.search(bytes(line)))),
                     None)
        if found is None:
            await self.close()
            raise ImapError(f"the server gave no UIDVALIDITY for {cfg.folder!r}")
        self.uidvalidity = int(found.group(1))
        self.idle_supported = bool(self.client.has_capability("IDLE"))

    def _watch_news(self) -> None:
        """aioimaplib drops an EXISTS that comes with another command's response ("ignored
        untagged response"), or files it under the response of a command it runs alone
        (MOVE to the done folder, SELECT), where nobody reads it: note it whatever command
        is pending (its only hook is the protocol's own method). A note taken before a
        search is that search's (`uids_after` clears it), so noting too much costs
        nothing; missing one left the mail for the next IDLE renewal (29 minutes)."""
        protocol = self.client.protocol
        untagged = protocol._untagged_response

        def seen(line: bytes) -> Any:
            if b"EXISTS" in line or b"RECENT" in line:
                self.news = True
            return untagged(line)

        protocol._untagged_response = seen

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            if client.has_pending_idle():
                client.idle_done()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.logout(), 5)
        with contextlib.suppress(Exception):
            client.protocol.transport.close()
        # aioimaplib's own tasks (an IDLE, its waiters) would be destroyed pending
        pending = [t for t in list(getattr(client, "tasks", ())) if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def uids_after(self, last_uid: int) -> list[int]:
        self.news = False  # this search sees what was announced so far
        response = await self._command(self.client.uid_search(f"UID {last_uid + 1}:*",
                                                              charset=None))
        return sorted(u for u in _numbers(response.lines) if u > last_uid)

    async def uids_since(self, day: datetime) -> list[int]:
        self.news = False
        when = day.strftime("%d-%b-%Y")  # IMAP dates have English month names
        response = await self._command(self.client.uid_search(f"SINCE {when}", charset=None))
        return sorted(_numbers(response.lines))

    async def max_uid(self) -> int:
        response = await self._command(self.client.uid_search("ALL", charset=None))
        return max(_numbers(response.lines), default=0)

    async def sizes(self, uids: list[int]) -> dict[int, int]:
        """RFC822.SIZE of each message, in one round trip."""
        if not uids:
            return {}
        response = await self._command(self.client.uid(
            "fetch", ",".join(map(str, uids)), "(UID RFC822.SIZE)"))
        found = {}
        for line in response.lines:
            head = bytes(line)
            uid, size = _FETCH_UID.search(head), _SIZE.search(head)
            if uid is not None and size is not None:
                found[int(uid.group(1))] = int(size.group(1))
        return found

    async def fetch(self, uid: int, *, size: int | None = None) -> Fetched | None:
        """One message's raw bytes (BODY.PEEK[]: never marks it read); None if gone. Over
        `max_message_bytes`, only its header."""
        too_big = size if size is not None and size > self.config.max_message_bytes else None
        part = "BODY.PEEK[HEADER]" if too_big else "BODY.PEEK[]"
        response = await self._command(self.client.uid("fetch", str(uid),
                                                       f"(UID INTERNALDATE {part})"))
        lines = response.lines
        for i, line in enumerate(lines):
            if isinstance(line, bytearray | bytes) and _FETCH_LITERAL.search(bytes(line)):
                head = bytes(line)
                found = _FETCH_UID.search(head)
                if found is not None and int(found.group(1)) != uid:
                    continue
                if i + 1 < len(lines):
                    raw = bytes(lines[i + 1])
                    return Fetched(uid, raw, _internal_date(head, lines[i + 2:i + 3]), too_big)
        return None  # expunged meanwhile

    async def wait_for_news(self) -> None:
        """Until the server pushes something (IDLE) or it is time to look anyway."""
        cfg = self.config
        if not self.idle_supported:
            await asyncio.sleep(cfg.poll_s)
            return
        idle = await self._command_task(self.client.idle_start(timeout=cfg.idle_renew_s))
        try:
            while True:
                pushed = await self._unless_lost(
                    self.client.wait_server_push(timeout=cfg.idle_renew_s + 5))
                if pushed == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                lines = pushed if isinstance(pushed, list) else getattr(pushed, "lines", [])
                if any(bytes(x).startswith(b"BYE") for x in lines):  # server shutting down
                    self.lost.set()
                    raise ImapError("the IMAP server closed the session (BYE)")
                if any(b"EXISTS" in bytes(x) or b"RECENT" in bytes(x) for x in lines):
                    break
        finally:
            if self.client is not None and not self.lost.is_set() \
                    and self.client.has_pending_idle():
                self.client.idle_done()
                with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(idle), cfg.timeout_s)
            if not idle.done():  # the connection is gone: nobody will end it
                idle.cancel()
                with contextlib.suppress(BaseException):
                    await idle

    async def move(self, uids: list[int], folder: str) -> None:
        if not uids:
            return
        await self._command(self.client.uid("move", ",".join(map(str, uids)), _quote(folder)))

    async def _unless_lost(self, call: Any) -> Any:
        """`call`'s result, or ImapError as soon as the connection is lost."""
        task = asyncio.ensure_future(call)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            await asyncio.wait({task, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.cancelled() or (self.lost.is_set() and not task.done()):
            raise ImapError("IMAP connection lost")
        try:
            return task.result()
        except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout) as exc:
            raise ImapError(f"IMAP: {type(exc).__name__}: {exc}") from exc

    async def _command_task(self, call: Any) -> Any:
        if self.lost.is_set():
            raise ImapError("IMAP connection lost")
        return await self._unless_lost(asyncio.wait_for(call, self.config.timeout_s))

    async def _command(self, call: Any) -> Any:
        if self.lost.is_set():
            call.close()
            raise ImapError("IMAP connection lost")
        try:
            response = await self._unless_lost(asyncio.wait_for(call, self.config.timeout_s))
        except (OSError, TimeoutError, aioimaplib.Abort, aioimaplib.CommandTimeout) as exc:
            raise ImapError(f"IMAP: {type(exc).__name__}: {exc}") from exc
        if response.result != "OK":
            raise ImapError(f"IMAP command refused: {_said(response)}")
        return response


async def new_mail(session: ImapSession, cursor: Cursor | None,
                   ) -> AsyncIterator[tuple[list[Fetched], Cursor]]:
    """The mail not accepted yet, in batches, each with the cursor to store with it."""
    if cursor is None:
        start = Cursor(session.uidvalidity, await session.max_uid(),
                       datetime.now(UTC).isoformat())
        log.info("first reading of %s: the mail already there (UIDs up to %s) is left "
                 "alone; mail arriving from now on is answered", session.config.folder,
                 start.last_uid)
        yield [], start
        return
    if cursor.uidvalidity != session.uidvalidity:
        log.warning("UIDVALIDITY of %s changed (%s → %s): resync, known mail recognised by "
                    "its content", session.config.folder, cursor.uidvalidity, session.uidvalidity)
        cursor = Cursor(session.uidvalidity, 0, cursor.since, await session.max_uid())
    if cursor.resync_top:  # recent mail up to the top, then back to normal
        uids = [u for u in await session.uids_since(_resync_from(cursor.since))
                if cursor.last_uid < u <= cursor.resync_top]
    else:
        uids = await session.uids_after(cursor.last_uid)
    for i in range(0, len(uids), FETCH_BATCH):
        chunk = uids[i:i + FETCH_BATCH]
        sizes = await session.sizes(chunk)
        batch = [f for uid in chunk
                 if (f := await session.fetch(uid, size=sizes.get(uid))) is not None]
        newest = max((f.internal_date for f in batch if f.internal_date), default=None)
        since = newest.isoformat() if newest is not None and newest.isoformat() > cursor.since \
            else cursor.since
        cursor = Cursor(session.uidvalidity, max(cursor.last_uid, *chunk), since,
                        cursor.resync_top)
        yield batch, cursor
    if cursor.resync_top:
        yield [], Cursor(session.uidvalidity, max(cursor.last_uid, cursor.resync_top),
                         cursor.since)


def _resync_from(since: str) -> datetime:
    try:
        when = datetime.fromisoformat(since)
    except ValueError:
        when = datetime.now(UTC)
    return when - timedelta(days=RESYNC_DAYS_BACK)


def _numbers(lines: list[Any]) -> list[int]:
    found: list[int] = []
    for line in lines:
        words = bytes(line).split()
        if words and words[0].upper() == b"SEARCH":
            words = words[1:]
        if words and all(w.isdigit() for w in words):
            found.extend(int(w) for w in words)
    return found


def _internal_date(head: bytes, rest: list[Any]) -> datetime | None:
    found = _INTERNALDATE.search(head) or next(
        (m for x in rest if (m := _INTERNALDATE.search(bytes(x)))), None)
    if found is None:
        return None
    try:
        return datetime.strptime(found.group(1).decode(), "%d-%b-%Y %H:%M:%S %z")
    except ValueError:
        return None


def _quote(name: str) -> str:
    """A mailbox name as IMAP wants it: modified UTF-7 (RFC 3501 5.1.3), quoted."""
    encoded = _mutf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mutf7(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()
    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def _said(response: Any) -> str:
    text = b" ".join(bytes(x) for x in getattr(response, "lines", [])[-1:])
    return text.decode("utf-8", "replace")[:200] or str(getattr(response, "result", "?"))
