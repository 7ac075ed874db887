"""Email end to end: every mail accepted exactly once, and how fast, next to a bare IDLE loop.

Why: the email channel (channels/email.py, channels/email_imap.py) promises that every mail
put in Axi's mailbox is accepted once — never lost, never doubled — and that with IMAP
IDLE a mail is in the inbox within 2 s (p95) of its delivery. This benchmark measures it on
real servers, next to the least any IMAP reader can do on the same machine (the floor).

A benchmark script, not a test. N mails (--messages) from S known clients (--senders, each
a person with an email identity, so every mail is answered) are put in a real Dovecot
(tests/fakes/dovecot.Dovecot, IMAP over TLS with IDLE) with IMAP APPEND, as our mail server
delivers them, from a separate thread at --rate mails a second. Each mail is vouched for as
our MX would (`Authentication-Results: mx.icidordogne.fr; dmarc=pass header.from=<domain>`
on top) and has a unique Message-ID; the time each APPEND completed (its tagged OK) is
recorded by Message-ID. The same mails, in the same order and pace, twice in the same run:

1. the floor: a bare aioimaplib client on the same TLS port — login, select, UID SEARCH
   for new UIDs and UID FETCH BODY.PEEK[] of each (searching again while the server
   reports more, see `watch_news`), then IDLE until an EXISTS push, DONE, and again; no
   parsing, no database. Dovecot tells an idling client of new mail 0.5 s after the first
   change (NOTIFY_DELAY_MSECS, lib-storage/mailbox-watch.c, not configurable): under a
   steady flow that alone makes the floor's p50 ≈ 250 ms and p95 ≈ 500 ms;
2. Axi (on a fresh mailbox, `Dovecot.reset()`): the whole assistant (`bot.app.Axi` with
   `channels.email.EmailChannel`, production IMAP settings) on embedded PostgreSQL
   (--data-dir) or --database-url — emptied first —, an instant LLM
   (tests/fakes/ollama_server.FakeOllama, tiny reported timings) and a real SMTP server
   that keeps the replies (tests/fakes/smtp_capture.SmtpCapture). The channel's hourly caps
   (5 per sender, 50 in all by default) are raised so that they hold none of these mails.

"Accepted" is when the channel's `accept_batch` returned (the batch and the IMAP cursor
committed in one transaction): an instance wrapper records it, as it records when each
mail was fetched and when each read pass began — no Axi code is changed. A mail's accepted
row is found by its Message-ID (the inbound row's `reference_fil`); its reply by the
In-Reply-To of what the SMTP server received.

Printed: mails appended, accepted once (must be all), lost (appended, not accepted within
--timeout after the last APPEND), duplicated (inbound rows per external id or per
Message-ID > 1, SMTP replies per In-Reply-To > 1), held, answered — lost, duplicated, held
and unanswered must be 0, or the exit status is 1 —; APPEND → accepted p50/p95/p99/max for
Axi against APPEND → fetched for the floor, their ratio, the 2 s p95 target (PASS/FAIL);
APPEND → reply captured by the SMTP server; mails/s; and where Axi's time goes (IDLE
wake-up, FETCH, parsing and caps, the accept transaction), over all mails and over its
slowest 5 %; and how often Axi went back to IDLE although the server had just reported
new mail with a SEARCH or FETCH response (such a mail waits for the next delivery's push,
or for the IDLE renewal when none comes: see `watch_news`).

    .venv/bin/python bench/email.py --quick                     # 100 mails
    .venv/bin/python bench/email.py                             # 1,000 mails at 20/s
    .venv/bin/python bench/email.py --rate 50 --senders 12
    .venv/bin/python bench/email.py --database-url postgresql://postgres@127.0.0.1:5432/bench_email
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# this file is named email.py: with bench/ on the path (python puts the script's own
# directory first) `import email` would find this file instead of the standard library's
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

from aioimaplib import aioimaplib  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.harness import empty_tables, ensure_database  # noqa: E402
from bot.app import Axi  # noqa: E402
from bot.channel import ChannelSet, CursorUpdate  # noqa: E402
from bot.config import DEFAULT_LOCAL_MODEL, Settings  # noqa: E402
from bot.inbound import Inbound  # noqa: E402
from channels.email import CHANNEL, EmailChannel, EmailConfig, SmtpConfig  # noqa: E402
from channels.email_imap import FETCH_BATCH, Fetched, ImapConfig, ImapSession  # noqa: E402
from memory import migrate  # noqa: E402
from memory.database import async_url, open_database  # noqa: E402
from tests.fakes.dovecot import Dovecot  # noqa: E402
from tests.fakes.ollama_server import FakeOllama  # noqa: E402
from tests.fakes.smtp_capture import SmtpCapture  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATA_DIR = Path("/root/axi-bench-email")
AXI = "axi@icidordogne.fr"
AUTHSERV = "mx.icidordogne.fr"
TARGET_P95_S = 2.0
NO_CAP = 1_000_000  # the channel's hourly caps, raised: they must hold none of these mails
DOMAINS = ["example.fr", "example.com", "example.org", "example.net", "exemple.test"]
REPLY = "Bonjour, bien reçu : je regarde cela et je reviens vers vous rapidement."
SUBJECTS = ["La longère de Vergt", "Compromis de Saint-Cyprien", "Visite de samedi",
            "DPE de la grange du Bugue", "Maison de bourg à Mauzac", "Rendez-vous notaire",
            "Estimation à Sarlat", "Offre sur la maison de Lalinde"]
BODIES = [
    "Bonjour,\n\nLa longère est-elle toujours disponible ? Nous aimerions la visiter.\n\n"
    "Cordialement",
    "Bonjour,\n\nOù en est le compromis ? Le notaire attend les diagnostics.\n\nMerci",
    "Bonjour,\n\nPouvez-vous me rappeler l'heure du rendez-vous de demain ?\n\nBonne journée",
    "Bonjour,\n\nQuel est le DPE de la grange ? Et le montant de la taxe foncière ?\n\nMerci",
    "Bonjour,\n\nY a-t-il des visites prévues samedi matin ?\n\nBien à vous",
    "Bonjour,\n\nNous faisons une offre au prix, pouvez-vous la transmettre ?\n\nCordialement",
]
_MESSAGE_ID = re.compile(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)
_FETCH_LITERAL = re.compile(rb"FETCH \(.*\{(\d+)\}\s*$")


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Mail:
    message_id: str
    sender: str
    raw: bytes


def senders_of(count: int) -> list[str]:
    return [f"client{i:02d}@{DOMAINS[i % len(DOMAINS)]}" for i in range(count)]


def make_plan(messages: int, senders: Sequence[str], run_id: str, seed: int) -> list[Mail]:
    """The mails in APPEND order: each from a sender drawn at random, as our MX delivers
    them (its Authentication-Results on top), each with a Message-ID of its own."""
    rng = random.Random(seed)
    mails = []
    for i in range(messages):
        sender = rng.choice(senders)
        domain = sender.rpartition("@")[2]
        message_id = f"<bench-{run_id}-{i:05d}@{domain}>"
        headers = [
            f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom={domain}; "
            f"dkim=pass header.d={domain}; dmarc=pass header.from={domain}",
            f"From: {sender}", f"To: {AXI}", f"Subject: {rng.choice(SUBJECTS)}",
            f"Message-ID: {message_id}", "Date: Mon, 30 Nov 2026 10:00:00 +0100",
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
        ]
        body = rng.choice(BODIES)
        raw = ("\r\n".join(headers) + "\r\n\r\n" + body.replace("\n", "\r\n") + "\r\n").encode()
        mails.append(Mail(message_id, sender, raw))
    return mails


def message_id_of(raw: bytes) -> str | None:
    found = _MESSAGE_ID.search(raw)
    return found.group(1).decode("ascii", "replace") if found else None


# ----------------------------------------------------------------------------- feeding
@dataclass
class Fed:
    """What the feeder did: when each mail's APPEND completed (time.time(), the clock the
    SMTP capture stamps replies with), by Message-ID."""

    appended: dict[str, float] = field(default_factory=dict)
    append_ms: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    max_lag_s: float = 0.0
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def feed(server: Dovecot, mails: Sequence[Mail], rate: float, fed: Fed) -> None:
    """Runs in its own thread (stdlib imaplib blocks): one IMAP connection on the plain
    port, as a delivery agent keeps one, one APPEND every 1/rate s."""
    try:
        with server.imap() as client:
            fed.started = t0 = time.time()
            for i, mail in enumerate(mails):
                due = t0 + i / rate
                delay = due - time.time()
                if delay > 0:
                    time.sleep(delay)
                before = time.time()
                fed.max_lag_s = max(fed.max_lag_s, before - due)
                typ, data = client.append("INBOX", "()", None, mail.raw)
                done = time.time()
                if typ != "OK":
                    raise RuntimeError(f"APPEND refused: {typ} {data!r}")
                fed.appended[mail.message_id] = done
                fed.append_ms.append((done - before) * 1000.0)
    except Exception as exc:
        fed.error = f"{type(exc).__name__}: {exc}"
    finally:
        fed.finished = time.time()
        fed.done.set()


def start_feed(server: Dovecot, mails: Sequence[Mail], rate: float, name: str) -> tuple[
        Fed, threading.Thread]:
    fed = Fed()
    thread = threading.Thread(target=feed, args=(server, mails, rate, fed), daemon=True,
                              name=name)
    thread.start()
    return fed, thread


# ----------------------------------------------------------------------------- measures
def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation; nan when empty."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def dist(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    xs = [v * scale for v in values]
    return {"n": len(xs), "p50": pct(xs, 50), "p95": pct(xs, 95), "p99": pct(xs, 99),
            "max": max(xs) if xs else float("nan"),
            "mean": sum(xs) / len(xs) if xs else float("nan")}


def dist_ms(seconds: Sequence[float]) -> dict[str, float]:
    return dist(seconds, 1000.0)


async def until(done: Any, fed: Fed, timeout_s: float) -> bool:
    """Wait for the feed to end and `done()` to be true, or for the timeout (counted from
    the last APPEND)."""
    await asyncio.to_thread(fed.done.wait)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await done():
            return True
        await asyncio.sleep(0.1)
    return bool(await done())


# ----------------------------------------------------------------------------- 1. the floor
@dataclass
class FloorTrace:
    fetched: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    passes: int = 0
    pushes: int = 0
    searches: int = 0
    news_outside_idle: int = 0
    """EXISTS/RECENT the server sent with a SEARCH or FETCH (aioimaplib drops them): each
    made the reader search again before going back to IDLE."""
    found_by_search_again: int = 0
    """Mails found by a later UID SEARCH of the same pass: they arrived after the pass's
    first SEARCH had run."""


def _numbers(lines: Sequence[Any]) -> list[int]:
    found: list[int] = []
    for line in lines:
        words = bytes(line).split()
        if words and words[0].upper() == b"SEARCH":
            words = words[1:]
        if words and all(w.isdigit() for w in words):
            found.extend(int(w) for w in words)
    return found


def _literal(lines: Sequence[Any]) -> bytes | None:
    for i, line in enumerate(lines):
        if isinstance(line, bytes | bytearray) and _FETCH_LITERAL.search(bytes(line)) \
                and i + 1 < len(lines):
            return bytes(lines[i + 1])
    return None


def watch_news(client: Any, news: list[bool]) -> None:
    """Set news[0] when the server reports new mail (EXISTS, RECENT) outside IDLE.

    A SEARCH runs on the session's view as of the previous command; Dovecot adds the mail
    delivered since at the END of a command, with an untagged EXISTS in ITS response — a
    SEARCH's or a FETCH's, which aioimaplib drops ("ignored untagged response") — and the
    next IDLE does not announce that mail again. A reader that ignores it leaves the mail
    unread until the next delivery or the IDLE renewal."""
    protocol = client.protocol
    untagged = protocol._untagged_response

    def seen(line: bytes) -> Any:
        if protocol.pending_sync_command is None and (b"EXISTS" in line or b"RECENT" in line):
            news[0] = True
        return untagged(line)

    protocol._untagged_response = seen


async def bare_reader(server: Dovecot, trace: FloorTrace, ready: asyncio.Event) -> None:
    """The least a correct IMAP IDLE reader does: what is new, fetched at once (searching
    again while the server reports more), then IDLE until an EXISTS."""
    client = aioimaplib.IMAP4_SSL(server.host, server.ssl_port, timeout=30,
                                  ssl_context=server.ssl_context())
    await client.wait_hello_from_server()
    if (await client.login(server.user, server.password)).result != "OK":
        raise RuntimeError("floor: IMAP login refused")
    if (await client.select("INBOX")).result != "OK":
        raise RuntimeError("floor: SELECT INBOX refused")
    news = [False]
    watch_news(client, news)
    last = 0
    try:
        while True:
            searches = 0
            while True:  # until a SEARCH finds nothing new and no news came since it began
                news[0] = False
                found = await client.uid_search(f"UID {last + 1}:*", charset=None)
                trace.searches += 1
                uids = sorted(u for u in _numbers(found.lines) if u > last)
                searches += 1
                for uid in uids:
                    fetched = await client.uid("fetch", str(uid), "(BODY.PEEK[])")
                    now = time.time()
                    raw = _literal(fetched.lines)
                    mid = message_id_of(raw) if raw is not None else None
                    if mid is not None:
                        trace.fetched[mid].append(now)
                        if searches > 1:
                            trace.found_by_search_again += 1
                    last = max(last, uid)
                if news[0]:
                    trace.news_outside_idle += 1
                elif not uids:
                    break
            trace.passes += 1
            idle = await client.idle_start(timeout=25 * 60)
            ready.set()
            while True:
                pushed = await client.wait_server_push(timeout=26 * 60)
                if pushed == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    break
                lines = pushed if isinstance(pushed, list) else []
                if any(b"EXISTS" in bytes(x) or b"RECENT" in bytes(x) for x in lines):
                    trace.pushes += 1
                    break
            client.idle_done()
            await asyncio.wait_for(idle, 30)
    finally:
        with contextlib.suppress(Exception):
            if client.has_pending_idle():
                client.idle_done()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.logout(), 5)


async def run_floor(server: Dovecot, mails: Sequence[Mail],
                    args: argparse.Namespace) -> dict[str, Any]:
    trace = FloorTrace()
    ready = asyncio.Event()
    task = asyncio.create_task(bare_reader(server, trace, ready), name="bare-imap-reader")
    try:
        await asyncio.wait_for(ready.wait(), 30)
        fed, thread = start_feed(server, mails, args.rate, "feed-floor")

        async def all_fetched() -> bool:
            return task.done() or all(trace.fetched.get(m) for m in fed.appended)

        complete = await until(all_fetched, fed, args.timeout)
        await asyncio.to_thread(thread.join)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise RuntimeError(f"floor reader failed: {task.exception()!r}")
    to_fetched = [min(trace.fetched[m]) - t for m, t in fed.appended.items()
                  if trace.fetched.get(m)]
    lost = [m for m in fed.appended if not trace.fetched.get(m)]
    span = max((min(v) for v in trace.fetched.values()), default=fed.started) - fed.started
    return {
        "appended": len(fed.appended), "fetched": len(to_fetched), "lost": len(lost),
        "lost_examples": lost[:10],
        "fetched_twice": sum(1 for v in trace.fetched.values() if len(v) > 1),
        "to_fetched_ms": dist_ms(to_fetched), "passes": trace.passes, "pushes": trace.pushes,
        "found_by_search_again": trace.found_by_search_again, "searches": trace.searches,
        "news_outside_idle": trace.news_outside_idle,
        "messages_per_s": len(to_fetched) / span if span > 0 else float("nan"),
        "span_s": span, "feed": feed_summary(fed), "complete": complete,
    }


def feed_summary(fed: Fed) -> dict[str, Any]:
    duration = fed.finished - fed.started
    return {"appended": len(fed.appended), "duration_s": duration,
            "rate": len(fed.appended) / duration if duration > 0 else float("nan"),
            "max_lag_ms": fed.max_lag_s * 1000.0, "append_ms": dist(fed.append_ms),
            "error": fed.error}


# ----------------------------------------------------------------------------- 2. Axi
def make_settings(ollama: FakeOllama, args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {
        "OLLAMA_HOST": ollama.url, "AXI_LOCAL_MODEL": DEFAULT_LOCAL_MODEL,
        "AXI_LOCAL_TIMEOUT": 30.0, "AXI_DATA_DIR": str(args.data_dir),
        "AXI_WORKER_CONCURRENCY": args.workers, "ANTHROPIC_API_KEY": None,
        "AXI_LOG_LEVEL": "WARNING", "AXI_EMBED_MODEL": "off", "AXI_QUIET_HOURS": "off",
    }
    if args.database_url:
        values["AXI_DATABASE_URL"] = args.database_url
    cfg = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert cfg.anthropic_api_key is None, "the benchmark must not reach Anthropic"
    return cfg


async def prepare_database(args: argparse.Namespace) -> None:
    """The benchmark's own database, created if missing, migrated and emptied: the IMAP
    cursor of an earlier run (another Dovecot, another UIDVALIDITY) would start a resync,
    and its people would be known twice."""
    if args.database_url:
        await ensure_database(args.database_url, async_url(args.database_url).database or "",
                              admin_database="postgres")
    async with open_database(args.database_url, args.data_dir) as db:
        await migrate.upgrade(db.engine)
        await empty_tables(db.engine)


@dataclass
class AxiTrace:
    """What the instance wrappers saw (time.time())."""

    passes: list[tuple[float, float, int]] = field(default_factory=list)
    """Each read pass (EmailChannel.read_new, run after every IDLE wake-up): start, end,
    mails stored."""
    pass_of: dict[str, float] = field(default_factory=dict)
    fetched: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    prepared: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Per mail: when its batch's parsing and hold checks (EmailChannel.inbounds) began
    and ended."""
    accept_called: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    batches: list[tuple[float, float, int]] = field(default_factory=list)
    fetch_calls: list[float] = field(default_factory=list)  # seconds each FETCH took
    left_news: int = 0
    """Read passes after which Axi went back to IDLE although the server had reported new
    mail (EXISTS/RECENT) with one of the pass's SEARCH or FETCH responses (observed only)."""


def instrument(channel: EmailChannel, app: Axi, trace: AxiTrace) -> None:
    """Instance wrappers (no Axi code changed) around the channel's read pass, its parse
    step, each session's FETCH and the accept_batch the channel calls."""
    read_new = channel.read_new
    inbounds = channel.inbounds
    services = app.services
    accept_batch = services.accept_batch
    current = [0.0]
    news = [False]

    def wrap_fetch(session: ImapSession) -> None:
        if getattr(session, "_bench_wrapped", False):
            return
        watch_news(session.client, news)  # observes the responses, changes nothing
        fetch = session.fetch

        async def timed_fetch(uid: int, *args: Any, **kwargs: Any) -> Fetched | None:
            began = time.time()
            got = await fetch(uid, *args, **kwargs)
            now = time.time()
            trace.fetch_calls.append(now - began)
            mid = message_id_of(got.raw) if got is not None else None
            if mid is not None:
                trace.fetched[mid].append(now)
                trace.pass_of.setdefault(mid, current[0])
            return got

        session.fetch = timed_fetch  # type: ignore[method-assign]
        session._bench_wrapped = True  # type: ignore[attr-defined]

    async def timed_read_new(session: ImapSession, lost: asyncio.Event | None = None) -> int:
        wrap_fetch(session)
        current[0] = began = time.time()
        news[0] = False
        stored = 0
        try:
            stored = await read_new(session, lost)
            return stored
        finally:
            trace.passes.append((began, time.time(), stored))
            trace.left_news += news[0]

    async def timed_inbounds(batch: list[Fetched]) -> list[Inbound]:
        began = time.time()
        result = await inbounds(batch)
        ended = time.time()
        for inbound in result:
            if inbound.thread_ref:
                trace.prepared[inbound.thread_ref] = (began, ended)
        return result

    async def timed_accept_batch(batch: Sequence[Inbound],
                                 cursor: CursorUpdate | None = None) -> list[int | None]:
        began = time.time()
        ids = await accept_batch(batch, cursor)
        ended = time.time()
        trace.batches.append((began, ended, len(batch)))
        for inbound, stored_id in zip(batch, ids, strict=False):
            if stored_id is not None and inbound.thread_ref:
                trace.accept_called[inbound.thread_ref] = began
                trace.accepted[inbound.thread_ref].append(ended)
        return ids

    channel.read_new = timed_read_new  # type: ignore[method-assign]
    channel.inbounds = timed_inbounds  # type: ignore[method-assign]
    services.accept_batch = timed_accept_batch


async def inbound_rows(app: Axi) -> list[Any]:
    async with app.store.db.sessions() as session:
        return list((await session.execute(text(
            "SELECT reference_fil, identifiant_externe, recu_le, etat, "
            "metadata->>'retenu' AS retenu FROM messages "
            "WHERE sens = 'entrant' AND canal = :canal ORDER BY id"), {"canal": CHANNEL})).all())


def replies_by_question(smtp: SmtpCapture, known: set[str]) -> tuple[
        dict[str, list[float]], int]:
    """SMTP arrival times of the replies, by the Message-ID they answer; and how many other
    mails arrived (notices to Ludo, replies to nothing we sent)."""
    replies: dict[str, list[float]] = defaultdict(list)
    other = 0
    for captured in list(smtp.messages):
        answered = str(captured.message.get("In-Reply-To") or "").strip()
        if answered in known:
            replies[answered].append(captured.received_at)
        else:
            other += 1
    return replies, other


async def run_axi(server: Dovecot, smtp: SmtpCapture, ollama: FakeOllama,
                  mails: Sequence[Mail], args: argparse.Namespace) -> dict[str, Any]:
    await prepare_database(args)
    smtp.clear()
    config = EmailConfig(
        address=AXI, authserv_id=AUTHSERV,
        imap=ImapConfig(host=server.host, port=server.ssl_port, user=server.user,
                        password=server.password, tls="ssl", ssl_context=server.ssl_context()),
        smtp=SmtpConfig(host=smtp.host, port=smtp.port, tls="none"),
        max_per_sender_hour=NO_CAP, max_per_hour=NO_CAP)
    assert config.imap is not None
    channel = EmailChannel(config)
    trace = AxiTrace()
    known = {m.message_id for m in mails}
    senders = sorted({m.sender for m in mails})
    wiring = ChannelSet({CHANNEL: channel}, frozenset({CHANNEL}), None)
    async with Axi(make_settings(ollama, args), wiring) as app:
        for i, address in enumerate(senders):
            await app.store.add_person(f"Client {i:02d} banc courriel", relation="client",
                                       identities=[(CHANNEL, address)])
        instrument(channel, app, trace)
        await app.start_channels()
        app.start_loops(extractor=False, maintenance=False, embeddings=False)
        deadline = time.monotonic() + 30
        while not await app.store.read_cursor(CHANNEL, config.imap.cursor_key):
            if time.monotonic() > deadline:
                raise SystemExit(f"Axi never read the mailbox: {channel.status()}")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # back in IDLE after its first (empty) pass
        fed, thread = start_feed(server, mails, args.rate, "feed-axi")

        async def all_answered() -> bool:
            replies, _ = replies_by_question(smtp, known)
            return all(trace.accepted.get(m) and replies.get(m) for m in fed.appended)

        complete = await until(all_answered, fed, args.timeout)
        await asyncio.sleep(args.grace)  # a late duplicate would show up here
        await asyncio.to_thread(thread.join)
        rows = await inbound_rows(app)
        pending = await app.store.pending_counts()
        status = channel.status()
    result = analyse_axi(fed, trace, rows, smtp, known)
    result.update(complete=complete, pending=pending, channel_status=status,
                  llm_requests=len(ollama.chat_bodies), feed=feed_summary(fed),
                  caps={"max_per_sender_hour": config.max_per_sender_hour,
                        "max_per_hour": config.max_per_hour})
    return result


def analyse_axi(fed: Fed, trace: AxiTrace, rows: Sequence[Any], smtp: SmtpCapture,
                known: set[str]) -> dict[str, Any]:
    appended = fed.appended
    rows_by_mid: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        rows_by_mid[str(row.reference_fil or "")].append(row)
    per_external = Counter(str(row.identifiant_externe) for row in rows)
    replies, other_mail = replies_by_question(smtp, known)

    accepted_once = sum(1 for m in appended if len(rows_by_mid.get(m, [])) == 1)
    lost = [m for m in appended if not rows_by_mid.get(m)]
    dup_external = sum(n - 1 for n in per_external.values() if n > 1)
    dup_message_id = sum(len(v) - 1 for m, v in rows_by_mid.items() if m in known and len(v) > 1)
    dup_replies = sum(len(v) - 1 for v in replies.values() if len(v) > 1)
    accepted_twice = sum(1 for v in trace.accepted.values() if len(v) > 1)
    held = [m for m in appended for r in rows_by_mid.get(m, []) if r.etat == "retenu"]
    held_reasons = Counter(str(r.retenu).split(" :", 1)[0] for m in appended
                           for r in rows_by_mid.get(m, []) if r.etat == "retenu")
    unanswered = [m for m in appended if not replies.get(m)]
    states = Counter(str(r.etat) for m in appended for r in rows_by_mid.get(m, []))

    to_accepted, to_recu, to_fetched, to_reply = [], [], [], []
    segments: dict[str, list[float]] = defaultdict(list)
    per_mail: list[tuple[float, dict[str, float]]] = []
    for mid, t in appended.items():
        if rows_by_mid.get(mid):
            to_recu.append(rows_by_mid[mid][0].recu_le.timestamp() - t)
        if trace.fetched.get(mid):
            to_fetched.append(min(trace.fetched[mid]) - t)
        if replies.get(mid):
            to_reply.append(min(replies[mid]) - t)
        if not trace.accepted.get(mid):
            continue
        accepted = min(trace.accepted[mid])
        to_accepted.append(accepted - t)
        if mid not in trace.fetched or mid not in trace.prepared or mid not in trace.pass_of:
            continue
        woke = max(trace.pass_of[mid], t)
        fetched = min(trace.fetched[mid])
        prep_start, prep_end = trace.prepared[mid]
        called = trace.accept_called[mid]
        parts = {
            "wake": woke - t,  # APPEND → the read pass that fetched it began (IDLE push)
            "fetch": fetched - woke,  # UID SEARCH + the FETCHes before it and its own
            "rest_of_batch": max(0.0, prep_start - fetched),  # the batch's later FETCHes
            "prepare": prep_end - max(prep_start, fetched),  # parse + caps of the batch
            "to_accept": max(0.0, called - prep_end),
            "accept": accepted - called,  # accept_batch: one transaction
        }
        if replies.get(mid):
            parts["reply"] = min(replies[mid]) - accepted
        for name, value in parts.items():
            segments[name].append(value)
        per_mail.append((accepted - t, parts))

    # mails delivered while a read pass ran (or before it) that the pass left for a later
    # one; a lost mail counts when a pass ran after its APPEND
    missed: list[float] = []
    for mid, t in appended.items():
        fetched_in = trace.pass_of.get(mid)
        if any(end > t and (fetched_in is None or start < fetched_in)
               for start, end, _ in trace.passes):
            missed.append(fetched_in - t if fetched_in is not None else float("nan"))

    # where the slowest 5 % of the mails spent their time (means, ms)
    per_mail.sort(key=lambda x: x[0])
    tail = per_mail[int(len(per_mail) * 0.95):] if per_mail else []
    tail_means = {name: 1000.0 * sum(p.get(name, 0.0) for _, p in tail) / len(tail)
                  for name in ("wake", "fetch", "rest_of_batch", "prepare", "to_accept",
                               "accept")} if tail else {}
    last_accept = max((min(v) for m, v in trace.accepted.items() if m in appended),
                      default=fed.started)
    last_reply = max((min(replies[m]) for m in appended if replies.get(m)), default=fed.started)
    pass_sizes = [n for _, _, n in trace.passes if n]
    pass_ms = [(end - start) for start, end, n in trace.passes if n]
    batch_sizes = [n for _, _, n in trace.batches if n]
    return {
        "appended": len(appended), "accepted_once": accepted_once, "lost": len(lost),
        "lost_examples": lost[:10],
        "duplicated": dup_external + dup_message_id + dup_replies,
        "duplicated_parts": {"rows_per_external_id": dup_external,
                             "rows_per_message_id": dup_message_id,
                             "smtp_replies_per_in_reply_to": dup_replies},
        "accepted_twice_by_channel": accepted_twice,
        "held": len(held), "held_reasons": dict(held_reasons), "states": dict(states),
        "answered": len(appended) - len(unanswered), "unanswered": len(unanswered),
        "unanswered_examples": unanswered[:10], "other_mail_sent": other_mail,
        "to_accepted_ms": dist_ms(to_accepted), "to_recu_le_ms": dist_ms(to_recu),
        "to_fetched_ms": dist_ms(to_fetched), "to_reply_ms": dist_ms(to_reply),
        "segments_ms": {name: dist_ms(values) for name, values in segments.items()},
        "slowest_5pct_means_ms": tail_means,
        "accepted_per_s": len(to_accepted) / (last_accept - fed.started)
        if last_accept > fed.started else float("nan"),
        "replied_per_s": len(to_reply) / (last_reply - fed.started)
        if last_reply > fed.started else float("nan"),
        "accept_span_s": last_accept - fed.started, "reply_span_s": last_reply - fed.started,
        "passes": len(trace.passes), "passes_with_mail": len(pass_sizes),
        "mails_per_pass": dist(pass_sizes),
        "pass_ms": dist_ms(pass_ms), "batches": len(batch_sizes),
        "batch_size": dist(batch_sizes),
        "accept_batch_ms": dist_ms([end - start for start, end, n in trace.batches if n]),
        "fetch_call_ms": dist_ms(trace.fetch_calls), "passes_leaving_news": trace.left_news,
        "missed_by_their_pass": len(missed),
        "missed_wait_ms": dist_ms([m for m in missed if m == m]),
    }


# ----------------------------------------------------------------------------- report
def f0(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:,.0f}"


def line(d: dict[str, float]) -> str:
    return (f"p50 {f0(d['p50'])} ms, p95 {f0(d['p95'])} ms, p99 {f0(d['p99'])} ms, "
            f"max {f0(d['max'])} ms (n={d['n']})")


def report(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Print the results; return the must-be-0 measures that were not 0."""
    floor, axi = result["floor"], result["axi"]
    feed_a, feed_f = axi["feed"], floor["feed"]
    n = result["messages"]
    print()
    print(f"mails: {n} from {args.senders} known clients (people with an email identity), "
          f"APPENDed at {args.rate:g}/s (Axi's run: {feed_a['rate']:.1f}/s over "
          f"{feed_a['duration_s']:.0f} s, APPEND {f0(feed_a['append_ms']['p50'])} ms p50, "
          f"behind schedule at most {f0(feed_a['max_lag_ms'])} ms)")
    caps = axi["caps"]
    print(f"channel caps raised for the benchmark: max_per_sender_hour={caps['max_per_sender_hour']:,}"
          f", max_per_hour={caps['max_per_hour']:,} (defaults 5 and 50 would hold all but 50 "
          "of these mails); IMAP: production settings (TLS, IDLE, FETCH_BATCH="
          f"{FETCH_BATCH})")
    print()
    failures: list[str] = []
    dup = axi["duplicated_parts"]
    checks: list[tuple[str, int, str, str]] = [
        ("mails appended", axi["appended"], "", ""),
        ("accepted once", axi["accepted_once"], "all",
         f"(one inbound row per Message-ID; accept_batch returned it for "
         f"{axi['to_accepted_ms']['n']})"),
        ("lost", axi["lost"], "0", f"(not accepted {args.timeout:g} s after the last APPEND)"),
        ("duplicated", axi["duplicated"], "0",
         f"(rows per external id > 1: {dup['rows_per_external_id']}, rows per Message-ID "
         f"> 1: {dup['rows_per_message_id']}, SMTP replies per In-Reply-To > 1: "
         f"{dup['smtp_replies_per_in_reply_to']}; accepted twice by the channel: "
         f"{axi['accepted_twice_by_channel']})"),
        ("held", axi["held"], "0", f"{axi['held_reasons'] or ''}"),
        ("answered", axi["answered"], "all", f"(one reply captured by the SMTP server; "
         f"{axi['other_mail_sent']} other mails sent)"),
    ]
    for label, value, must, note in checks:
        verdict = ""
        if must == "0":
            verdict = "PASS" if value == 0 else "FAIL"
        elif must == "all":
            verdict = "PASS" if value == n else "FAIL"
        if verdict == "FAIL":
            failures.append(label)
        print(f"{label:<16} {value:>6}  {verdict:<4}  {note}")
    print()
    a, b = axi["to_accepted_ms"], floor["to_fetched_ms"]
    ratio95 = a["p95"] / b["p95"] if b["p95"] else float("nan")
    ratio50 = a["p50"] / b["p50"] if b["p50"] else float("nan")
    target = a["p95"] <= TARGET_P95_S * 1000.0
    print("APPEND completed →")
    print(f"  Axi accepted (accept_batch returned)  {line(a)}")
    print(f"  floor fetched (bare aioimaplib)       {line(b)}")
    print(f"  ratio Axi/floor: p50 {ratio50:.2f}×, p95 {ratio95:.2f}×")
    print(f"  target Axi p95 ≤ {TARGET_P95_S:g} s: {f0(a['p95'])} ms  "
          f"{'PASS' if target else 'FAIL'}")
    print(f"  Axi fetched                           {line(axi['to_fetched_ms'])}")
    print(f"  Axi row's recu_le (transaction start) {line(axi['to_recu_le_ms'])}")
    print(f"  Axi reply received by SMTP            {line(axi['to_reply_ms'])}")
    print(f"mails/s: Axi accepted {axi['accepted_per_s']:.1f}/s (last {axi['accept_span_s']:.1f}"
          f" s after the first APPEND), replied {axi['replied_per_s']:.1f}/s (last "
          f"{axi['reply_span_s']:.1f} s); floor fetched {floor['messages_per_s']:.1f}/s; "
          f"APPENDs {feed_a['rate']:.1f}/s")
    print()
    seg = axi["segments_ms"]
    tail = axi["slowest_5pct_means_ms"]
    names = [("wake", "APPEND → read pass began (IDLE push, DONE)"),
             ("fetch", "→ fetched (SEARCH, SIZEs, earlier FETCHes, its own)"),
             ("rest_of_batch", "→ rest of its batch fetched"),
             ("prepare", "→ batch parsed, caps checked"),
             ("to_accept", "→ accept_batch called"),
             ("accept", "accept_batch (one transaction)"),
             ("reply", "accepted → reply at the SMTP server")]
    print("where Axi's time goes (per mail; p50 / p95 / mean ms; mean over the slowest 5 %):")
    for key, label in names:
        d = seg.get(key)
        if d is None:
            continue
        slow = tail.get(key)
        print(f"  {label:<50} {f0(d['p50']):>6} / {f0(d['p95']):>6} / {f0(d['mean']):>6}"
              + (f"   slowest 5 %: {f0(slow):>6}" if slow is not None else ""))
    print(f"  read passes {axi['passes']} ({axi['passes_with_mail']} with mail; mails per pass "
          f"p50 {f0(axi['mails_per_pass']['p50'])}, max {f0(axi['mails_per_pass']['max'])}; "
          f"a pass p50 {f0(axi['pass_ms']['p50'])} ms, p95 {f0(axi['pass_ms']['p95'])} ms); "
          f"accept_batch p50 {f0(axi['accept_batch_ms']['p50'])} ms, p95 "
          f"{f0(axi['accept_batch_ms']['p95'])} ms for batches of p50 "
          f"{f0(axi['batch_size']['p50'])}, max {f0(axi['batch_size']['max'])}; one FETCH "
          f"p50 {axi['fetch_call_ms']['p50']:.1f} ms")
    print(f"  Axi went back to IDLE {axi['passes_leaving_news']} times although the server had "
          "just reported new mail with a SEARCH/FETCH response; "
          f"{axi['missed_by_their_pass']} mails arrived while a read pass was under way and "
          f"were left for a later one: APPEND → that pass {line(axi['missed_wait_ms'])}")
    print(f"  floor: {floor['passes']} IDLE wake-ups ({floor['pushes']} EXISTS pushes), "
          f"{floor['searches']} UID SEARCHes; {floor['news_outside_idle']} times the server "
          "reported new mail with a SEARCH or FETCH response (which aioimaplib drops and the "
          f"next IDLE does not repeat), {floor['found_by_search_again']} mails found by "
          "searching again before IDLE")
    print(f"floor: fetched {floor['fetched']}/{floor['appended']}, lost {floor['lost']}, "
          f"fetched twice {floor['fetched_twice']}")
    print(f"Axi: LLM requests {axi['llm_requests']}, states {axi['states']}, channel "
          f"{axi['channel_status']}")
    if axi["lost"]:
        print(f"lost (first ones): {axi['lost_examples']}; still pending: {axi['pending']}")
    if axi["unanswered"]:
        print(f"unanswered (first ones): {axi['unanswered_examples']}; still pending: "
              f"{axi['pending']}")
    for phase, feed_info in (("floor", feed_f), ("Axi", feed_a)):
        if feed_info["error"]:
            print(f"[{phase}] the feeder failed: {feed_info['error']}")
    if not axi["complete"]:
        print(f"[timeout] not every mail was accepted and answered within {args.timeout:g} s "
              "after the last APPEND")
    result["verdict"] = {"ratio_p95": ratio95, "target_p95_pass": target,
                         "must_be_zero_failed": failures}
    return failures


# ----------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> int:
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
    senders = senders_of(args.senders)
    mails = make_plan(args.messages, senders, run_id, args.seed)
    where = (f"--database-url {make_url(args.database_url).render_as_string()}"
             if args.database_url else f"embedded PostgreSQL in {args.data_dir}")
    print(f"Axi email benchmark — {args.messages} mails, {args.senders} senders, "
          f"{args.rate:g}/s, {where} (emptied); load average {os.getloadavg()[0]:.2f}")
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "args": {**vars(args), "data_dir": str(args.data_dir), "database_url": (
            make_url(args.database_url).render_as_string() if args.database_url else None)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "messages": len(mails), "note": args.note,
    }
    server = Dovecot()
    smtp = SmtpCapture()
    ollama = FakeOllama()
    # an instant model reports instant timings (Axi estimates waits from them)
    ollama.durations_ns = {"total_duration": 2_000_000, "load_duration": 100_000,
                           "prompt_eval_duration": 1_000_000, "eval_duration": 900_000}
    ollama.reply = REPLY
    await asyncio.to_thread(server.start)
    smtp.start()
    ollama.start()
    try:
        version = await asyncio.to_thread(subprocess.run, [server.binary, "--version"],
                                          capture_output=True, text=True, check=False)
        result["dovecot"] = version.stdout.strip()
        duration = len(mails) / args.rate
        print(f"1/2 floor: bare aioimaplib IDLE + FETCH loop ({duration:.0f} s of APPENDs)…",
              flush=True)
        result["floor"] = await run_floor(server, mails, args)
        await asyncio.to_thread(server.reset)  # a fresh mailbox: UIDs from 1 again
        print(f"2/2 Axi ({duration:.0f} s of APPENDs)…", flush=True)
        result["axi"] = await run_axi(server, smtp, ollama, mails, args)
    finally:
        ollama.stop()
        smtp.stop()
        await asyncio.to_thread(server.close)
    result["machine"]["loadavg_end"] = os.getloadavg()
    failures = report(result, args)
    result["finished"] = datetime.now(UTC).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"email-{run_id}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print(f"results: {path}")
    if failures:
        print("FAILED: " + ", ".join(failures))
        return 1
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=1000, help="mails appended (default 1000)")
    p.add_argument("--quick", action="store_true", help="100 mails (overrides --messages)")
    p.add_argument("--senders", type=int, default=36, help="known clients writing (default 36)")
    p.add_argument("--rate", type=float, default=20.0,
                   help="APPENDs a second, evenly spaced (default 20)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--workers", type=int, default=4, help="AXI_WORKER_CONCURRENCY (default 4)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait after the last APPEND for every mail to be accepted "
                        "and answered (default 120)")
    p.add_argument("--grace", type=float, default=2.0,
                   help="seconds to keep watching afterwards (late duplicates; default 2)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"embedded PostgreSQL data dir (default {DEFAULT_DATA_DIR}; reusable, "
                        "emptied at each run)")
    p.add_argument("--database-url", default=None,
                   help="use this PostgreSQL database instead (created if missing, EMPTIED; "
                        "its name must contain 'bench')")
    p.add_argument("--note", default="", help="free text stored with the results")
    args = p.parse_args(argv)
    if args.quick:
        args.messages = 100
    if args.messages < 1 or args.senders < 1 or args.rate <= 0:
        p.error("--messages and --senders must be ≥ 1 and --rate > 0")
    if args.database_url and "bench" not in (make_url(args.database_url).database or ""):
        p.error("the benchmark empties the database it uses: give --database-url one whose "
                "name contains 'bench'")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code = 130
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(run(parse_args(argv)))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
