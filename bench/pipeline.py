"""Pipeline latency: inbound accepted → LLM request sent, inbox throughput, prompt prefix reuse.

A benchmark script, not a test. It builds (or reuses) an Axi memory loaded with many
realistic French souvenirs (embedded PostgreSQL 16 in a data dir under
/root/axi-bench-pipeline by default, or --database-url), starts an INSTANT loopback Ollama
(tests/fakes/ollama_server.FakeOllama: a real HTTP server on 127.0.0.1, fixed short reply)
and drives the real `bot.app.Axi` (real ollama client, router, responder, pipeline; no
Anthropic) to measure:

1. latency from "inbound accepted" (`pipeline.accept` returned) to "LLM request sent"
   (the fake server's /api/chat handler starts; same process, same `time.perf_counter`),
   with the worker loop running as in production; broken down into wake-up, claim,
   identify, gather (consignes, facts, people, history, recall), compose and
   router → HTTP. Targets: p50 ≤ 10 ms, p95 ≤ 25 ms.
2. durable inbox acceptance: `pipeline.accept` of N distinct messages, sequential and
   with C concurrent tasks. Target ≥ 200 messages/s.
3. prompt prefix reuse over a 20-turn conversation (fresh person): `bot.prompt_builder.prefix_share`
   of each prompt the fake received against the previous prompt + reply. Target ≥ 0.8.
   The same is reported, for information, for Ludo's long conversation (window moves).

The text comes from bench/memory_scale.py's generator (FrenchText). Loading 1,000,000
souvenirs takes minutes: a data dir that already holds them is reused.

    .venv/bin/python bench/pipeline.py --souvenirs 20000
    .venv/bin/python bench/pipeline.py                       # 1,000,000 souvenirs
    .venv/bin/python bench/pipeline.py --profile             # + cProfile of phase 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import logging
import os
import platform
import pstats
import random
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# bench/email.py and bench/telegram.py would shadow the stdlib and PTB: never on sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import Response  # noqa: E402

from bench.memory_scale import (  # noqa: E402
    FrenchText,
    console,
    create_relations,
    load_faits,
    load_souvenirs,
    load_vocabulary,
    make_progress,
    summary,
)
from bot.app import Axi  # noqa: E402
from bot.channel import AcceptFn, Delivery  # noqa: E402
from bot.config import DEFAULT_EMBED_MODEL, DEFAULT_LOCAL_MODEL, Settings  # noqa: E402
from bot.inbound import Inbound  # noqa: E402
from bot.prompt_builder import prefix_share, shared_prefix_tokens  # noqa: E402
from llm.tokens import estimate_message, estimate_messages  # noqa: E402
from memory import migrate  # noqa: E402
from memory.database import Database, open_database  # noqa: E402
from memory.embeddings import vector_index_name, vector_index_sql  # noqa: E402
from memory.errors import NotFound  # noqa: E402
from memory.recall_query import CANDIDATE_CAP, RecallFilter, recall_sql  # noqa: E402
from memory.store import MemoryStore  # noqa: E402
from memory.text import tsquery_text  # noqa: E402
from tests.fakes.ollama_server import FakeOllama  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATA_ROOT = Path("/root/axi-bench-pipeline")
REPLY = "D'accord, c'est noté. Je regarde ça et je reviens vers toi."
REPLY_VOUS = "D'accord, c'est noté. Je regarde cela et je reviens vers vous."

TARGET_P50_MS = 10.0
TARGET_P95_MS = 25.0
TARGET_ACCEPT_PER_S = 200.0
TARGET_PREFIX_SHARE = 0.8

# (name, relation, style, telegram id, verified, weight in the latency mix)
SENDERS = [
    ("Ludo", "créateur", "tutoie, chaleureux et direct", "1001", True, 45),
    ("Anthony", "administrateur", "tutoie", "1002", True, 15),
    ("Julie Martin", "équipe", "tutoie", "1003", True, 15),
    ("Mme Durand", "client", None, "2002", True, 15),
    (None, None, None, "9999", False, 10),  # an unverified stranger
]
FACTS = [
    ("Ludo", "habite à", "Peyrebrune", 1.0),
    ("Ludo", "envisage de vendre", "sa maison de Vergt", 0.9),
    ("Ludo", "aime", "le golf", 0.8),
    ("Ludo", "a pour agences", "Le Bugue et Vergt", 1.0),
    ("Anthony", "s'occupe de", "AXIS Station", 1.0),
    ("Julie Martin", "travaille à", "l'agence du Bugue", 1.0),
    ("Mme Durand", "vend", "une longère à Saint-Cyprien", 0.9),
    ("Mme Durand", "budget", "250 000 €", 0.7),
]
CONSIGNES = [
    "Ne rien lancer sans l'accord de Ludo.",
    "Toujours répondre en français, simplement et sans jargon.",
    "Les clients ne voient jamais les informations internes de l'agence.",
    "Signaler à Ludo toute nouvelle passoire thermique (DPE F ou G) sur nos communes.",
]


# ----------------------------------------------------------------------------- fakes
class StampingOllama(FakeOllama):
    """The loopback Ollama, stamping `perf_counter()` when a /api/chat request arrives
    (before its body is read): the moment "the LLM request is sent", as seen by Ollama."""

    def __init__(self) -> None:
        super().__init__()
        self.stamps: list[tuple[float, dict[str, Any]]] = []

    async def chat(self, request: Request) -> Response:
        arrived = time.perf_counter()
        response = await super().chat(request)
        self.stamps.append((arrived, self.requests[-1].body))
        self.requests.clear()  # the stamps keep the bodies; do not grow twice
        return response


class BenchChannel:
    """A transport stand-in: records deliveries and wakes whoever waits for a reply."""

    name = "telegram"

    def __init__(self) -> None:
        self.waiters: dict[int, asyncio.Future[float]] = {}
        self.sent: list[Delivery] = []

    async def start(self, accept: AcceptFn) -> None:
        return None

    async def stop(self) -> None:
        return None

    def live(self, conversation: str, thread_ref: str | None = None) -> None:
        return None

    async def send(self, delivery: Delivery) -> str | None:
        self.sent.append(delivery)
        fut = self.waiters.pop(delivery.in_reply_to or -1, None)
        if fut is not None and not fut.done():
            fut.set_result(time.perf_counter())
        return f"bench-{delivery.message_id}"


# ----------------------------------------------------------------------------- probes
class Probe:
    """Timestamps of one message on its way through the worker (instance wrappers only:
    no Axi code is changed)."""

    def __init__(self) -> None:
        self.active = False
        self.marks: dict[str, float] = {}
        self.spans: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.recall_queries: list[str] = []

    def reset(self) -> None:
        self.active = True
        self.marks = {}
        self.spans = defaultdict(float)
        self.calls = defaultdict(int)
        self.recall_queries = []

    def mark(self, name: str, at: float | None = None) -> None:
        if self.active and name not in self.marks:
            self.marks[name] = time.perf_counter() if at is None else at

    def span(self, name: str, seconds: float) -> None:
        if self.active:
            self.spans[name] += seconds
            self.calls[name] += 1


def instrument(app: Axi, probe: Probe) -> None:
    store, responder, router = app.store, app.pipeline.responder, app.router

    def timed(obj: Any, name: str, *, marks: bool = False) -> None:
        orig = getattr(obj, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            if marks:
                probe.mark(f"{name}_start", t0)
            try:
                return await orig(*args, **kwargs)
            finally:
                t1 = time.perf_counter()
                probe.span(name, t1 - t0)
                if marks:
                    probe.mark(f"{name}_end", t1)

        setattr(obj, name, wrapper)

    for name in ("list_consignes", "facts_about", "list_people", "conversation_history",
                 "get_person", "find_by_identity"):
        timed(store, name)
    for name in ("identify", "gather"):
        timed(responder, name, marks=True)

    orig_recall = store.recall

    async def recall(query: str, **kwargs: Any) -> Any:
        probe.recall_queries.append(query)
        t0 = time.perf_counter()
        try:
            return await orig_recall(query, **kwargs)
        finally:
            probe.span("recall", time.perf_counter() - t0)

    store.recall = recall  # type: ignore[method-assign]

    orig_compose = responder.compose

    def compose(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        probe.mark("compose_start", t0)
        try:
            return orig_compose(*args, **kwargs)
        finally:
            probe.mark("compose_end")

    responder.compose = compose  # type: ignore[method-assign]

    orig_chat = router.chat

    async def chat(*args: Any, **kwargs: Any) -> Any:
        probe.mark("router")
        return await orig_chat(*args, **kwargs)

    router.chat = chat  # type: ignore[method-assign]

    orig_claim = store.claim_inbound

    @asynccontextmanager
    async def claim_inbound(**kwargs: Any) -> AsyncIterator[Any]:
        t0 = time.perf_counter()
        async with orig_claim(**kwargs) as claim:
            if claim is not None:
                probe.mark("claim_start", t0)
                probe.mark("claimed")
            yield claim
        if claim is not None:
            probe.mark("committed")

    store.claim_inbound = claim_inbound  # type: ignore[method-assign]


# ----------------------------------------------------------------------------- texts
class Messages:
    """Varied French inbound texts: questions about the business, chat lines, long ones."""

    def __init__(self, gen: FrenchText, rng: random.Random):
        self.gen = gen
        self.rng = rng

    def kind(self) -> str:
        return str(self.gen.pick(["maison", "grange", "longère", "fermette", "maison de bourg",
                                  "terrain", "appartement", "gîte"]))

    def question(self, form: str) -> str:
        g = self.gen
        tu = form == "tu"
        templates = [
            lambda: f"Tu te souviens de {g.nominal(True)} à {g.place()} ?" if tu
            else f"Vous souvenez-vous de {g.nominal(True)} à {g.place()} ?",
            lambda: f"Où en est la vente de la {self.kind()} de {g.place()} ?",
            lambda: f"Rappelle-moi le rendez-vous avec {g.person()}" if tu
            else f"Pouvez-vous me rappeler le rendez-vous avec {g.person()} ?",
            lambda: f"Quel est le DPE de la {self.kind()} à {g.place()} ?",
            lambda: f"Est-ce que {g.person()} a rappelé pour la {self.kind()} ?",
            lambda: f"Combien s'est vendue la {self.kind()} à {g.place()} ?",
            lambda: f"Il y a des nouvelles passoires à {g.place()} cette semaine ?",
            lambda: f"Qu'est-ce qu'on sait sur {g.person()} ?",
            lambda: f"Prépare une réponse pour {g.person()} au sujet de {g.nominal(True)}",
            lambda: "Anthony a-t-il relancé le notaire pour le compromis de Vergt ?",
            lambda: "Julie Martin peut faire la visite de samedi au Bugue ?",
            lambda: f"Ludo veut savoir si la {self.kind()} de {g.place()} est toujours dispo",
            lambda: "Merci !" if self.rng.random() < 0.5 else "Ok, parfait.",
        ]
        return str(self.gen.pick(templates)())

    def text(self, form: str) -> str:
        r = self.rng.random()
        if r < 0.45:
            return self.question(form)
        if r < 0.80:
            return self.gen.sentences(self.rng.randint(1, 2))
        if r < 0.95:
            return self.gen.body()
        return self.gen.chat()


# ----------------------------------------------------------------------------- setup
async def scalar(db: Database, sql: str, params: dict[str, Any] | None = None) -> Any:
    async with db.engine.connect() as conn:
        return await conn.scalar(text(sql), params or {})


async def prepare_memory(args: argparse.Namespace, url: str | None, data_dir: Path,
                         gen: FrenchText) -> dict[str, Any]:
    """Migrate, then load souvenirs/people/facts/consignes unless already there."""
    info: dict[str, Any] = {}
    async with open_database(url, data_dir) as db:
        t0 = time.perf_counter()
        await migrate.upgrade(db.engine)
        info["migrate_seconds"] = time.perf_counter() - t0
        store = MemoryStore(db)
        have = int(await scalar(db, "SELECT count(*) FROM souvenirs"))
        try:
            await store.get_person("Ludo")
            seeded = True
        except NotFound:
            seeded = False
        if have >= args.souvenirs and seeded:
            console.print(f"reusing the memory: {have:,} souvenirs already loaded "
                          f"(need {args.souvenirs:,})")
            info["reused"] = True
        else:
            if have or seeded:
                raise SystemExit(
                    f"{db.display_url} holds {have:,} souvenirs (need {args.souvenirs:,}): "
                    "use an empty --data-dir / database, or the one that holds them")
            info["reused"] = False
            for name, relation, style, tg, verified, _ in SENDERS:
                if name is not None:
                    await store.add_person(name, relation=relation or "client",
                                           comment_interagir=style,
                                           identities=[("telegram", tg)] if verified else [])
            for texte in CONSIGNES:
                await store.add_consigne(texte, source="bench")
            people = {p.personne: p.id for p in await store.list_people()}
            for sujet, predicat, objet, conf in FACTS:
                await store.add_fact(sujet, predicat, objet, confiance=conf,
                                     relation_id=people.get(sujet), multi_valued=True)
            relation_ids = await create_relations(db, gen, args.relations)
            console.rule("load")
            ins = await load_souvenirs(store, gen, args, relation_ids)
            info["insert"] = {k: v for k, v in ins.items() if k != "sources"}
            console.print(f"souvenirs: {ins['count']:,} in {ins['insert_seconds']:,.1f} s "
                          f"inside remember_many() → {ins['per_second']:,.0f}/s "
                          f"(wall {ins['wall_seconds']:,.0f} s)")
            max_id = int(await scalar(db, "SELECT coalesce(max(id), 0) FROM souvenirs"))
            fa = await load_faits(db, gen, args.faits, max_id, relation_ids)
            info["faits_load"] = fa
            t0 = time.perf_counter()
            async with db.engine.connect() as conn:
                await conn.execute(text("ANALYZE"))
                await conn.commit()
            info["analyze_seconds"] = time.perf_counter() - t0
        # what `axi run`'s maintenance loop does in the background (memory/lexicon.py)
        state = await store.lexicon_state()
        if state is None or state.souvenirs < have:
            lexicon = await store.refresh_lexicon(full=state is None)
            info["lexicon"] = {"seconds": lexicon.seconds, "lexemes": lexicon.lexemes,
                               "full": lexicon.full}
            console.print(f"lexicon: {lexicon.lexemes:,} words, "
                          f"{lexicon.souvenirs_counted:,} souvenirs counted in "
                          f"{lexicon.seconds:.1f} s")
        info["souvenirs"] = int(await scalar(db, "SELECT count(*) FROM souvenirs"))
        info["faits"] = int(await scalar(db, "SELECT count(*) FROM faits"))
        info["relations"] = int(await scalar(db, "SELECT count(*) FROM relations"))
        info["messages_before"] = int(await scalar(db, "SELECT count(*) FROM messages"))
        info["database_bytes"] = int(await scalar(
            db, "SELECT pg_database_size(current_database())"))
        info["server_version"] = await scalar(db, "SHOW server_version")
    return info


VECTOR_CHUNK = 20_000


async def prepare_vectors(db: Database, store: MemoryStore, n: int, dim: int) -> dict[str, Any]:
    """Random vectors of the default embedding model for the `n` newest souvenirs (made
    in SQL: the latency of hybrid recall does not depend on what the vectors mean), and
    the model's HNSW index, as the background embedder leaves them."""
    model = DEFAULT_EMBED_MODEL
    info: dict[str, Any] = {"model": model, "dim": dim, "wanted": n}
    have = await store.count_embeddings(model)
    if have < n:
        t0 = time.perf_counter()
        with make_progress() as progress:
            task = progress.add_task("vectors", total=n - have, rate="")
            while have < n:
                step = min(VECTOR_CHUNK, n - have)
                async with db.engine.begin() as conn:
                    await conn.execute(text(
                        "INSERT INTO souvenirs_vecteurs (souvenir_id, modele, vecteur) "
                        "SELECT s.id, :m, ARRAY(SELECT (random() - 0.5 + 0 * s.id)::real "
                        "FROM generate_series(1, :dim)) FROM souvenirs s WHERE NOT EXISTS "
                        "(SELECT 1 FROM souvenirs_vecteurs v WHERE v.souvenir_id = s.id) "
                        "ORDER BY s.id DESC LIMIT :n"), {"m": model, "dim": dim, "n": step})
                have += step
                progress.update(task, advance=step)
        info["insert_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    async with db.engine.begin() as conn:
        await conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        await conn.execute(text(vector_index_sql(model, dim)))
    info["index_seconds"] = time.perf_counter() - t0
    info["vectors"] = await store.count_embeddings(model)
    info["index"] = vector_index_name(model, dim)
    console.print(f"vectors: {info['vectors']:,} of {dim} dimensions ({model}); HNSW index "
                  f"ready in {info['index_seconds']:.1f} s")
    return info


def random_embedding(dim: int) -> Any:
    def embed(text_: str) -> list[float]:
        rng = random.Random(text_)
        return [rng.random() - 0.5 for _ in range(dim)]
    return embed


def make_settings(fake: FakeOllama, url: str | None, data_dir: Path,
                  args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {
        "OLLAMA_HOST": fake.url, "AXI_LOCAL_MODEL": DEFAULT_LOCAL_MODEL,
        "AXI_LOCAL_NUM_CTX": args.num_ctx, "AXI_LOCAL_TIMEOUT": 30.0,
        "AXI_DATA_DIR": str(data_dir), "AXI_WORKER_CONCURRENCY": args.workers,
        "ANTHROPIC_API_KEY": None, "AXI_LOG_LEVEL": "WARNING",
        # without --vectors, full-text recall alone (a memory that already holds vectors
        # from an earlier --vectors run would otherwise be measured hybrid)
        "AXI_EMBED_MODEL": DEFAULT_EMBED_MODEL if args.vectors else "off",
    }
    if url:
        values["AXI_DATABASE_URL"] = url
    cfg = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert cfg.anthropic_api_key is None, "the benchmark must not reach Anthropic"
    return cfg


def inbound(sender: str, text_: str, external_id: str, *, verified: bool = True) -> Inbound:
    return Inbound(channel="telegram", sender=sender, verified=verified, text=text_,
                   external_id=external_id, received_at=datetime.now(UTC))


# ----------------------------------------------------------------------------- phase 1
SEGMENTS = [
    ("wake", "accepted", "claim_start", "accept returned → worker lane starts its claim"),
    ("claim", "claim_start", "claimed", "SELECT … FOR UPDATE SKIP LOCKED"),
    ("to_identify", "claimed", "identify_start", "claim → responder"),
    ("identify", "identify_start", "identify_end", "find_by_identity / get_person"),
    ("to_gather", "identify_end", "gather_start", ""),
    ("gather", "gather_start", "gather_end", "consignes, facts, people, history, recall"),
    ("to_compose", "gather_end", "compose_start", ""),
    ("compose", "compose_start", "compose_end", "bot.prompt_builder.build_prompt"),
    ("to_router", "compose_end", "router", ""),
    ("router_to_server", "router", "server", "router + ollama client + HTTP + server"),
]
GATHER_PARTS = ["list_consignes", "facts_about", "list_people", "conversation_history",
                "recall"]


async def phase_latency(app: Axi, fake: StampingOllama, channel: BenchChannel, probe: Probe,
                        msgs: Messages, rng: random.Random, args: argparse.Namespace,
                        run_id: str) -> dict[str, Any]:
    weights = [s[5] for s in SENDERS]
    total = args.warmup + args.messages
    rows: list[dict[str, Any]] = []
    profiler = cProfile.Profile() if args.profile else None
    mismatched = 0
    started = time.perf_counter()
    stopped_early = False
    with make_progress() as progress:
        task = progress.add_task("latency", total=total, rate="")
        for i in range(total):
            if time.perf_counter() - started > args.budget:
                stopped_early = True
                console.print(f"[yellow]phase 1 time budget ({args.budget:g} s) spent after "
                              f"{i} messages[/]")
                break
            name, relation, _, tg, verified, _ = rng.choices(SENDERS, weights)[0]
            form = "vous" if relation == "client" or name is None else "tu"
            body = msgs.text(form)
            fake.reply = REPLY if form == "tu" else REPLY_VOUS
            before = len(fake.stamps)
            probe.reset()
            if profiler is not None and i >= args.warmup:
                profiler.enable()
            mid = await app.pipeline.accept(
                inbound(tg, body, f"lat-{run_id}-{i}", verified=verified))
            accepted = time.perf_counter()
            fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            channel.waiters[mid] = fut
            try:
                delivered = await asyncio.wait_for(fut, timeout=args.message_timeout)
            except TimeoutError:
                console.print(f"[red]message {i} (#{mid}) got no reply in "
                              f"{args.message_timeout:g} s[/]")
                continue
            finally:
                if profiler is not None:
                    profiler.disable()
            probe.active = False
            if len(fake.stamps) <= before:
                console.print(f"[yellow]message {i} was answered without an LLM call[/]")
                continue
            server, sent_body = fake.stamps[before]
            if body.split()[0] not in sent_body["messages"][-1]["content"]:
                mismatched += 1  # the request is not this message's (should not happen)
            marks = dict(probe.marks, accepted=accepted, server=server, delivered=delivered)
            row: dict[str, Any] = {
                "i": i, "sender": name or "inconnu", "chars": len(body),
                "latency_ms": (server - accepted) * 1000,
                "end_to_end_ms": (delivered - accepted) * 1000,
                "recall_query": probe.recall_queries[0] if probe.recall_queries else None,
            }
            for seg, a, b, _ in SEGMENTS:
                if a in marks and b in marks:
                    row[seg] = (marks[b] - marks[a]) * 1000
            for part in GATHER_PARTS:
                row[part] = probe.spans.get(part, 0.0) * 1000
            row["recall_calls"] = probe.calls.get("recall", 0)
            row["prompt_tokens"] = estimate_messages(sent_body["messages"])
            if i >= args.warmup:
                rows.append(row)
            progress.update(task, advance=1,
                            rate=f"last {row['latency_ms']:,.1f} ms")
    lat = summary([r["latency_ms"] for r in rows])
    result: dict[str, Any] = {
        "messages": len(rows), "mismatched_requests": mismatched, "warmup": args.warmup,
        "workers": args.workers,
        "stopped_early": stopped_early, "seconds": time.perf_counter() - started,
        "latency_ms": lat,
        "latency_without_recall_ms": summary([r["latency_ms"] - r["recall"] for r in rows]),
        "end_to_end_ms": summary([r["end_to_end_ms"] for r in rows]),
        "segments_ms": {seg: summary([r[seg] for r in rows if seg in r])
                        for seg, *_ in SEGMENTS},
        "gather_parts_ms": {p: summary([r[p] for r in rows]) for p in GATHER_PARTS},
        "by_sender": {
            s: summary([r["latency_ms"] for r in rows if r["sender"] == s])
            for s in sorted({r["sender"] for r in rows})
        },
        "prompt_tokens": summary([float(r["prompt_tokens"]) for r in rows]),
        "slowest": sorted(rows, key=lambda r: -r["latency_ms"])[:10],
    }
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
        stats.print_stats(35)
        result["profile_top"] = out.getvalue()
        stamp = run_id
        path = RESULTS_DIR / f"pipeline-{stamp}.prof"
        stats.dump_stats(str(path))
        result["profile_file"] = str(path)
        out2 = io.StringIO()
        pstats.Stats(profiler, stream=out2).sort_stats("tottime").print_stats(25)
        result["profile_tottime"] = out2.getvalue()
    return result


async def explain_recalls(db: Database, queries: Sequence[str], *, private_ok: bool = True,
                          timeout_ms: int = 120_000) -> list[dict[str, Any]]:
    """EXPLAIN ANALYZE the recall SQL (strict AND, then OR as recall() does) of queries."""
    out = []
    sql, params = recall_sql("french", RecallFilter(private_ok=private_ok))
    for q in queries:
        entry: dict[str, Any] = {"query": q, "plans": []}
        for mode in ("and", "or"):
            tsq = tsquery_text(q, mode=mode)
            if tsq is None:
                continue
            try:
                async with db.engine.begin() as conn:
                    await conn.execute(text(f"SET LOCAL statement_timeout = {timeout_ms}"))
                    matches = await conn.scalar(text(
                        "SELECT count(*) FROM souvenirs s WHERE s.recherche @@ "
                        "to_tsquery('french'::regconfig, :tsq)"), {"tsq": tsq})
                    t0 = time.perf_counter()
                    rows = (await conn.execute(text(
                        "EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + sql),
                        {**params, "tsq": tsq, "k": 10, "cap": CANDIDATE_CAP})).all()
                    ms = (time.perf_counter() - t0) * 1000
            except Exception as exc:  # statement timeout: say so, keep going
                entry["plans"].append({"mode": mode, "matches": -1, "ms": float("nan"),
                                       "plan": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            entry["plans"].append({"mode": mode, "matches": matches, "ms": ms,
                                   "plan": "\n".join(r[0] for r in rows)})
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- phase 2
async def phase_accept(app: Axi, msgs: Messages, args: argparse.Namespace,
                       run_id: str) -> dict[str, Any]:
    n, conc = args.accept, args.concurrency
    texts = [msgs.text("tu") for _ in range(min(n, 500))]
    result: dict[str, Any] = {"n": n, "concurrency": conc}

    async def one(k: int, label: str) -> float:
        t0 = time.perf_counter()
        await app.pipeline.accept(inbound(f"3{k % 50:03d}", texts[k % len(texts)],
                                          f"acc-{run_id}-{label}-{k}"))
        return time.perf_counter() - t0

    # sequential
    t0 = time.perf_counter()
    seq = [await one(k, "seq") for k in range(n)]
    wall = time.perf_counter() - t0
    result["sequential"] = {"seconds": wall, "per_second": n / wall,
                            "call_ms": summary([s * 1000 for s in seq])}
    # concurrent
    counter = iter(range(n))
    times: list[float] = []

    async def worker() -> None:
        for k in counter:
            times.append(await one(k, "par"))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    wall = time.perf_counter() - t0
    result["concurrent"] = {"seconds": wall, "per_second": n / wall,
                            "call_ms": summary([s * 1000 for s in times])}
    # redelivery (duplicates): the no-op path
    t0 = time.perf_counter()
    dups = min(n, 1000)
    for k in range(dups):
        await one(k, "seq")
    wall = time.perf_counter() - t0
    result["redelivery"] = {"n": dups, "per_second": dups / wall}
    # bare floor: the same INSERT through asyncpg, no SQLAlchemy, no cleaning
    async with app.db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        t0 = time.perf_counter()
        for k in range(min(n, 2000)):
            await driver.execute(
                "INSERT INTO messages (sens, canal, adresse, verifie, conversation, "
                "identifiant_externe, texte, pieces_jointes, recu_le, metadata, etat) VALUES "
                "('entrant', 'telegram', $1, true, $2, $3, $4, '[]'::jsonb, now(), '{}'::jsonb, "
                "'en_attente') ON CONFLICT (canal, identifiant_externe) WHERE sens = 'entrant' "
                "DO NOTHING", "3000", "telegram:3000", f"acc-{run_id}-bare-{k}",
                texts[k % len(texts)])
        wall = time.perf_counter() - t0
        await conn.commit()
    result["bare_insert_autocommit"] = {"n": min(n, 2000), "per_second": min(n, 2000) / wall}
    # do not leave thousands of pending messages for the next run's worker
    async with app.db.engine.begin() as conn:
        deleted = await conn.execute(text(
            "DELETE FROM messages WHERE sens = 'entrant' AND identifiant_externe LIKE :p"),
            {"p": f"acc-{run_id}-%"})
        result["cleaned_up"] = deleted.rowcount
    return result


# ----------------------------------------------------------------------------- phase 3
class PrefixTurn(TypedDict):
    """How much of one turn's prompt the previous turn's prompt (plus its reply) shares."""
    turn: int
    share: float
    prompt_tokens: int
    new_tokens: int
    first_diff: int
    prev_messages: int
    history_moved: bool
    messages: int
    prev_last_turn_tokens: int
    prev_data_block: bool
    first_role: str


async def phase_prefix(app: Axi, fake: StampingOllama, msgs: Messages, *, sender: str,
                       turns: int, form: str, run_id: str, label: str) -> dict[str, Any]:
    fake.reply = REPLY if form == "tu" else REPLY_VOUS
    prompts: list[list[dict[str, str]]] = []
    replies: list[str] = []
    for t in range(turns):
        before = len(fake.stamps)
        text_ = msgs.question(form) if t % 2 == 0 else msgs.gen.sentences(1)
        await app.answer_one(inbound(sender, text_, f"pre-{label}-{run_id}-{t}"))
        if len(fake.stamps) <= before:
            raise RuntimeError(f"turn {t} made no LLM call")
        prompts.append(fake.stamps[before][1]["messages"])
        replies.append(fake.reply if isinstance(fake.reply, str) else "")
    per_turn: list[PrefixTurn] = []
    for t in range(1, turns):
        prev, nxt = prompts[t - 1], prompts[t]
        share = prefix_share(prev, replies[t - 1], nxt)
        last = prev[-1]
        first_diff = next((k for k, (a, b) in enumerate(zip(prev, nxt, strict=False))
                           if a != b), min(len(prev), len(nxt)))
        shared = shared_prefix_tokens([*prev, {"role": "assistant", "content": replies[t - 1]}],
                                      nxt)
        per_turn.append({
            "turn": t + 1, "share": share, "prompt_tokens": estimate_messages(nxt),
            "new_tokens": estimate_messages(nxt) - shared,
            "first_diff": first_diff, "prev_messages": len(prev),
            "history_moved": first_diff < len(prev) - 1,
            "messages": len(nxt), "prev_last_turn_tokens": estimate_message(last),
            "prev_data_block": last["content"].startswith("[données"),
            "first_role": nxt[0]["role"],
        })
    shares = [p["share"] for p in per_turn]
    steady = [p for p in per_turn if not p["history_moved"]]
    return {"sender": sender, "turns": turns, "label": label,
            "new_tokens_mean": sum(p["new_tokens"] for p in per_turn) / max(len(per_turn), 1),
            "prev_last_turn_tokens_mean":
                sum(p["prev_last_turn_tokens"] for p in per_turn) / max(len(per_turn), 1),
            "history_moves": len(per_turn) - len(steady),
            "mean": sum(shares) / len(shares) if shares else 0.0,
            "min": min(shares) if shares else 0.0, "per_turn": per_turn,
            "system_mode": app.pipeline.responder.system_mode}


# ----------------------------------------------------------------------------- report
def verdict(ok: bool) -> str:
    return "[bold green]PASS[/]" if ok else "[bold red]FAIL[/]"


def f1(x: float) -> str:
    return f"{x:,.1f}"


def report(result: dict[str, Any]) -> None:
    if "latency" in result:
        report_latency(result)
    if "accept" in result:
        report_accept(result["accept"])
    report_prefix(result)


def report_latency(result: dict[str, Any]) -> None:
    lat = result["latency"]
    console.rule("1. inbound accepted → LLM request sent")
    t = Table(show_header=True)
    for col in ("measure", "p50 ms", "p95 ms", "p99 ms", "mean", "max", "target", ""):
        t.add_column(col, justify="right" if col not in ("measure", "") else "left")
    L = lat["latency_ms"]
    t.add_row("latency", f1(L["p50"]), f1(L["p95"]), f1(L["p99"]), f1(L["mean"]), f1(L["max"]),
              f"p50 ≤ {TARGET_P50_MS:g}", verdict(L["p50"] <= TARGET_P50_MS))
    t.add_row("", "", "", "", "", "", f"p95 ≤ {TARGET_P95_MS:g}",
              verdict(L["p95"] <= TARGET_P95_MS))
    W = lat["latency_without_recall_ms"]
    t.add_row("latency minus recall", f1(W["p50"]), f1(W["p95"]), f1(W["p99"]), f1(W["mean"]),
              f1(W["max"]), "(info)", "")
    E = lat["end_to_end_ms"]
    t.add_row("accept → reply delivered", f1(E["p50"]), f1(E["p95"]), f1(E["p99"]),
              f1(E["mean"]), f1(E["max"]), "(info)", "")
    console.print(t)
    t = Table(title=f"breakdown over {lat['messages']} messages (ms)")
    for col in ("segment", "p50", "p95", "p99", "mean", "max", "what"):
        t.add_column(col, justify="right" if col not in ("segment", "what") else "left")
    for seg, _, _, what in SEGMENTS:
        s = lat["segments_ms"][seg]
        if s["n"]:
            t.add_row(seg, f1(s["p50"]), f1(s["p95"]), f1(s["p99"]), f1(s["mean"]),
                      f1(s["max"]), what)
    for part in GATHER_PARTS:
        s = lat["gather_parts_ms"][part]
        t.add_row(f"  gather: {part}", f1(s["p50"]), f1(s["p95"]), f1(s["p99"]),
                  f1(s["mean"]), f1(s["max"]), "")
    console.print(t)
    console.print("latency by sender (p50 / p95 ms): " + ", ".join(
        f"{k} {f1(v['p50'])} / {f1(v['p95'])} (n={v['n']})"
        for k, v in lat["by_sender"].items()))
    console.print(f"prompt size (estimated tokens): p50 {lat['prompt_tokens']['p50']:,.0f}, "
                  f"max {lat['prompt_tokens']['max']:,.0f}")
    console.print("slowest messages: " + "; ".join(
        f"{r['latency_ms']:,.0f} ms (recall {r['recall']:,.0f} ms, {r['sender']}, "
        f"{r['chars']} chars)" for r in lat["slowest"][:5]))
    for e in result.get("explain", []):
        for p in e["plans"]:
            console.print(f"EXPLAIN ANALYZE recall ({p['mode']}, {p['matches']:,} matches, "
                          f"{p['ms']:,.0f} ms) for {e['query'][:70]!r}")
    if "profile_tottime" in lat:
        console.print(lat["profile_tottime"][:4000])

    if lat.get("stopped_early"):
        console.print(f"[yellow]phase 1 stopped by its time budget: {lat['messages']} messages "
                      f"measured in {lat['seconds']:,.0f} s[/]")


def report_accept(acc: dict[str, Any]) -> None:
    console.rule("2. durable inbox acceptance")
    for mode in ("sequential", "concurrent"):
        a = acc[mode]
        label = mode if mode == "sequential" else f"concurrent ×{acc['concurrency']}"
        console.print(f"{label}: {acc['n']:,} messages in {a['seconds']:.2f} s → "
                      f"[bold]{a['per_second']:,.0f} msg/s[/] (call p50 "
                      f"{a['call_ms']['p50']:.2f} ms, p95 {a['call_ms']['p95']:.2f} ms)  "
                      f"target ≥ {TARGET_ACCEPT_PER_S:g}/s {verdict(a['per_second'] >= TARGET_ACCEPT_PER_S)}")
    console.print(f"redelivery (duplicate, no-op): {acc['redelivery']['per_second']:,.0f} msg/s; "
                  f"floor (bare asyncpg INSERT, autocommit): "
                  f"{acc['bare_insert_autocommit']['per_second']:,.0f} msg/s")


def report_prefix(result: dict[str, Any]) -> None:
    for key, title in (("prefix", "3. prompt prefix reuse (fresh conversation)"),
                       ("prefix_long", "   prefix reuse on Ludo's long conversation (info)")):
        pre = result.get(key)
        if not pre:
            continue
        console.rule(title)
        console.print(f"system_mode={pre['system_mode']}; per turn: " + " ".join(
            f"{p['turn']}:{p['share']:.2f}" for p in pre["per_turn"]))
        ok = pre["mean"] >= TARGET_PREFIX_SHARE
        console.print(f"mean {pre['mean']:.3f}, min {pre['min']:.3f}  target ≥ "
                      f"{TARGET_PREFIX_SHARE:g} " + (verdict(ok) if key == "prefix" else ""))
        console.print(f"tokens to evaluate per turn (not in the cache): mean "
                      f"{pre['new_tokens_mean']:,.0f}; previous last turn (data block + "
                      f"clock + message) mean {pre['prev_last_turn_tokens_mean']:,.0f} tokens, "
                      f"lost from the cache every turn; history window moves: "
                      f"{pre['history_moves']}")


# ----------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> dict[str, Any]:
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
    rng = random.Random(args.seed)
    gen = FrenchText(load_vocabulary(args.seed), rng)
    url = args.database_url
    data_dir = Path(args.data_dir or DEFAULT_DATA_ROOT / f"s{args.souvenirs}-seed{args.seed}")
    where = url or f"embedded PostgreSQL 16 in {data_dir}"
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(), "args": {**vars(args),
                                                            "data_dir": str(data_dir)},
        "database": where if not url else "(--database-url)",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
        "targets": {"latency_p50_ms": TARGET_P50_MS, "latency_p95_ms": TARGET_P95_MS,
                    "accept_per_s": TARGET_ACCEPT_PER_S, "prefix_share": TARGET_PREFIX_SHARE},
        "note": args.note,
    }
    console.print(f"[bold]Axi pipeline benchmark[/] — {where}; souvenirs={args.souvenirs:,} "
                  f"messages={args.messages} accept={args.accept} num_ctx={args.num_ctx} "
                  f"load average {os.getloadavg()[0]:.2f}")
    result["memory"] = await prepare_memory(args, url, data_dir, gen)
    console.print(f"memory: {result['memory']['souvenirs']:,} souvenirs, "
                  f"{result['memory']['faits']:,} faits, {result['memory']['relations']} people, "
                  f"{result['memory']['database_bytes'] / 1e6:,.0f} MB")

    phases = set(args.phases.split(","))
    # a reused memory already holds earlier runs' messages: vary the texts with it, so a
    # rerun does not find its own previous messages as souvenirs
    msg_seed = args.seed + 7 + result["memory"]["messages_before"]
    msgs = Messages(FrenchText(gen.v, random.Random(msg_seed)), random.Random(msg_seed + 1))
    fake = StampingOllama()
    fake.start()
    try:
        cfg = make_settings(fake, url, data_dir, args)
        if args.vectors:
            fake.embedding = random_embedding(args.vector_dim)
            async with open_database(url, data_dir) as db:
                result["vectors"] = await prepare_vectors(db, MemoryStore(db), args.vectors,
                                                          args.vector_dim)
        channel = BenchChannel()
        probe = Probe()
        async with Axi(cfg, {"telegram": channel}) as app:  # type: ignore[dict-item]
            instrument(app, probe)
            if "1" in phases:
                console.rule("phase 1: latency (worker loop running)")
                # a server that has run for a while: what `axi run`'s maintenance loop does
                # at start (memory/warmup.py), done before the clock starts, not during it
                warm = await app.store.warm_cache()
                result["warmup"] = {"souvenirs": warm.souvenirs, "heap_mb": warm.heap_mb,
                                    "seconds": warm.seconds}
                console.print(f"cache warmed: {warm.souvenirs:,} souvenirs "
                              f"({warm.heap_mb:,.0f} MB) in {warm.seconds:.1f} s")
                app.start_loops(worker=True, outbox=True, extractor=False, maintenance=False,
                                embeddings=False)
                await asyncio.sleep(0.2)
                result["latency"] = await phase_latency(
                    app, fake, channel, probe, msgs, random.Random(msg_seed + 1), args, run_id)
        async with Axi(cfg, {"telegram": channel}) as app:  # type: ignore[dict-item]
            slow = [r["recall_query"] for r in
                    result.get("latency", {}).get("slowest", [])[:args.explain]
                    if r["recall_query"]]
            if slow:
                result["explain"] = await explain_recalls(
                    app.db, slow, timeout_ms=int(args.explain_timeout * 1000))
            if "3" in phases:
                console.rule("phase 3: prefix reuse")
                stamp_digits = run_id.replace("-", "")
                person = await app.store.add_person(
                    f"Bench {run_id}", relation="équipe", comment_interagir="tutoie",
                    identities=[("telegram", f"8{stamp_digits}")])
                result["prefix"] = await phase_prefix(
                    app, fake, msgs, sender=f"8{stamp_digits}", turns=args.turns, form="tu",
                    run_id=run_id, label="fresh")
                result["prefix"]["person_id"] = person.id
                result["prefix_long"] = await phase_prefix(
                    app, fake, msgs, sender="1001", turns=args.turns, form="tu",
                    run_id=run_id, label="ludo")
            if "2" in phases:
                console.rule("phase 2: inbox acceptance")
                result["accept"] = await phase_accept(app, msgs, args, run_id)
    finally:
        fake.stop()
    result["machine"]["loadavg_end"] = os.getloadavg()
    verdicts: dict[str, bool] = {}
    if "latency" in result:
        lat = result["latency"]["latency_ms"]
        verdicts["latency_p50"] = lat["p50"] <= TARGET_P50_MS
        verdicts["latency_p95"] = lat["p95"] <= TARGET_P95_MS
    if "accept" in result:
        for mode in ("sequential", "concurrent"):
            verdicts[f"accept_{mode}"] = (result["accept"][mode]["per_second"]
                                          >= TARGET_ACCEPT_PER_S)
    if "prefix" in result:
        verdicts["prefix_share"] = result["prefix"]["mean"] >= TARGET_PREFIX_SHARE
    result["verdict"] = verdicts
    result["finished"] = datetime.now(UTC).isoformat()
    report(result)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"pipeline-{run_id}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    console.print(f"results: {path}")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--souvenirs", type=int, default=1_000_000)
    p.add_argument("--faits", type=int, default=20_000, help="bulk facts loaded with COPY")
    p.add_argument("--relations", type=int, default=200, help="extra people to create")
    p.add_argument("--batch", type=int, default=2_000, help="souvenirs per remember_many()")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--messages", type=int, default=300, help="measured messages (phase 1)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured first messages")
    p.add_argument("--workers", type=int, default=4, help="AXI_WORKER_CONCURRENCY")
    p.add_argument("--num-ctx", type=int, default=8192, help="AXI_LOCAL_NUM_CTX")
    p.add_argument("--accept", type=int, default=5_000, help="messages accepted (phase 2)")
    p.add_argument("--concurrency", type=int, default=8, help="concurrent accept tasks")
    p.add_argument("--turns", type=int, default=20, help="conversation turns (phase 3)")
    p.add_argument("--explain", type=int, default=3, help="slowest recalls to EXPLAIN")
    p.add_argument("--profile", action="store_true", help="cProfile phase 1")
    p.add_argument("--phases", default="1,2,3", help="which phases to run, e.g. 1,2")
    p.add_argument("--budget", type=float, default=900.0,
                   help="phase 1 stops starting messages after this many seconds")
    p.add_argument("--message-timeout", type=float, default=900.0,
                   help="seconds to wait for one message's reply in phase 1")
    p.add_argument("--explain-timeout", type=float, default=120.0,
                   help="statement_timeout (s) of each EXPLAIN ANALYZE")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--vectors", type=int, default=0,
                   help="souvenirs given an embedding (hybrid recall on the reply path)")
    p.add_argument("--vector-dim", type=int, default=768, help="embedding dimension")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"embedded data dir (default: {DEFAULT_DATA_ROOT}/s<N>-seed<S>; "
                        "reused when it already holds the souvenirs)")
    p.add_argument("--database-url", default=None,
                   help="use this PostgreSQL database instead (migrated, loaded if empty)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
