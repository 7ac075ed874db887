"""Local model time: a day at the agency on one simulated CPU — does Ludo wait 2 s, or 40?

A benchmark script, not a test. The WHOLE Axi (`bot.app.Axi`: pipeline, responder, router
and gate, extractor loop, embedder; stand-in channels for telegram, web and email) on
PostgreSQL (--database-url: created, migrated, EMPTIED and seeded at each variant) against
bench/model_time_sim.SharedCpuOllama — tests/fakes/cpu_ollama.CpuOllama (slots, per-slot KV
prefix cache, FIFO queue, scaled clock) on ONE shared CPU with per-model speeds — and a
loopback Claude fallback. Axi's wall-clock settings (timeouts, quiet time, polling,
retry backoffs, breaker cooldown) are scaled with the clock (--time-scale). The day, the
same in every variant (--seed): Ludo holds --conversations (3) conversations of --turns
(15) turns, interleaved (Telegram, web at the office, web on his phone), writing 20–90 s
after each reply; six clients write (three emails ×2 on a schedule; three live chats of
--client-turns turns, two on Telegram, one on the site); fact extraction follows every
turn; the DPE and competitor veilles are SIMULATED (no veille job exists yet) as
background `router.chat(task="summary", priority=BACKGROUND)` calls of ~1,800 / ~1,400
prompt tokens every --veille-every s, asked again when preempted (a durable queue).

Variants (--variants): `today`, the behaviour before issue 9, as the baseline in the same
run — no gate (`router.gate = None`, `pipeline.on_accept = None`, `embedder.gate = None`),
extraction from the minimal prompt (`extractor.continuations = False`), the extractor
polling every 2 s: extraction right after each reply, FIFO at the server; `gate`: Axi as
configured; `embed`: + AXI_EMBED_MODEL (old souvenirs embedded before the day); `slots2`:
OLLAMA_NUM_PARALLEL=2 + AXI_LOCAL_SLOTS=2; `small-extract`: AXI_LOCAL_EXTRACTION_MODEL, a
3B model 2.3× faster than the 7B; `llama-server`: Ollama ≥ 0.30's slot choice and RAM
prompt cache; `multiuser4`: four cache slots at the server (OLLAMA_NUM_PARALLEL=4,
OLLAMA_MULTIUSER_CACHE=1) but one request at a time (AXI_LOCAL_SLOTS=1), so each of four
conversations keeps its prefix in a slot of its own and the CPU is never shared;
`llama-server4`: the same with Ollama ≥ 0.30's slot choice and RAM prompt cache; `multiuser8`:
eight cache slots (the recommended setting, deploy/docker-compose.yml); `multiuser8-reserve`
(`-reserve300`): + AXI_LOCAL_RESERVE_S=120 (300): while Ludo used the model within 120 s —
more than his 20–90 s between a reply and his next message — clients' live chats get Claude
and emails wait.

Printed per variant: Ludo's time from accepted to first token p50/p95 in simulated s (the
lane wait and the model side simulated, Axi's own work as measured), next to the floor of
the same run (each turn's last user message as Axi built it — data block, clock, message —
evaluated alone at the prompt rate, nothing queued ahead), prompt tokens per turn, the
share of prompt tokens served from cache, the local share of all calls, how long
background work was delayed (items still queued count with their age), and that nothing
was lost. Targets: p95 ≤ 1.5× floor, cache ≥ 0.85, local ≥ 80 %, no item lost.

    .venv/bin/python bench/model_time.py --quick                 # smoke run, < 1 min
    .venv/bin/python bench/model_time.py                         # every variant
    .venv/bin/python bench/model_time.py --variants today,gate --time-scale 0.04
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import logging
import os
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# bench/email.py and bench/telegram.py would shadow the stdlib and PTB: never on sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import text  # noqa: E402

import bench.model_time_sim as world  # noqa: E402
import bot.embedder  # noqa: E402
import bot.extractor  # noqa: E402
from bench.memory_scale import FrenchText, Vocabulary, load_vocabulary  # noqa: E402
from bot import backoff  # noqa: E402
from bot.app import Axi  # noqa: E402
from bot.config import DEFAULT_LOCAL_MODEL, Settings  # noqa: E402
from bot.inbound import Inbound  # noqa: E402
from llm.errors import LLMError  # noqa: E402
from llm.gate import Preempted, Priority  # noqa: E402
from llm.types import ChatMessage  # noqa: E402
from tests.fakes.anthropic_server import TEST_API_KEY, FakeAnthropic  # noqa: E402
from tests.fakes.cpu_model import CpuConfig  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/bench_model_time"
DATA_DIR = Path("/tmp/axi-bench-model-time")
EXTRACTION_MODEL, EXTRACTION_SPEED = "qwen2.5:3b-instruct", 2.3
EMBED_MODEL = "nomic-embed-text"
TARGETS = {"p95_over_floor": 1.5, "cache_share": 0.85, "local_share": 0.80}


@dataclass(frozen=True)
class Variant:
    name: str
    gate: bool = True
    slots: int = 1  # AXI_LOCAL_SLOTS: requests the gate lets run at once
    server_slots: int | None = None  # OLLAMA_NUM_PARALLEL (cache slots); None: = slots
    embed: bool = False
    small_extract: bool = False
    policy: str | None = None  # the server's slot policy (None: --slot-policy)
    reserve_s: float = 0.0  # AXI_LOCAL_RESERVE_S, simulated seconds


VARIANTS = {v.name: v for v in (Variant("today", gate=False), Variant("gate"),
                                Variant("embed", embed=True), Variant("slots2", slots=2),
                                Variant("small-extract", small_extract=True),
                                Variant("llama-server", policy="llama-server"),
                                Variant("multiuser4", server_slots=4, policy="ollama-multiuser"),
                                Variant("llama-server4", server_slots=4,
                                        policy="llama-server"),
                                Variant("multiuser8", server_slots=8,
                                        policy="ollama-multiuser"),
                                Variant("multiuser8-reserve", server_slots=8,
                                        policy="ollama-multiuser", reserve_s=120.0),
                                Variant("multiuser8-reserve300", server_slots=8,
                                        policy="ollama-multiuser", reserve_s=300.0))}


@dataclass(frozen=True)
class Person:
    name: str
    relation: str
    channel: str
    address: str
    kind: str  # ludo, client (a live chat), email


@dataclass
class Thread:
    """One person's messages on one address: live chats write `gaps[i]` after the reply,
    email on a schedule (`gaps[i]` after the previous mail)."""

    person: Person
    start_s: float
    texts: list[str]
    gaps: list[float]


@dataclass
class Plan:
    threads: list[Thread]
    veilles: list[tuple[float, str, list[dict[str, str]]]]  # at, kind, messages
    people: list[Person]


def make_plan(args: argparse.Namespace, vocab: Vocabulary) -> Plan:
    rng = random.Random(args.seed)
    words = world.Words(FrenchText(vocab, random.Random(args.seed + 1)))
    ludo = [Person("Ludo", "créateur", "telegram", "1001", "ludo"),
            Person("Ludo", "créateur", "web", "ludo-bureau", "ludo"),
            Person("Ludo", "créateur", "web", "ludo-mobile", "ludo")][:args.conversations]
    emails = [Person(n, "client", "email", a, "email") for n, a in (
        ("Mme Durand", "durand.famille@example.fr"), ("M. Petit", "jean.petit@example.fr"),
        ("Mme Laurent", "sophie.laurent@example.fr"))]
    live = [Person("M. Garcia", "client", "telegram", "2101", "client"),
            Person("Mme Roux", "client", "telegram", "2102", "client"),
            Person("M. Faure", "client", "web", "site-faure", "client")]
    day = args.turns * 75.0
    threads = [Thread(p, k * day / 7, [words.ludo() for _ in range(args.turns)],
                      [rng.uniform(20, 90) for _ in range(args.turns)])
               for k, p in enumerate(ludo)]
    n_mails = max(args.client_turns // 2, 1)
    threads += [Thread(p, rng.uniform(30, day / 2), [words.email(p.name) for _ in range(n_mails)],
                       [rng.uniform(day / 5, day / 2) for _ in range(n_mails)]) for p in emails]
    threads += [Thread(p, rng.uniform(60, day * 0.6), [words.client() for _ in
                                                       range(args.client_turns)],
                       [rng.uniform(30, 120) for _ in range(args.client_turns)]) for p in live]
    veilles: list[tuple[float, str, list[dict[str, str]]]] = []
    at = args.veille_every * 0.6
    while at < day or not veilles:
        kind = ("dpe", "competitors")[len(veilles) % 2]
        veilles.append((at, kind, words.veille(kind, 1800 if kind == "dpe" else 1400)))
        at += args.veille_every
    return Plan(threads, veilles, ludo + emails + live)


# ----------------------------------------------------------------------------- one day
@dataclass
class Sent:
    person: Person
    text: str
    accepted: float  # time.monotonic() when accept returned


@dataclass
class Day:
    """What happened during one variant's day (times: time.monotonic())."""

    sent: dict[int, Sent] = field(default_factory=dict)
    # per message id (stamped even before `sent` knows it): a worker lane started on it,
    # the responder asked the router, the first chunk of the reply
    handled: dict[int, float] = field(default_factory=dict)
    asked: dict[int, float] = field(default_factory=dict)
    first_chunk: dict[int, float] = field(default_factory=dict)
    finished: dict[int, tuple[str, float]] = field(default_factory=dict)  # souvenir → state, t
    veilles: list[dict[str, Any]] = field(default_factory=list)
    vectors: list[tuple[float, float]] = field(default_factory=list)  # embedding messages
    end_of_day_queue: int = 0

    def vector_time(self, start: float, end: float) -> float:
        """Wall time spent embedding messages (the model's time) within [start, end]."""
        return sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.vectors)


CURRENT: contextvars.ContextVar[int | None] = contextvars.ContextVar("message", default=None)


def instrument(app: Axi, day: Day) -> None:
    """Instance wrappers only (no Axi code changed): the message a lane works on, when it
    asks the router, its first chunk, embedding messages, and each extraction's end."""
    responder, router, store = app.pipeline.responder, app.router, app.store
    handle, stream, finish = responder.handle, router.stream, store.finish_extraction

    async def handled(claim: Any, *, live: Any = None) -> None:
        mid = claim.message.id
        token = CURRENT.set(mid)
        day.handled.setdefault(mid, time.monotonic())

        def chunk(piece: str) -> None:
            if piece:
                day.first_chunk.setdefault(mid, time.monotonic())
            live(piece)
        try:
            await handle(claim, live=None if live is None else chunk)
        finally:
            CURRENT.reset(token)

    def streamed(messages: Any, **kw: Any) -> Any:
        mid = CURRENT.get()
        if kw.get("task", "conversation") == "conversation" and mid is not None:
            day.asked.setdefault(mid, time.monotonic())
        return stream(messages, **kw)

    async def finished(claim: Any, souvenir_id: int, **kw: Any) -> None:
        await finish(claim, souvenir_id, **kw)
        day.finished[souvenir_id] = (kw.get("state", ""), time.monotonic())

    vectors = responder.recaller.vectors
    if vectors is not None:
        vector = vectors.vector

        async def timed_vector(text_: str) -> Any:
            start = time.monotonic()
            try:
                return await vector(text_)
            finally:
                day.vectors.append((start, time.monotonic()))
        vectors.vector = timed_vector  # type: ignore[method-assign]
    responder.handle = handled  # type: ignore[method-assign]
    router.stream = streamed  # type: ignore[method-assign]
    store.finish_extraction = finished  # type: ignore[method-assign]


def make_settings(args: argparse.Namespace, v: Variant, ollama: str, claude: str) -> Settings:
    ts = args.time_scale
    values: dict[str, Any] = {
        "OLLAMA_HOST": ollama, "AXI_LOCAL_MODEL": DEFAULT_LOCAL_MODEL,
        "AXI_DATABASE_URL": args.database_url, "AXI_DATA_DIR": str(DATA_DIR),
        "ANTHROPIC_API_KEY": TEST_API_KEY, "ANTHROPIC_BASE_URL": claude,
        "AXI_LOG_LEVEL": "WARNING", "AXI_QUIET_HOURS": "off", "AXI_WORKER_CONCURRENCY": 4,
        # wall-clock settings, scaled with the simulated clock (AXI_LOCAL_MAX_WAIT is not:
        # Axi estimates waits from the server's own durations, simulated seconds)
        "AXI_LOCAL_TIMEOUT": 120 * ts, "AXI_FALLBACK_TIMEOUT": 60 * ts,
        "AXI_BACKGROUND_QUIET": 20 * ts, "AXI_BACKGROUND_MAX": 120 * ts,
        "AXI_LOCAL_RESERVE_S": v.reserve_s * ts,
        "AXI_LOCAL_SLOTS": v.slots, "AXI_LOCAL_CACHES": v.server_slots or v.slots,
        "AXI_EMBED_MODEL": EMBED_MODEL if v.embed else "off",
    }
    if v.small_extract:
        values["AXI_LOCAL_EXTRACTION_MODEL"] = EXTRACTION_MODEL
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def scale_module_clocks(ts: float) -> None:
    """The retry delays and polls Axi reads from its modules, scaled like the clock."""
    bot.embedder.IDLE_POLL_S, bot.embedder.RETRY_AFTER_S = 30.0 * ts, 300.0 * ts
    for name in ("WAIT_FOR_MODEL", "UNEXPECTED", "EXTRACTION"):
        base = getattr(backoff, name)
        setattr(backoff, name, replace(base, base_s=base.base_s * ts, cap_s=base.cap_s * ts))
    bot.extractor.EXTRACTION = backoff.EXTRACTION  # imported by name there


async def run_variant(v: Variant, plan: Plan, args: argparse.Namespace,
                      vocab: Vocabulary) -> dict[str, Any]:
    ts = args.time_scale
    await world.prepare_database(args.database_url, DATA_DIR, [
        (p.name, p.relation, p.channel, p.address) for p in plan.people], vocab, args.seed,
        args.souvenirs)
    cpu = CpuConfig(prompt_rate=args.prompt_rate, gen_rate=args.gen_rate,
                    num_parallel=v.server_slots or v.slots,
                    slot_policy=v.policy or args.slot_policy, time_scale=ts)
    server = world.SharedCpuOllama(cpu, speed={EXTRACTION_MODEL: EXTRACTION_SPEED},
                                   shared=not args.free_cpu)
    scripts = world.Scripts(args.seed)

    def configure() -> None:
        server.models.append(EXTRACTION_MODEL)
        server.reply, server.json_reply = scripts.reply, scripts.json_reply

    configure()
    claude = FakeAnthropic()
    claude.reply, claude.delay_s = scripts.claude, 4.0 * ts
    server.start()
    claude.start()
    channels = {"telegram": world.StandIn("telegram", live=True),
                "web": world.StandIn("web", live=True), "email": world.StandIn("email", live=False)}
    day, tasks = Day(), list[asyncio.Task[Any]]()
    try:
        cfg = make_settings(args, v, server.url, claude.url)
        async with Axi(cfg, channels) as app:  # type: ignore[arg-type]
            app.router.breaker.cooldown_s *= ts
            if not v.gate:  # today: no gate, extraction from the minimal prompt
                app.router.gate = None
                app.pipeline.on_accept = None
                if app.embedder is not None:
                    app.embedder.gate = None
                if hasattr(app.extractor, "continuations"):
                    app.extractor.continuations = False
            instrument(app, day)
            if app.embedder is not None:  # steady state: the old souvenirs have vectors
                while await app.embedder.embed_batch(64):
                    pass
            server.reset()  # the day starts with the models loaded and nothing cached
            configure()
            async with httpx.AsyncClient() as http:
                for model in {cfg.local_model, cfg.local_extraction_model or cfg.local_model}:
                    await http.post(f"{server.url}/api/chat", json={
                        "model": model, "messages": [], "keep_alive": cfg.local_keep_alive,
                        "options": {"num_ctx": cfg.local_num_ctx}}, timeout=60)
            first_record = len(server.records)
            mono0, sim0 = time.monotonic(), server.now()

            def sim(mono: float) -> float:
                return sim0 + (mono - mono0) / ts

            async def until(t: float) -> None:
                await asyncio.sleep(max(t - sim(time.monotonic()), 0.0) * ts)

            app.start_loops(extractor=False, maintenance=False, embeddings=v.embed)
            tasks.append(asyncio.create_task(app.extractor.run(app.stop_event, idle_s=2 * ts)))
            persons = [asyncio.create_task(drive(app, th, channels[th.person.channel], day,
                                                 until, sim, ts)) for th in plan.threads]
            veilles = [asyncio.create_task(veille(app, w, day, until, sim)) for w in plan.veilles]
            tasks += [*veilles, asyncio.create_task(progress(app, channels, day, plan, server,
                                                             sim, args))]
            await asyncio.gather(*persons)
            day.end_of_day_queue = await queued(app)
            for _ in range(int(args.drain / 5)):  # background work catches up
                if not (await queued(app) or not all(t.done() for t in veilles) or (
                        app.embedder and await app.store.missing_embeddings(1, model=EMBED_MODEL))):
                    break
                await asyncio.sleep(5 * ts)
            end_sim = sim(time.monotonic())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return await analyse(app, channels, v, day, server, first_record, sim, end_sim)
    finally:
        for task in tasks:
            task.cancel()
        server.stop()
        claude.stop()


async def drive(app: Axi, th: Thread, channel: world.StandIn, day: Day, until: Any, sim: Any,
                ts: float) -> None:
    p, next_at = th.person, th.start_s
    await until(next_at)
    for i, msg in enumerate(th.texts):
        mid = await app.pipeline.accept(Inbound(
            channel=p.channel, sender=p.address, verified=True, text=msg,
            external_id=f"mt-{p.address}-{i}", received_at=datetime.now(UTC)))
        day.sent[mid] = Sent(p, msg, time.monotonic())
        if p.kind == "email":
            next_at += th.gaps[i]
        else:
            await channel.wait_reply(mid, 900 * ts)
            next_at = sim(time.monotonic()) + th.gaps[i]
        await until(next_at)


async def veille(app: Axi, w: tuple[float, str, list[dict[str, str]]], day: Day, until: Any,
                 sim: Any) -> None:
    """A veille's summary, as a durable background job would ask it: again when preempted."""
    await until(w[0])
    entry: dict[str, Any] = {"kind": w[1], "asked": sim(time.monotonic()), "preempted": 0,
                             "errors": 0, "done": None, "provider": None}
    day.veilles.append(entry)
    messages = [ChatMessage(m["role"], m["content"]) for m in w[2]]  # type: ignore[arg-type]
    while entry["done"] is None:
        if app.router.gate is not None:
            await app.router.gate.until_quiet()
        try:
            reply = await app.router.chat(messages, task="summary", priority=Priority.BACKGROUND)
        except Preempted:
            entry["preempted"] += 1
            continue
        except LLMError:
            entry["errors"] += 1
            await until(sim(time.monotonic()) + 60)
            continue
        entry["done"], entry["provider"] = sim(time.monotonic()), reply.provider


async def queued(app: Axi) -> int:
    async with app.db.engine.connect() as conn:
        return int(await conn.scalar(text(
            "SELECT count(*) FROM souvenirs WHERE metadata->>'extraction' = 'a_faire'")) or 0)


async def progress(app: Axi, channels: dict[str, world.StandIn], day: Day, plan: Plan,
                   server: world.SharedCpuOllama, sim: Any, args: argparse.Namespace) -> None:
    total = sum(len(th.texts) for th in plan.threads)
    while True:
        await asyncio.sleep(args.progress * args.time_scale)
        answered = sum(1 for mid in day.sent if any(mid in c.replied for c in channels.values()))
        print(f"  t={sim(time.monotonic()):6.0f} s  messages {len(day.sent)}/{total} sent, "
              f"{answered} answered · extraction queued {await queued(app)}, done "
              f"{sum(1 for s, _ in day.finished.values() if s == 'faite')} · veilles "
              f"{sum(1 for w in day.veilles if w['done'] is not None)}/{len(plan.veilles)}"
              f" · server requests {len(server.records)}", flush=True)


# ----------------------------------------------------------------------------- analysis
async def analyse(app: Axi, channels: dict[str, world.StandIn], v: Variant, day: Day,
                  server: world.SharedCpuOllama, first: int, sim: Any, end_sim: float
                  ) -> dict[str, Any]:
    cfg, bodies = server.config, server.bodies
    records = [r for r in server.records[first:] if r.kind in ("chat", "generate")]
    kinds = {r.index: world.kind_of(bodies.get(r.index, {})) for r in records}
    replied = {mid: t for c in channels.values() for mid, t in c.replied.items()}
    ttft, floor, own, lane, prompt, evaluated, turns_detail = [], [], [], [], [], [], []
    ttft_local: list[float] = []
    ludo_cached = [0, 0]
    for mid, s in day.sent.items():
        handled, asked = day.handled.get(mid), day.asked.get(mid)
        if s.person.kind != "ludo" or mid not in replied or not handled or not asked:
            continue
        rec = next((r for r in records if kinds[r.index] == "ludo" and r.arrival_s >= sim(
            asked) - 1 and str(bodies[r.index]["messages"][-1]["content"]).endswith(
                "\n" + s.text.strip())), None)  # his turn's request (none: fallback)
        # waiting for a worker lane is waiting for the model (simulated time); from the
        # lane to the router is Axi's own work (real time) but for embedding the message
        vec = day.vector_time(handled, asked)
        own.append(asked - handled - vec)
        lane.append(sim(handled) - sim(s.accepted))
        before_model = lane[-1] + own[-1] + sim(asked) - sim(asked - vec)
        if rec is not None and rec.finished_s is not None:
            model_s = rec.arrival_s + rec.ttft_s - sim(asked)
            floor.append(world.last_message_tokens(bodies[rec.index], cfg.system_last)
                         / cfg.prompt_rate)
            prompt.append(rec.prompt_tokens)
            evaluated.append(rec.evaluated_tokens)
            ludo_cached = [ludo_cached[0] + rec.cached_tokens, ludo_cached[1] + rec.prompt_tokens]
            ttft_local.append(before_model + model_s)
        else:  # answered by the fallback: its first chunk
            model_s = sim(day.first_chunk.get(mid, replied[mid])) - sim(asked)
        ttft.append(before_model + model_s)
        turns_detail.append({"message": mid, "at": sim(s.accepted), "ttft": ttft[-1],
                             "lane": lane[-1], "own_ms": own[-1] * 1000, "model": model_s,
                             "record": rec.index if rec else None})
    waits: dict[str, list[float]] = {"client": [], "email": []}  # accepted → first word
    for mid, s in day.sent.items():
        if s.person.kind in waits and mid in replied:
            waits[s.person.kind].append(sim(day.first_chunk.get(mid, replied[mid]))
                                        - sim(s.accepted))
    done = [r for r in records if r.finished_s is not None]
    cut = [r for r in records if r.finished_s is None]
    cache = sum(r.cached_tokens for r in done) / max(sum(r.prompt_tokens for r in done), 1)
    async with app.db.engine.connect() as conn:
        calls = (await conn.execute(text(
            "SELECT fournisseur, tache, coalesce(raison_repli, '') AS r, count(*) AS n "
            "FROM appels_llm WHERE succes AND tache <> 'warm' GROUP BY 1, 2, 3"))).all()
        items = (await conn.execute(text(
            "SELECT id, metadata->>'extraction', (metadata->>'message_id')::bigint "
            "FROM souvenirs WHERE metadata ? 'extraction'"))).all()
        turns = int(await conn.scalar(text(
            "SELECT count(*) FROM messages WHERE sens = 'entrant' AND etat = 'traite'")) or 0)
        unvectored = int(await conn.scalar(text(
            "SELECT count(*) FROM souvenirs s WHERE NOT EXISTS (SELECT 1 FROM "
            "souvenirs_vecteurs v WHERE v.souvenir_id = s.id)")) or 0) if v.embed else None
    states = dict(Counter(str(state) for _, state, _ in items))
    # delay: reply sent → extraction done; an item still queued counts with its age
    delays = [(sim(day.finished[sid][1]) if state == "faite" and sid in day.finished
               else end_sim) - sim(replied[msg]) for sid, state, msg in items if msg in replied]
    vdelay = [(w["done"] or end_sim) - w["asked"] for w in day.veilles]
    lost = states.get("echec", 0) + max(turns - len(items), 0)  # a veille job never gives up
    unanswered = sum(1 for mid in day.sent if mid not in replied)
    local = sum(c.n for c in calls if c.fournisseur == "ollama") / max(sum(c.n for c in calls), 1)
    fl95 = world.pct(floor, 95)
    ratio = world.pct(ttft, 95) / fl95 if fl95 else float("nan")
    return {
        "variant": asdict(v), "sim_seconds": end_sim, "messages": len(day.sent),
        "unanswered": unanswered, "requests": dict(Counter(kinds.values())),
        "ludo": {"ttft_s": world.dist(ttft), "floor_s": world.dist(floor),
                 "ttft_local_s": world.dist(ttft_local), "by_fallback": len(ttft) - len(ttft_local),
                 "own_ms": world.dist([x * 1000 for x in own]), "lane_wait_s": world.dist(lane),
                 "prompt_tokens": world.dist(prompt), "evaluated_tokens": world.dist(evaluated),
                 "cache_share": ludo_cached[0] / max(ludo_cached[1], 1),
                 "p95_over_floor": ratio, "turns": turns_detail},
        "clients": {"live_first_word_s": world.dist(waits["client"]),
                    "email_reply_s": world.dist(waits["email"])},
        "cache_share": cache, "local_share": local, "calls": [dict(c._mapping) for c in calls],
        "extraction": {"states": states, "turns": turns, "delay_s": world.dist(delays),
                       "queued_end_of_day": day.end_of_day_queue,
                       "continued": getattr(app.extractor, "continued", None),
                       "warmed": getattr(app.extractor, "warmed", None),
                       "foreseen": getattr(app.extractor, "foreseen", None)},
        "veilles": {"delay_s": world.dist(vdelay), "asked": len(day.veilles),
                    "done": sum(1 for w in day.veilles if w["done"] is not None),
                    "preempted": sum(w["preempted"] for w in day.veilles),
                    "providers": dict(Counter(str(w["provider"]) for w in day.veilles))},
        "cancelled_requests": {"n": len(cut), "evaluated_tokens": sum(
            r.evaluated_tokens for r in cut)},
        "preempted": app.gate.stats.preempted if v.gate else 0, "lost": lost,
        "embeddings": {"requests": sum(1 for r in server.records[first:] if r.kind == "embed"),
                       "souvenirs_without_vector": unvectored} if v.embed else None,
        "timeline": [(r.index, kinds[r.index], round(r.arrival_s, 1), r.slot,
                      round(r.queue_s, 1), r.prompt_tokens, r.cached_tokens, round(r.ttft_s, 1),
                      round(r.total_s, 1), r.finished_s is not None) for r in records],
        "targets": {"p95_over_floor": ratio <= TARGETS["p95_over_floor"],
                    "cache_share": cache >= TARGETS["cache_share"],
                    "local_share": local >= TARGETS["local_share"],
                    "none_lost": lost == 0 and unanswered == 0},
    }


# ----------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> int:
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
    vocab = load_vocabulary(args.seed)
    plan = make_plan(args, vocab)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    scale_module_clocks(args.time_scale)
    n_ludo = sum(len(t.texts) for t in plan.threads if t.person.kind == "ludo")
    print(f"Axi local model time — a day at the agency on one simulated CPU: "
          f"{args.prompt_rate:g} prompt tok/s, {args.gen_rate:g} generated tok/s, "
          f"{'free parallelism' if args.free_cpu else 'one CPU shared by concurrent requests'}"
          f", slot policy {args.slot_policy}; time scale {args.time_scale:g} wall s per "
          f"simulated s; load average {os.getloadavg()[0]:.2f}\n"
          f"the day: Ludo {n_ludo} messages in {args.conversations} conversations, clients "
          f"{sum(len(t.texts) for t in plan.threads) - n_ludo} messages (3 by email, 3 live "
          f"chats); veilles SIMULATED as {len(plan.veilles)} background router.chat("
          f"task='summary') calls of ~1,800 (DPE) / ~1,400 (competitors) prompt tokens every "
          f"{args.veille_every:g} s; {args.souvenirs} souvenirs in memory\n"
          f"today = the gate removed (router.gate = None, pipeline.on_accept = None, "
          f"embedder.gate = None), extractor.continuations = False, extractor polling every "
          f"2 s: extraction right after each reply, FIFO at the server", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for k, name in enumerate(names, 1):
        print(f"[{k}/{len(names)}] {name}…", flush=True)
        t0 = time.monotonic()
        results[name] = await run_variant(VARIANTS[name], plan, args, vocab)
        results[name]["wall_seconds"] = time.monotonic() - t0
        print(f"  done in {results[name]['wall_seconds']:.0f} s wall", flush=True)
    world.report(results)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"model_time-{run_id}.json"
    path.write_text(json.dumps({"started": run_id, "args": vars(args), "results": results,
                                "machine": {"cpus": os.cpu_count(),
                                            "python": platform.python_version()}},
                               indent=2, ensure_ascii=False, default=str))
    print(f"results: {path}")
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--database-url", default=DEFAULT_URL,
                   help="a database dedicated to this bench: it is emptied")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    p.add_argument("--time-scale", type=float, default=0.02, help="wall s per simulated s")
    p.add_argument("--quick", action="store_true", help="a short day (smoke run, < 1 min)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--conversations", type=int, default=3, choices=[1, 2, 3],
                   help="Ludo's conversations at once")
    p.add_argument("--turns", type=int, default=15, help="turns of each of Ludo's conversations")
    p.add_argument("--client-turns", type=int, default=4, help="turns of a live client chat")
    p.add_argument("--veille-every", type=float, default=420.0, help="simulated s")
    p.add_argument("--souvenirs", type=int, default=1500, help="seeded memory")
    p.add_argument("--drain", type=float, default=1200.0,
                   help="simulated s after the last message for background work to finish")
    p.add_argument("--prompt-rate", type=float, default=60.0)
    p.add_argument("--gen-rate", type=float, default=9.0)
    p.add_argument("--slot-policy", default="ollama",
                   choices=["ollama", "ollama-multiuser", "llama-server"])
    p.add_argument("--free-cpu", action="store_true",
                   help="concurrent requests do not share the CPU (the fake's own model)")
    p.add_argument("--progress", type=float, default=300.0, help="simulated s between lines")
    args = p.parse_args(argv)
    if args.quick:
        args.turns, args.client_turns, args.souvenirs = 3, 2, 300
        args.veille_every, args.drain, args.progress = 200.0, 600.0, 150.0
        if args.variants == ",".join(VARIANTS):
            args.variants = "today,gate"
    unknown = [n for n in args.variants.split(",") if n.strip() and n.strip() not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}: choose among {', '.join(VARIANTS)}")
    return args


class _Quiet(logging.Filter):
    """A preempted request is a client going away: not an error of the loopback server."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return type(exc).__name__ not in {"ClientDisconnect", "CancelledError"}


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("uvicorn.error").addFilter(_Quiet())
    code = 130
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(run(parse_args(argv)))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
