"""Telegram end to end: loss, duplicates, order, flood limits, first-output latency vs a PTB echo bot.

Nothing lost, nothing doubled, in order, within Telegram's flood limits, and how fast the
first visible output comes, next to a bare python-telegram-bot echo bot (the floor).

A benchmark script, not a test. N messages (--messages) from U known people (--users) are
fed to the loopback Bot API (tests/fakes/telegram_server.FakeTelegram) at a realistic pace:
bursts of 1..--burst lines per person, a new burst every so often, --rate messages a second
overall on average. The real python-telegram-bot talks to it through `base_url`, twice in
the same run with the same arrival plan:

1. the floor: a bare echo bot — `bot.get_updates(offset, timeout)` → `bot.send_message`
   (threaded to the question), no database, no pacing;
2. Axi: the whole assistant (`bot.app.Axi` with `channels.telegram.TelegramChannel`, the
   production `Pace` unless --fast-pace) on embedded PostgreSQL (--data-dir) or
   --database-url, with an instant LLM (tests/fakes/ollama_server.FakeOllama streaming a
   short reply word by word). Every sender is a known person (telegram identity), so every
   message is answered by the model. The fake answers 429 to any send beyond Telegram's
   flood limits (1 message/s per chat, 30/s overall), as Telegram would.

The world is in another process. Real Telegram (and a real Ollama, and the people typing)
is never inside Axi's process: the fake Bot API, the fake Ollama and the feeder (the
people) run in child processes (`World`, multiprocessing "spawn"), for both the floor
and Axi, so that neither bot competes with them for its GIL or its event loop: the fake
Bot API and the people in one, the fake Ollama in another (a real Telegram does not
share an interpreter lock with the model).
The bots run in this process, one after the other. At the end of each run the child
sends back what it recorded (every call with its arrival time, the messages sent, the
drafts, the flood-limit counts, when each question became available) over a pipe. Times
are `time.monotonic()`, CLOCK_MONOTONIC on Linux: one clock for every process of the
machine, so the child's "update made available" and "request received" and this
process's "worker took it" are comparable.

Printed: messages sent, answered, lost, duplicated replies, per-chat order violations
(order of the replies' `reply_to_message_id` against the questions'), rate-limit
violations (all must be 0: the exit status is 1 otherwise), messages/s, and the time from
an update being made available by the fake to the first visible output for THAT message
(Axi: its first `sendMessageDraft` — drafts are attributed to their message through the
draft id of the live view the worker got, the same id as the "…" placeholder the poller
shows before it even stores the batch — or its reply, whichever comes first; the echo
bot: its reply), p50/p95, with the ratio Axi/floor at p95 (target ≤ 1.5). Both ends of
that time are stamped in the fake's process: the update made available, and the request
received.

    .venv/bin/python bench/telegram.py --data-dir /tmp/bench-tg
    .venv/bin/python bench/telegram.py --messages 40 --users 4 --data-dir /tmp/bench-tg
    .venv/bin/python bench/telegram.py --fast-pace          # no pacing: pure throughput
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import os
import platform
import random
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# this file is named telegram.py: with bench/ on the path (python puts the script's own
# directory first) `import telegram` would find this file instead of python-telegram-bot
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from telegram import Bot, ReplyParameters  # noqa: E402

from bot.app import Axi, freeze_heap  # noqa: E402
from bot.channel import ChannelSet, ChunkFn  # noqa: E402
from bot.config import DEFAULT_LOCAL_MODEL, Settings  # noqa: E402
from channels.telegram import CURSOR_KEY, TelegramChannel, TelegramConfig  # noqa: E402
from channels.telegram_send import Pace  # noqa: E402
from channels.telegram_updates import CHANNEL  # noqa: E402
from memory import migrate  # noqa: E402
from memory.database import open_database  # noqa: E402
from memory.messages import Claim  # noqa: E402
from tests.fakes.ollama_server import FakeOllama  # noqa: E402
from tests.fakes.telegram_server import Call, FakeTelegram  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATA_DIR = Path("/root/axi-bench-telegram")
REPLY = "C'est noté, je m'en occupe tout de suite."  # streamed word by word: 8 chunks
TARGET_RATIO_P95 = 1.5
PER_CHAT_S = 1.0  # Telegram: about one message a second per chat
OVERALL_PER_S = 30  # and thirty a second overall
FAST = Pace(per_chat_s=0.0, overall_per_s=100_000, typing_every_s=4.0, typing_max_s=180.0,
            draft_every_s=0.0, draft_refresh_s=20.0)
QUESTIONS = [
    "Bonjour, tu as des nouvelles de la longère de Vergt ?",
    "Le compromis de Saint-Cyprien est signé ?",
    "Peux-tu me rappeler le rendez-vous de demain ?",
    "Quel est le DPE de la grange du Bugue ?",
    "Il y a des visites prévues samedi ?",
    "Merci !",
    "Et pour le notaire, on en est où ?",
    "Ok, parfait.",
    "Tu peux préparer une réponse pour Mme Durand ?",
    "Combien s'est vendue la maison de bourg de Mauzac ?",
]


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Planned:
    at: float  # seconds after the start of the feed
    user: int  # index of the sender
    text: str


def make_plan(messages: int, users: int, rate: float, burst: int, seed: int) -> list[Planned]:
    """Each person's messages in bursts of 1..`burst` lines typed 0.4-1.5 s apart; bursts
    start as a Poisson process so that the whole arrives at `rate` messages a second."""
    rng = random.Random(seed)
    counts = [messages // users + (1 if i < messages % users else 0) for i in range(users)]
    bursts: list[tuple[int, int]] = []
    for user, count in enumerate(counts):
        while count > 0:
            size = min(count, rng.randint(1, burst))
            bursts.append((user, size))
            count -= size
    rng.shuffle(bursts)
    mean_size = messages / max(len(bursts), 1)
    plan: list[Planned] = []
    t = 0.0
    for user, size in bursts:
        t += rng.expovariate(rate / mean_size)
        at = t
        for _ in range(size):
            plan.append(Planned(at, user, rng.choice(QUESTIONS)))
            at += rng.uniform(0.4, 1.5)
    plan.sort(key=lambda p: p.at)
    return plan


@dataclass
class Fed:
    """What the feeder did: each question's (chat, message id) and when it became available
    (time.monotonic(), the clock the fake stamps its calls with)."""

    available: dict[tuple[int, int], float] = field(default_factory=dict)
    order: list[tuple[int, int]] = field(default_factory=list)
    max_lag_s: float = 0.0
    started: float = 0.0
    done: bool = False


def feed(fake: FakeTelegram, plan: Sequence[Planned], uids: Sequence[int], fed: Fed) -> None:
    """Runs in its own thread of the world's process: the people are outside the bot's."""
    try:
        fed.started = t0 = time.monotonic()
        for p in plan:
            delay = t0 + p.at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            uid = uids[p.user]
            before = time.monotonic()
            fed.max_lag_s = max(fed.max_lag_s, before - (t0 + p.at))
            update = fake.message(uid, p.text, first_name=f"Personne{p.user:02d}")
            key = (uid, int(update["message"]["message_id"]))
            fed.available[key] = before
            fed.order.append(key)
    finally:
        fed.done = True


# ----------------------------------------------------------------------------- the world
@dataclass
class Records:
    """What the fake recorded during one run, sent back from the world's process: the
    calls (uploaded files left out), the messages sent, the drafts, the flood-limit
    counts, the feed, when a long poll first returned each message, and how many
    requests the model got."""

    calls: list[Call]
    sent: list[dict[str, Any]]
    drafts: list[Call]
    rate_violations: int
    rate_limited: int
    fed: Fed
    handed: dict[tuple[int, int], float]
    llm_requests: int

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method.lower() == method.lower()]


def answer_commands(conn: Connection, handle: Callable[[str, tuple[Any, ...]], Any]) -> None:
    """A child process's loop: each command from the bench answered with `handle`'s
    result, until "stop" or the bench is gone."""
    try:
        while True:
            command, args = conn.recv()
            if command == "stop":
                return
            conn.send(handle(command, args))
    except EOFError:  # the bench is gone
        pass


def model_main(conn: Connection) -> None:
    """A child process of its own: the fake Ollama, apart from the fake Bot API. A real
    Telegram shares no process (nor interpreter lock) with the model: here Axi's 500
    replies, streamed word by word, never make the fake Bot API wait for that lock."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_NotClientDisconnect())
    ollama = FakeOllama()
    # an instant model reports instant timings (Axi estimates waits from them)
    ollama.durations_ns = {"total_duration": 2_000_000, "load_duration": 100_000,
                           "prompt_eval_duration": 1_000_000, "eval_duration": 900_000}
    ollama.reply = REPLY
    ollama.start()
    conn.send({"ollama_url": ollama.url})

    def handle(command: str, _args: tuple[Any, ...]) -> Any:
        if command == "reset":
            ollama.requests.clear()
        return len(ollama.chat_bodies) if command == "requests" else None

    try:
        answer_commands(conn, handle)
    finally:
        ollama.stop()


def world_main(conn: Connection) -> None:
    """The child process: the fake Bot API (a uvicorn server in a thread) and the people
    (the feeder, a thread), answering the bench's commands."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_NotClientDisconnect())
    fake = FakeTelegram()
    fake.start()
    fed = Fed()
    feeder: threading.Thread | None = None
    conn.send({"token": FakeTelegram.TOKEN, "base_url": fake.base_url,
               "base_file_url": fake.base_file_url})

    def handle(command: str, args: tuple[Any, ...]) -> Any:
        nonlocal fed, feeder
        if command == "reset":  # a new run: nothing recorded, nothing pending
            fake.reset()
            fake.rate_limit = bool(args[0])
            fed = Fed()
        elif command == "next_update_id":
            fake.next_update_id = max(fake.next_update_id, int(args[0]))
        elif command == "polls":
            return len(fake.calls_to("getUpdates"))
        elif command == "feed":
            fed = Fed()
            feeder = threading.Thread(target=feed, args=(fake, args[0], args[1], fed),
                                      daemon=True, name="feed")
            feeder.start()
        elif command == "progress":  # the feed is over, every question is answered
            return (fed.done, set(fed.available) <= answered_keys(fake))
        elif command == "records":
            if feeder is not None:
                feeder.join()
            calls = [Call(c.method, c.params, c.at, {}, c.status) for c in list(fake.calls)]
            return Records(calls, list(fake.sent),
                           [c for c in calls if c.method.lower() == "sendmessagedraft"],
                           fake.rate_violations, fake.rate_limited, fed, dict(fake.handed), 0)
        return None

    try:
        answer_commands(conn, handle)
    finally:
        fake.reset()  # ends the long poll a stopped bot left pending (a 409), so the
        time.sleep(0.2)  # server stops without cancelling it mid-request
        fake.stop()


class _Child:
    """One child process (multiprocessing "spawn": a fresh interpreter, nothing of this
    process's threads or loop) answering commands over a pipe."""

    def __init__(self, target: Any, name: str) -> None:
        ctx = get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=target, args=(child,), name=name, daemon=True)
        self.proc.start()
        child.close()
        self.info: dict[str, Any] = self.conn.recv()
        self._lock = asyncio.Lock()

    async def call(self, command: str, *args: Any) -> Any:
        """One command, its answer awaited without blocking the loop (nor a thread)."""
        async with self._lock:
            self.conn.send((command, args))
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()
            fd = self.conn.fileno()
            loop.add_reader(fd, lambda: None if ready.done() else ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send(("stop", ()))
        self.proc.join(timeout=15)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(timeout=5)
        self.conn.close()


class World:
    """The bench's side of the world: the fake Bot API and the people in one child
    process, the fake Ollama in another."""

    def __init__(self) -> None:
        self.telegram = _Child(world_main, "telegram-world")
        self.model = _Child(model_main, "telegram-model")
        self.token: str = self.telegram.info["token"]
        self.base_url: str = self.telegram.info["base_url"]
        self.base_file_url: str = self.telegram.info["base_file_url"]
        self.ollama_url: str = self.model.info["ollama_url"]

    async def call(self, command: str, *args: Any) -> Any:
        """A command to the fake Bot API's process (a reset also to the model's; the
        records get the model's request count)."""
        if command == "reset":
            await self.model.call("reset")
        answer = await self.telegram.call(command, *args)
        if command == "records":
            answer.llm_requests = await self.model.call("requests")
        return answer

    def stop(self) -> None:
        self.telegram.stop()
        self.model.stop()


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


def dist_ms(values: Sequence[float]) -> dict[str, float]:
    ms = [v * 1000.0 for v in values]
    return {"n": len(ms), "p50": pct(ms, 50), "p95": pct(ms, 95), "p99": pct(ms, 99),
            "max": max(ms) if ms else float("nan"),
            "mean": sum(ms) / len(ms) if ms else float("nan")}


def answered_keys(fake: FakeTelegram | Records) -> set[tuple[int, int]]:
    return {(int(m["chat"]["id"]), int(m["reply_to_message_id"])) for m in list(fake.sent)
            if m.get("reply_to_message_id") is not None}


def _reply_to(params: dict[str, Any]) -> int | None:
    reply = params.get("reply_parameters")
    if isinstance(reply, dict) and isinstance(reply.get("message_id"), int):
        return int(reply["message_id"])
    value = params.get("reply_to_message_id")
    return value if isinstance(value, int) else None


def rate_violations(times_by_chat: dict[int, list[float]]) -> dict[str, Any]:
    """Deliveries (server arrival times) closer than 1 s to the previous one in their chat,
    and beyond 30 in any 1 s window overall."""
    per_chat = 0
    min_gap = float("inf")
    for times in times_by_chat.values():
        times = sorted(times)
        for a, b in itertools.pairwise(times):
            min_gap = min(min_gap, b - a)
            if b - a < PER_CHAT_S:
                per_chat += 1
    every = sorted(t for times in times_by_chat.values() for t in times)
    overall = 0
    start = 0
    for i, t in enumerate(every):
        while every[start] <= t - 1.0:
            start += 1
        if i - start + 1 > OVERALL_PER_S:
            overall += 1
    return {"per_chat": per_chat, "overall": overall,
            "min_chat_gap_ms": None if min_gap == float("inf") else min_gap * 1000.0}


def paced_ideal(questions: dict[tuple[int, int], float], per_chat_s: float) -> list[float]:
    """How long each reply must wait for per-chat pacing alone: replies to one chat sent
    at most one per `per_chat_s`, each as soon as its question arrived and the chat's
    previous reply left (no other cost). The least a paced bot can do."""
    by_chat: dict[int, list[float]] = defaultdict(list)
    for (chat, _), avail in questions.items():
        by_chat[chat].append(avail)
    waits: list[float] = []
    for times in by_chat.values():
        last = float("-inf")
        for avail in sorted(times):
            last = max(avail, last + per_chat_s)
            waits.append(last - avail)
    return waits


def analyse(fake: Records, drafts_of: dict[int, tuple[int, int]] | None,
            per_chat_s: float = 0.0) -> dict[str, Any]:
    """Everything the fake recorded, against what was fed."""
    fed = fake.fed
    questions = fed.available
    refused_keys: set[tuple[int, int]] = set()
    replies: dict[tuple[int, int], list[float]] = defaultdict(list)
    texts: dict[tuple[int, int], list[str]] = defaultdict(list)
    unexpected = 0
    sent_times: dict[int, list[float]] = defaultdict(list)
    refused: Counter[int] = Counter()
    for call in fake.calls_to("sendMessage"):
        chat = call.params.get("chat_id")
        if call.status != 200:
            refused[call.status] += 1
            target = _reply_to(call.params)
            if isinstance(chat, int) and target is not None:
                refused_keys.add((chat, target))
            continue
        if not isinstance(chat, int):
            continue
        sent_times[chat].append(call.at)
        target = _reply_to(call.params)
        if target is None or (chat, target) not in questions:
            unexpected += 1
            continue
        replies[(chat, target)].append(call.at)
        texts[(chat, target)].append(str(call.params.get("text", ""))[:120])
    for method in ("editMessageText", "sendDocument"):
        for call in fake.calls_to(method):
            chat = call.params.get("chat_id")
            if call.status == 200 and isinstance(chat, int):
                sent_times[chat].append(call.at)
    first_draft: dict[tuple[int, int], float] = {}
    drafts_total = 0
    for call in list(fake.drafts):
        drafts_total += 1
        draft_id = call.params.get("draft_id")
        if drafts_of is None or not isinstance(draft_id, int) or draft_id not in drafts_of:
            continue
        key = drafts_of[draft_id]
        if key in questions and call.status == 200:
            first_draft[key] = min(first_draft.get(key, call.at), call.at)

    answered = [k for k in questions if replies.get(k)]
    lost = [k for k in questions if not replies.get(k)]
    duplicated = sum(len(v) - 1 for v in replies.values() if len(v) > 1)
    # order: per chat, the questions a reply answers, in the order the replies were made
    order_violations = overtaken_after_refusal = 0
    by_chat: dict[int, list[int]] = defaultdict(list)
    for record in list(fake.sent):
        chat = int(record["chat"]["id"])
        target = record.get("reply_to_message_id")
        if target is not None and (chat, int(target)) in questions:
            by_chat[chat].append(int(target))
    for chat, targets in by_chat.items():
        highest = -1
        for target in targets:
            if target < highest:
                order_violations += 1
                overtaken_after_refusal += (chat, target) in refused_keys
            highest = max(highest, target)

    first_visible: list[float] = []
    to_reply: list[float] = []
    to_draft: list[float] = []
    draft_first = 0
    for key, avail in questions.items():
        reply_at = min(replies[key]) if replies.get(key) else None
        draft_at = first_draft.get(key)
        if reply_at is not None:
            to_reply.append(reply_at - avail)
        if draft_at is not None:
            to_draft.append(draft_at - avail)
        candidates = [t for t in (reply_at, draft_at) if t is not None]
        if candidates:
            first = min(candidates)
            first_visible.append(first - avail)
            if draft_at is not None and draft_at <= first:
                draft_first += 1
    ends = [max(v) for v in replies.values() if v]
    span = (max(ends) - min(questions.values())) if ends and questions else float("nan")
    return {
        "sent": len(questions), "answered": len(answered), "lost": len(lost),
        "lost_examples": [list(k) for k in lost[:10]], "duplicated": duplicated,
        "duplicated_examples": [texts[k] for k, v in replies.items() if len(v) > 1][:10],
        "order_violations": order_violations,
        "order_violations_after_refusal": overtaken_after_refusal,
        "unexpected_messages": unexpected,
        "refused_sends": dict(refused), "fake_rate_violations": fake.rate_violations,
        "fake_429": fake.rate_limited, "computed_rate": rate_violations(sent_times),
        "messages_per_s": len(answered) / span if span and span > 0 else float("nan"),
        "span_s": span,
        "first_visible_ms": dist_ms(first_visible), "to_reply_ms": dist_ms(to_reply),
        "to_draft_ms": dist_ms(to_draft), "draft_first": draft_first,
        "paced_ideal_ms": dist_ms(paced_ideal(questions, per_chat_s)),
        "drafts_total": drafts_total,
        "typing_actions": len(fake.calls_to("sendChatAction")),
        "get_updates_calls": len(fake.calls_to("getUpdates")),
        "feed_max_lag_ms": fed.max_lag_s * 1000.0,
        "to_handed_ms": dist_ms([fake.handed[k] - v for k, v in questions.items()
                                 if k in fake.handed]),
    }


def gaps(records: Records, fetched: dict[tuple[int, int], float],
         first_out: dict[tuple[int, int], float]) -> dict[str, Any]:
    """Where the poller was not in a long poll: from a batch in hand (`fetched`) to the
    next `getUpdates` reaching the fake (the batch stored meanwhile). A message made
    available inside such a gap waits for the next poll: its first output, apart."""
    polls = sorted(c.at for c in records.calls_to("getUpdates"))
    spans = []
    for f in sorted(set(fetched.values())):
        i = bisect.bisect_right(polls, f)
        if i < len(polls):
            spans.append((f, polls[i]))
    in_gap: list[float] = []
    outside: list[float] = []
    starts = [a for a, _ in spans]
    times = list(records.fed.available.values())
    span = max(times) - min(times) if times else 0.0
    for key, avail in records.fed.available.items():
        if key not in first_out:
            continue
        i = bisect.bisect_right(starts, avail) - 1
        inside = i >= 0 and spans[i][0] <= avail < spans[i][1]
        (in_gap if inside else outside).append(first_out[key] - avail)
    return {"gap_ms": dist_ms([b - a for a, b in spans]),
            "gap_share": sum(b - a for a, b in spans) / max(span, 1e-9),
            "first_output_in_gap_ms": dist_ms(in_gap),
            "first_output_polling_ms": dist_ms(outside)}


def first_outputs(fake: Records, drafts_of: dict[int, tuple[int, int]]
                  ) -> dict[tuple[int, int], float]:
    """Per question, when its first draft or reply reached the fake."""
    first: dict[tuple[int, int], float] = {}
    for call in fake.calls:
        if call.status != 200:
            continue
        key = None
        if call.method.lower() == "sendmessagedraft":
            draft_id = call.params.get("draft_id")
            key = drafts_of.get(draft_id) if isinstance(draft_id, int) else None
        elif call.method.lower() == "sendmessage":
            chat, target = call.params.get("chat_id"), _reply_to(call.params)
            key = (chat, target) if isinstance(chat, int) and target is not None else None
        if key is not None:
            first[key] = min(first.get(key, call.at), call.at)
    return first


def dump_tasks() -> None:
    """Every task of this loop with the line it waits at (stderr): a run that leaves a
    message unanswered says where."""
    for task in asyncio.all_tasks():
        print(f"--- task {task.get_name()}", file=sys.stderr)
        task.print_stack(limit=12, file=sys.stderr)


async def until_answered(world: World, timeout_s: float) -> bool:
    """Wait for the feed to end and every question to be answered, or for the timeout
    (counted from the end of the feed)."""
    deadline = None
    while deadline is None or time.monotonic() < deadline:
        done, answered = await world.call("progress")
        if done and answered:
            return True
        if done and deadline is None:
            deadline = time.monotonic() + timeout_s
        await asyncio.sleep(0.2)
    return False


async def wait_for_poll(world: World, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await world.call("polls"):
        if time.monotonic() > deadline:
            raise SystemExit("the bot never called getUpdates")
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.2)


# ----------------------------------------------------------------------------- 1. the floor
async def echo_bot(world: World) -> None:
    """The bare PTB bot: long poll, answer each text at once, threaded to it."""
    bot = Bot(world.token, base_url=world.base_url, base_file_url=world.base_file_url)
    async with bot:
        offset: int | None = None
        while True:
            updates = await bot.get_updates(offset=offset, timeout=25)
            for update in updates:
                message = update.message
                if message is not None and message.text:
                    await bot.send_message(message.chat.id, message.text,
                                           reply_parameters=ReplyParameters(message.message_id))
                offset = update.update_id + 1


async def run_floor(world: World, plan: Sequence[Planned], uids: Sequence[int],
                    args: argparse.Namespace) -> dict[str, Any]:
    # a bare bot does not pace itself: a 429 would just fail it
    await world.call("reset", False)
    task = asyncio.create_task(echo_bot(world), name="echo-bot")
    try:
        await wait_for_poll(world)
        cpu = time.process_time()
        await world.call("feed", list(plan), list(uids))
        complete = await until_answered(world, args.timeout)
        cpu = time.process_time() - cpu
        await asyncio.sleep(args.grace)
        records: Records = await world.call("records")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    result = analyse(records, None)
    result["complete"] = complete
    result["cpu_ms_per_message"] = cpu * 1000.0 / max(len(plan), 1)
    return result


# ----------------------------------------------------------------------------- 2. Axi
def make_settings(world: World, args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {
        "OLLAMA_HOST": world.ollama_url, "AXI_LOCAL_MODEL": DEFAULT_LOCAL_MODEL,
        "AXI_LOCAL_TIMEOUT": 30.0, "AXI_DATA_DIR": str(args.data_dir),
        "AXI_WORKER_CONCURRENCY": args.workers, "ANTHROPIC_API_KEY": None,
        "AXI_LOG_LEVEL": "WARNING", "AXI_EMBED_MODEL": "off", "AXI_QUIET_HOURS": "off",
    }
    if args.database_url:
        values["AXI_DATABASE_URL"] = args.database_url
    cfg = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert cfg.anthropic_api_key is None, "the benchmark must not reach Anthropic"
    return cfg


def fetch_times(channel: TelegramChannel) -> dict[tuple[int, int], float]:
    """When the poller had each message in hand (its long poll returned it, on the poller's
    own loop, placeholders started): an instance wrapper around the channel's `_fetch`,
    no Axi code changed."""
    fetched: dict[tuple[int, int], float] = {}
    original = channel._fetch

    async def fetch(offset: int | None) -> Any:
        updates, read, shown = await original(offset)
        now = time.monotonic()
        for update in updates:
            message = getattr(update, "message", None)
            if message is not None:
                fetched.setdefault((message.chat.id, message.message_id), now)
        return updates, read, shown

    channel._fetch = fetch  # type: ignore[method-assign]
    return fetched


def instrument(app: Axi, drafts_of: dict[int, tuple[int, int]],
               claimed: dict[tuple[int, int], list[float]]) -> None:
    """Which message each live view (hence each draft id) belongs to, and when the worker
    took it: an instance wrapper around the responder, no Axi code changed."""
    responder = app.pipeline.responder
    original = responder.handle

    async def handle(claim: Claim, *, live: ChunkFn | None = None) -> None:
        ref = claim.message.reference_fil
        chat = claim.message.adresse
        if ref and ref.isdigit() and chat.lstrip("-").isdigit():
            key = (int(chat), int(ref))
            claimed[key].append(time.monotonic())
            view = getattr(live, "__self__", None)  # the LiveView whose chunk `live` is
            draft_id = getattr(view, "draft_id", None)
            if isinstance(draft_id, int):
                drafts_of[draft_id] = key
        await original(claim, live=live)

    responder.handle = handle  # type: ignore[method-assign]


async def run_axi(world: World, plan: Sequence[Planned], uids: Sequence[int],
                  args: argparse.Namespace, run_id: str) -> dict[str, Any]:
    async with open_database(args.database_url, args.data_dir) as db:
        await migrate.upgrade(db.engine)
    cfg = make_settings(world, args)
    pace = FAST if args.fast_pace else Pace()
    # Telegram answers 429 beyond its flood limits
    await world.call("reset", not args.fast_pace)
    channel = TelegramChannel(TelegramConfig(
        token=world.token, api_url=world.base_url, file_url=world.base_file_url,
        pace=pace))
    drafts_of: dict[int, tuple[int, int]] = {}
    claimed: dict[tuple[int, int], list[float]] = defaultdict(list)
    async with Axi(cfg, ChannelSet({CHANNEL: channel}, frozenset({CHANNEL}), None)) as app:
        for i, uid in enumerate(uids):
            await app.store.add_person(
                f"Personne {i:02d} bench {run_id}", relation="équipe" if i % 4 == 0 else "client",
                comment_interagir="tutoie" if i % 4 == 0 else None,
                identities=[(CHANNEL, str(uid))])
        # an earlier run on this database stored Telegram's offset: the fake's update ids
        # must go on from there, as Telegram's do (else they would be confirmed unseen)
        stored = await app.store.read_cursor(CHANNEL, CURSOR_KEY)
        if stored:
            with contextlib.suppress(ValueError, IndexError):
                await world.call("next_update_id", int(stored.split()[0]) + 1)
        instrument(app, drafts_of, claimed)
        fetched = fetch_times(channel)
        await app.start_channels()
        app.start_loops(extractor=False, maintenance=False, embeddings=False)
        freeze_heap()  # as `axi run` does once started
        await wait_for_poll(world)
        cpu = time.process_time()
        await world.call("feed", list(plan), list(uids))
        complete = await until_answered(world, args.timeout)
        cpu = time.process_time() - cpu
        if not complete:  # where Axi's tasks wait, to tell why (on stderr)
            dump_tasks()
        await asyncio.sleep(args.grace)  # a late duplicate would show up here
        records: Records = await world.call("records")
        fed = records.fed
        result = analyse(records, drafts_of, pace.per_chat_s)
        result["complete"] = complete
        result["cpu_ms_per_message"] = cpu * 1000.0 / max(len(plan), 1)
        result["timeouts_after_sending"] = (channel.sender.timeouts_after_sending
                                            if channel.sender else None)
        result["watchdog_restarts"] = channel.watchdog_restarts
        result["handled_twice"] = sum(1 for v in claimed.values() if len(v) > 1)
        result["to_fetched_ms"] = dist_ms([v - fed.available[k] for k, v in fetched.items()
                                           if k in fed.available])
        first_out = first_outputs(records, drafts_of)
        result["fetched_to_output_ms"] = dist_ms([first_out[k] - v for k, v in fetched.items()
                                                  if k in first_out])
        result.update(gaps(records, fetched, first_out))
        result["to_claim_ms"] = dist_ms([min(v) - fed.available[k] for k, v in claimed.items()
                                         if k in fed.available])
        result["llm_requests"] = records.llm_requests
        result["pending"] = await app.store.pending_counts()
    result["pace"] = {k: getattr(pace, k) for k in ("per_chat_s", "overall_per_s",
                                                    "draft_every_s", "typing_every_s")}
    return result


# ----------------------------------------------------------------------------- report
def arrivals(plan: Sequence[Planned]) -> dict[str, Any]:
    last: dict[int, float] = {}
    close = 0
    for p in plan:
        if p.user in last and p.at - last[p.user] < PER_CHAT_S:
            close += 1
        last[p.user] = p.at
    duration = plan[-1].at if plan else 0.0
    return {"duration_s": duration, "rate": len(plan) / duration if duration else float("nan"),
            "within_1s_of_previous_in_chat": close}


def f0(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:,.0f}"


def line(label: str, d: dict[str, float]) -> str:
    return (f"p50 {f0(d['p50'])} ms, p95 {f0(d['p95'])} ms, p99 {f0(d['p99'])} ms, "
            f"max {f0(d['max'])} ms (n={d['n']})")


def report(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """Print the results; return the must-be-0 measures that were not 0."""
    floor, axi, arr = result["floor"], result["axi"], result["arrivals"]
    print()
    print(f"arrivals: {result['sent']} messages from {args.users} people in "
          f"{arr['duration_s']:.0f} s ({arr['rate']:.1f}/s), bursts of 1-{args.burst} lines "
          f"0.4-1.5 s apart; {arr['within_1s_of_previous_in_chat']} messages came < 1 s after "
          f"the previous one in their chat")
    pace = axi["pace"]
    print(f"Axi pace: {pace['per_chat_s']:g} s per chat, {pace['overall_per_s']:g}/s overall, "
          f"drafts every {pace['draft_every_s']:g} s"
          + (" (--fast-pace: NOT Telegram's limits)" if args.fast_pace else " (production)"))
    print()
    failures: list[str] = []
    rate = axi["computed_rate"]
    # with 429s on, the fake refuses what it counts (never delivered); without, the two
    # count the same sends
    rate_bad = max(axi["fake_rate_violations"], rate["per_chat"] + rate["overall"])
    checks = [("messages sent", axi["sent"], None),
              ("answered", axi["answered"], None),
              ("lost", axi["lost"], True),
              ("duplicated replies", axi["duplicated"], True),
              ("per-chat order violations", axi["order_violations"], True)]
    for label, value, must_be_zero in checks:
        verdict = ""
        if must_be_zero:
            verdict = "  ok" if value == 0 else "  MUST BE 0"
            if value:
                failures.append(label)
        if label.startswith("per-chat") and value:
            verdict += (f"   ({axi['order_violations_after_refusal']} of them: the overtaken "
                        "reply had been refused with a 429 and was retried after a later one)")
        print(f"{label:<28} {value:>6}{verdict}")
    must_rate = not args.fast_pace
    verdict = ("  ok" if rate_bad == 0 else "  MUST BE 0") if must_rate else "  (info: no pacing)"
    if must_rate and rate_bad:
        failures.append("rate-limit violations")
    gap = rate["min_chat_gap_ms"]
    print(f"{'rate-limit violations':<28} {rate_bad:>6}{verdict}   (fake: "
          f"{axi['fake_rate_violations']} sends beyond the limits, {axi['fake_429']} answered "
          f"429; from delivered timestamps: {rate['per_chat']} < 1 s apart in a chat, "
          f"{rate['overall']} beyond 30/s; smallest gap in a chat {f0(gap)} ms)")
    print(f"{'other messages sent':<28} {axi['unexpected_messages']:>6}   (not a reply to "
          f"a question: notices…)")
    print()
    print(f"messages/s: Axi {axi['messages_per_s']:.2f} (last reply "
          f"{axi['span_s']:.1f} s after the first question), floor "
          f"{floor['messages_per_s']:.2f} ({floor['span_s']:.1f} s); arrivals "
          f"{arr['rate']:.2f}/s")
    print(f"the bot's process CPU (user + system, every thread) per message, from the first "
          f"question to the last reply: Axi {axi['cpu_ms_per_message']:.1f} ms, floor "
          f"{floor['cpu_ms_per_message']:.1f} ms (the fakes and the people are not in it; "
          "Axi's PostgreSQL is not either)")
    a, b = axi["first_visible_ms"], floor["first_visible_ms"]
    ratio = a["p95"] / b["p95"] if b["p95"] and b["p95"] == b["p95"] else float("nan")
    ratio50 = a["p50"] / b["p50"] if b["p50"] and b["p50"] == b["p50"] else float("nan")
    ok = ratio <= TARGET_RATIO_P95
    print("update available → first visible output for that message:")
    print(f"  Axi (draft or reply)  {line('', a)}")
    print(f"  floor (echo reply)    {line('', b)}")
    print(f"  ratio Axi/floor: p50 {ratio50:.2f}×, p95 {ratio:.2f}×  target p95 ≤ "
          f"{TARGET_RATIO_P95:g}×  {'PASS' if ok else 'FAIL'}")
    print(f"  the fake Bot API's side, update available → returned by a long poll "
          f"(its own delay, and the bot's time away from a long poll): Axi "
          f"{line('', axi['to_handed_ms'])}; floor {line('', floor['to_handed_ms'])}")
    print(f"  Axi: first output was a draft for {axi['draft_first']} of {axi['answered']} "
          f"messages ({axi['drafts_total']} drafts, {axi['typing_actions']} typing…)")
    print(f"  Axi update → poller had it   {line('', axi['to_fetched_ms'])}")
    print(f"  Axi poller had it → output   {line('', axi['fetched_to_output_ms'])}")
    print(f"  Axi poller away from a long poll, per batch {line('', axi['gap_ms'])}; "
          f"{axi['gap_share']:.1%} of the run")
    print(f"  Axi first output, update made available while polling "
          f"{line('', axi['first_output_polling_ms'])}")
    print(f"  Axi first output, update made available between two polls "
          f"{line('', axi['first_output_in_gap_ms'])}")
    print(f"  Axi update → worker took it  {line('', axi['to_claim_ms'])}")
    print(f"  Axi update → first draft     {line('', axi['to_draft_ms'])}")
    print(f"  Axi update → its reply       {line('', axi['to_reply_ms'])}")
    print(f"  floor update → its reply     {line('', floor['to_reply_ms'])}")
    print(f"  pacing alone would make it   {line('', axi['paced_ideal_ms'])}")
    print("  (Axi's first visible output is the draft: a draft is not a message, Axi does not "
          "pace it, and it shows at once. Its reply is a message: at most one a second per "
          "chat, as Telegram requires, so the replies to a burst of k lines leave ≥ 1 s apart "
          "and the k-th waits ≥ k-1 s. 'Pacing alone' is that wait with nothing else (each "
          "chat's replies sent as soon as the question and the chat's previous reply allow): "
          "what Axi's replies wait beyond it is its own queueing. The echo bot paces nothing: "
          f"its replies broke the per-chat limit {floor['computed_rate']['per_chat']} times, "
          "which Telegram would have answered with 429.)")
    print(f"floor: answered {floor['answered']}/{floor['sent']}, lost {floor['lost']}, "
          f"duplicated {floor['duplicated']}, order violations {floor['order_violations']}")
    extras = [f"LLM requests {axi['llm_requests']}", f"handled twice {axi['handled_twice']}",
              f"timeouts after sending {axi['timeouts_after_sending']}",
              f"refused sends {axi['refused_sends'] or 0}",
              f"getUpdates calls {axi['get_updates_calls']}",
              f"watchdog restarts {axi['watchdog_restarts']}",
              f"feed lag max {f0(axi['feed_max_lag_ms'])} ms"]
    print("Axi: " + ", ".join(extras))
    if axi["lost"]:
        print(f"lost (chat, message id), first ones: {axi['lost_examples']}; still pending: "
              f"{axi['pending']}")
    if axi["duplicated"]:
        print(f"answered twice, the texts sent (first ones): {axi['duplicated_examples']}")
    if not axi["complete"]:
        print(f"[timeout] not every message was answered within {args.timeout:g} s after the "
              "last one arrived")
    result["verdict"] = {"ratio_p95": ratio, "ratio_pass": ok, "must_be_zero_failed": failures}
    return failures


# ----------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> int:
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
    plan = make_plan(args.messages, args.users, args.rate, args.burst, args.seed)
    # fresh Telegram ids every run: a reused database holds earlier runs' people and
    # messages, and a (chat, message id) already stored would be taken for a redelivery
    base = 7_000_000_000 + (int(time.time()) % 10_000_000) * 1_000
    uids = [base + i for i in range(args.users)]
    where = "(--database-url)" if args.database_url else f"embedded PostgreSQL in {args.data_dir}"
    print(f"Axi Telegram benchmark — {args.messages} messages, {args.users} people, "
          f"{args.rate:g}/s, {where}; load average {os.getloadavg()[0]:.2f}")
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "args": {**vars(args), "data_dir": str(args.data_dir)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "sent": len(plan), "arrivals": arrivals(plan), "note": args.note,
    }
    world = World()  # the fake Bot API and the people, the fake Ollama: other processes
    try:
        print(f"1/2 floor: bare PTB echo bot ({result['arrivals']['duration_s']:.0f} s of "
              "arrivals)…", flush=True)
        result["floor"] = await run_floor(world, plan, uids, args)
        print("2/2 Axi…", flush=True)
        result["axi"] = await run_axi(world, plan, uids, args, run_id)
    finally:
        await asyncio.to_thread(world.stop)
    result["machine"]["loadavg_end"] = os.getloadavg()
    failures = report(result, args)
    result["finished"] = datetime.now(UTC).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"telegram-{run_id}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print(f"results: {path}")
    if failures:
        print("FAILED (must be 0): " + ", ".join(failures))
        return 1
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=500, help="messages fed (default 500)")
    p.add_argument("--users", type=int, default=20, help="people writing (default 20)")
    p.add_argument("--rate", type=float, default=5.0,
                   help="mean arrival rate, messages/s over all people (default 5)")
    p.add_argument("--burst", type=int, default=4,
                   help="a person writes bursts of 1..BURST lines (default 4)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--fast-pace", action="store_true",
                   help="Axi without pacing (no 1/s per chat, no 30/s): pure throughput; "
                        "rate limits then are information, not a failure")
    p.add_argument("--workers", type=int, default=4, help="AXI_WORKER_CONCURRENCY (default 4)")
    p.add_argument("--timeout", type=float, default=120.0,
                   help="seconds to wait for the last replies after the last message arrived")
    p.add_argument("--grace", type=float, default=2.0,
                   help="seconds to keep watching after the last reply (late duplicates)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"embedded PostgreSQL data dir (default {DEFAULT_DATA_DIR}; reusable)")
    p.add_argument("--database-url", default=None, help="use this PostgreSQL database instead")
    p.add_argument("--note", default="", help="free text stored with the results")
    args = p.parse_args(argv)
    if args.messages < 1 or args.users < 1 or args.rate <= 0 or args.burst < 1:
        p.error("--messages, --users, --burst must be ≥ 1 and --rate > 0")
    return args


class _NotClientDisconnect(logging.Filter):
    """The loopback server logs a traceback when a client drops a request it was still
    sending (Axi cancels its typing/draft calls when the reply goes): not an error here."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ != "ClientDisconnect"


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_NotClientDisconnect())
    code = 130
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(run(parse_args(argv)))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
