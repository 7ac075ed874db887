"""The chat API under load: POST /api/chat next to a bare INSERT endpoint; SSE first chunk.

A benchmark script, not a test. Everything goes through a real uvicorn on a loopback
port, driven by C concurrent clients (--clients, default 50; real httpx, in a separate
process so the load does not share the server's event loop), in one run:

1. the floor: a bare starlette endpoint on uvicorn that reads the JSON body and does one
   INSERT … RETURNING into a table of its own, on the same PostgreSQL with the same pool
   size as Axi — what any HTTP endpoint that stores a message costs here;
2. Axi: the whole assistant (`bot.app.Axi` with `channels.web.WebChannel`) with an instant
   LLM (tests/fakes/ollama_server.FakeOllama answering at once, streaming word by word):
   `POST /api/chat` {"message": …} with a chat token per client (one person each), the
   JSON form — stored in the inbox, answered by the worker, the reply committed, the
   request woken and answered;
3. SSE: the same with `Accept: text/event-stream`: the time from sending the request to the
   first `chunk` event (the model's first words through LiveStreams), and to `reply`.

Printed: requests/s, p50/p95 latency of each, the ratios Axi/floor, and the SSE times.
The database: --database-url (default $AXI_DATABASE_URL) names a PostgreSQL SERVER; the
benchmark uses its own database there (--database-name, default axi_bench_web: created if
missing, migrated, emptied: never Axi's own data); without a URL, the embedded
PostgreSQL in --data-dir.

    .venv/bin/python bench/web.py --quick --database-url postgresql://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/web.py --requests 2000 --data-dir /tmp/bench-web
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
from sqlalchemy import text  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from bench.harness import empty_tables, ensure_database  # noqa: E402
from bot.app import Axi  # noqa: E402
from bot.channel import ChannelSet  # noqa: E402
from bot.config import DEFAULT_LOCAL_MODEL, Settings  # noqa: E402
from bot.pipeline import PARKED_LANES_PER_LANE  # noqa: E402
from channels.web import WebChannel  # noqa: E402
from channels.web_guard import WebConfig  # noqa: E402
from memory import migrate  # noqa: E402
from memory.database import Database, open_database  # noqa: E402
from tests.fakes.ollama_server import FakeOllama  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATA_DIR = Path("/root/axi-bench-web")
REPLY = "C'est noté, je m'en occupe tout de suite."  # streamed word by word: 8 chunks
QUESTIONS = ["Bonjour, la longère de Vergt est-elle toujours disponible ?",
             "Pouvez-vous me rappeler l'heure de la visite de samedi ?",
             "Quel est le DPE de la grange du Bugue ?",
             "Où en est le compromis de Saint-Cyprien ?",
             "Nous faisons une offre au prix, pouvez-vous la transmettre ?"]
FLOOR_TABLE = "banc_web_plancher"


# ----------------------------------------------------------------------------- load (child)
def load(url: str, tokens: Sequence[str], total: int, clients: int, stream: bool
         ) -> dict[str, Any]:
    """In the load process: `clients` concurrent clients send `total` requests, each client
    its next request as soon as its last one is answered."""
    return asyncio.run(_load(url, tokens, total, clients, stream))


async def _load(url: str, tokens: Sequence[str], total: int, clients: int, stream: bool
                ) -> dict[str, Any]:
    numbers = itertools.count()
    latencies: list[float] = []
    first_chunks: list[float] = []
    statuses: Counter[str] = Counter()

    async def client(i: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"} if tokens else {}
        if stream:
            headers["Accept"] = "text/event-stream"
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=180) as http:
            while (n := next(numbers)) < total:
                body = {"message": f"{QUESTIONS[n % len(QUESTIONS)]} (n° {n})"}
                start = time.perf_counter()
                try:
                    if stream:
                        status = await _one_stream(http, body, start, first_chunks)
                    else:
                        response = await http.post("/api/chat", json=body)
                        status = str(response.status_code)
                        if status == "200" and tokens and not response.json().get("reply"):
                            status = "200 sans réponse"
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                latencies.append(time.perf_counter() - start)
                statuses[status] += 1

    began = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"wall_s": time.perf_counter() - began, "latencies": latencies,
            "first_chunks": first_chunks, "statuses": dict(statuses)}


async def _one_stream(http: httpx.AsyncClient, body: dict[str, Any], start: float,
                      first_chunks: list[float]) -> str:
    seen_chunk = False
    last = "aucun"
    async with http.stream("POST", "/api/chat", json=body) as response:
        if response.status_code != 200:
            return str(response.status_code)
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                last = line.split(":", 1)[1].strip()
                if last == "chunk" and not seen_chunk:
                    seen_chunk = True
                    first_chunks.append(time.perf_counter() - start)
    return f"200 {last}" + ("" if seen_chunk else " sans morceau")


async def run_load(pool: ProcessPoolExecutor, url: str, tokens: Sequence[str], total: int,
                   clients: int, *, stream: bool = False) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, load, url, list(tokens), total, clients, stream)


# ----------------------------------------------------------------------------- servers
class Uvicorn:
    """A starlette app on uvicorn in this event loop, on a free loopback port."""

    def __init__(self, app: Starlette):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning", lifespan="off",
                                                    access_log=False))
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> str:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        if self.task is not None:
            with contextlib.suppress(Exception):
                await self.task


def floor_app(db: Database) -> Starlette:
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        async with db.sessions.begin() as session:
            new_id = (await session.execute(
                text(f"INSERT INTO {FLOOR_TABLE} (texte) VALUES (:t) RETURNING id"),
                {"t": str(body.get("message", ""))})).scalar_one()
        return JSONResponse({"id": new_id})

    return Starlette(routes=[Route("/api/chat", chat, methods=["POST"])])


def pool_size(workers: int) -> int:
    return (5 + PARKED_LANES_PER_LANE) * workers + 2  # as bot.app.Axi opens its own


async def prepare_database(args: argparse.Namespace) -> str | None:
    """The benchmark's own database: created if missing, migrated and emptied."""
    url = None
    if args.database_url:
        url = await ensure_database(args.database_url, args.database_name)
    async with open_database(url, args.data_dir) as db:
        await migrate.upgrade(db.engine)
        await empty_tables(db.engine)
    return url


def make_settings(ollama: FakeOllama, url: str | None, args: argparse.Namespace) -> Settings:
    values: dict[str, Any] = {
        "OLLAMA_HOST": ollama.url, "AXI_LOCAL_MODEL": DEFAULT_LOCAL_MODEL,
        "AXI_LOCAL_TIMEOUT": 30.0, "AXI_DATA_DIR": str(args.data_dir),
        "AXI_WORKER_CONCURRENCY": args.workers, "ANTHROPIC_API_KEY": None,
        "AXI_LOG_LEVEL": "WARNING", "AXI_EMBED_MODEL": "off", "AXI_QUIET_HOURS": "off",
    }
    if url:
        values["AXI_DATABASE_URL"] = url
    cfg = Settings(_env_file=None, **values)  # type: ignore[call-arg]
    assert cfg.anthropic_api_key is None, "the benchmark must not reach Anthropic"
    return cfg


# ----------------------------------------------------------------------------- phases
def count_outcome_reads(app: Axi) -> list[None]:
    """Every read of a message's outcome (what a waiting request does each time the
    pipeline wakes it) appends to the returned list: an instance wrapper, no Axi code
    changed."""
    reads: list[None] = []
    original = app.store.reply_outcome

    async def counted(message_id: int) -> Any:
        reads.append(None)
        return await original(message_id)

    app.store.reply_outcome = counted  # type: ignore[method-assign]
    return reads


async def run_floor(pool: ProcessPoolExecutor, url: str | None, args: argparse.Namespace
                    ) -> dict[str, Any]:
    async with open_database(url, args.data_dir, pool_size=pool_size(args.workers)) as db:
        async with db.engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE IF NOT EXISTS {FLOOR_TABLE} (id bigserial "
                                    "PRIMARY KEY, texte text NOT NULL, recu_le timestamptz "
                                    "NOT NULL DEFAULT now())"))
        try:
            async with Uvicorn(floor_app(db)) as base:
                await run_load(pool, base, [], args.clients, args.clients)  # warm-up
                return await run_load(pool, base, [], args.requests, args.clients)
        finally:
            async with db.engine.begin() as conn:
                await conn.execute(text(f"DROP TABLE IF EXISTS {FLOOR_TABLE}"))


async def run_axi(pool: ProcessPoolExecutor, url: str | None, args: argparse.Namespace
                  ) -> dict[str, Any]:
    ollama = FakeOllama()
    # an instant model reports instant timings (Axi estimates waits from them)
    ollama.durations_ns = {"total_duration": 2_000_000, "load_duration": 100_000,
                           "prompt_eval_duration": 1_000_000, "eval_duration": 900_000}
    ollama.reply = REPLY
    ollama.start()
    channel = WebChannel(WebConfig(host="127.0.0.1", port=0, rate_per_minute=1_000_000,
                                   reply_timeout_s=90.0))
    result: dict[str, Any] = {}
    try:
        async with Axi(make_settings(ollama, url, args),
                       ChannelSet({"web": channel}, frozenset({"web"}), None)) as app:
            tokens = []
            for i in range(args.clients):
                person = await app.store.add_person(
                    f"Client bench web {i:02d}", relation="équipe" if i % 4 == 0 else "client",
                    comment_interagir="tutoie" if i % 4 == 0 else None)
                tokens.append((await app.store.create_token(person.id)).secret)
            reads = count_outcome_reads(app)
            await app.start_channels()
            app.start_loops(extractor=False, maintenance=False, embeddings=False)
            base = f"http://127.0.0.1:{channel.port}"
            print("   warm-up…", flush=True)
            await run_load(pool, base, tokens, args.clients, args.clients)
            print(f"   JSON: {args.requests} requests…", flush=True)
            reads.clear()
            result["json"] = await run_load(pool, base, tokens, args.requests, args.clients)
            result["json"]["outcome_reads"] = len(reads)
            print(f"   SSE: {args.streams} streams…", flush=True)
            reads.clear()
            result["sse"] = await run_load(pool, base, tokens, args.streams, args.clients,
                                           stream=True)
            result["sse"]["outcome_reads"] = len(reads)
            result["llm_requests"] = len(ollama.chat_bodies)
            result["pending"] = await app.store.pending_counts()
    finally:
        ollama.stop()
    return result


# ----------------------------------------------------------------------------- report
def dist_ms(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))] * 1000

    return {"n": len(ordered), "p50": pct(0.50), "p95": pct(0.95), "max": ordered[-1] * 1000,
            "mean": statistics.fmean(ordered) * 1000}


def summarise(run: dict[str, Any]) -> dict[str, Any]:
    done = len(run["latencies"])
    return {"rps": done / run["wall_s"] if run["wall_s"] else float("nan"),
            "latency_ms": dist_ms(run["latencies"]), "statuses": run["statuses"],
            "first_chunk_ms": dist_ms(run["first_chunks"]),
            "outcome_reads_per_request": run["outcome_reads"] / done
            if "outcome_reads" in run and done else None}


def report(result: dict[str, Any]) -> list[str]:
    floor, axi, sse = result["floor"], result["axi_json"], result["axi_sse"]

    def line(label: str, s: dict[str, Any]) -> str:
        d = s["latency_ms"]
        return (f"{label:<44} {s['rps']:8.1f} req/s   p50 {d['p50']:7.1f} ms   "
                f"p95 {d['p95']:7.1f} ms   {s['statuses']}")

    print()
    print(line("floor: bare starlette, one INSERT", floor))
    print(line("Axi: POST /api/chat (JSON), instant LLM", axi))
    print(f"{'':<44} outcome reads per request: JSON {axi['outcome_reads_per_request']:.1f}, "
          f"SSE {sse['outcome_reads_per_request']:.1f} (each woken request reads it again)")
    ratios = {"throughput_floor_over_axi": floor["rps"] / axi["rps"],
              "p50_axi_over_floor": axi["latency_ms"]["p50"] / floor["latency_ms"]["p50"],
              "p95_axi_over_floor": axi["latency_ms"]["p95"] / floor["latency_ms"]["p95"]}
    print(f"{'ratio Axi/floor':<44} throughput ÷{ratios['throughput_floor_over_axi']:.1f}   "
          f"p50 ×{ratios['p50_axi_over_floor']:.1f}   p95 ×{ratios['p95_axi_over_floor']:.1f}")
    fc, whole = sse["first_chunk_ms"], sse["latency_ms"]
    print(f"{'Axi: SSE, time to first chunk':<44} p50 {fc['p50']:7.1f} ms   "
          f"p95 {fc['p95']:7.1f} ms   (n={fc['n']})")
    print(f"{'Axi: SSE, time to the reply event':<44} p50 {whole['p50']:7.1f} ms   "
          f"p95 {whole['p95']:7.1f} ms   {sse['rps']:.1f} streams/s   {sse['statuses']}")
    result["ratios"] = ratios
    failures = []
    if set(axi["statuses"]) != {"200"}:
        failures.append(f"JSON answers other than 200 with a reply: {axi['statuses']}")
    if set(sse["statuses"]) != {"200 reply"}:
        failures.append(f"streams that did not end with a reply: {sse['statuses']}")
    if set(floor["statuses"]) != {"200"}:
        failures.append(f"floor answers other than 200: {floor['statuses']}")
    return failures


async def run(args: argparse.Namespace) -> int:
    run_id = datetime.now().strftime("%Y%m%d-%H%M%S")
    url = await prepare_database(args)
    where = (f"database {args.database_name} on --database-url's server" if url
             else f"embedded PostgreSQL in {args.data_dir}")
    print(f"Axi web benchmark — {args.clients} clients, {args.requests} requests per phase, "
          f"{args.streams} streams, {args.workers} workers, {where}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(),
        "args": {**vars(args), "data_dir": str(args.data_dir),
                 "database_url": "(set)" if args.database_url else None},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_start": os.getloadavg()},
    }
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        print("1/2 floor…", flush=True)
        floor = await run_floor(pool, url, args)
        print("2/2 Axi…", flush=True)
        axi = await run_axi(pool, url, args)
    result.update(floor=summarise(floor), axi_json=summarise(axi["json"]),
                  axi_sse=summarise(axi["sse"]), llm_requests=axi["llm_requests"],
                  pending=axi["pending"])
    failures = report(result)
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["finished"] = datetime.now(UTC).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"web-{run_id}.json"
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print(f"results: {path}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    p.add_argument("--requests", type=int, default=1000,
                   help="requests per phase, floor and Axi (default 1000)")
    p.add_argument("--streams", type=int, default=300, help="SSE requests (default 300)")
    p.add_argument("--quick", action="store_true",
                   help="200 requests and 100 streams (overrides --requests, --streams)")
    p.add_argument("--workers", type=int, default=4, help="AXI_WORKER_CONCURRENCY (default 4)")
    p.add_argument("--database-url", default=os.environ.get("AXI_DATABASE_URL"),
                   help="a PostgreSQL server (default $AXI_DATABASE_URL); the benchmark uses "
                        "its own database there")
    p.add_argument("--database-name", default="axi_bench_web",
                   help="the benchmark's database on that server (default axi_bench_web)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"embedded PostgreSQL data dir without a URL (default {DEFAULT_DATA_DIR})")
    args = p.parse_args(argv)
    if args.quick:
        args.requests, args.streams = 200, 100
    if min(args.clients, args.requests, args.streams, args.workers) < 1:
        p.error("--clients, --requests, --streams and --workers must be ≥ 1")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    code = 130
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(run(parse_args(argv)))
    raise SystemExit(code)


if __name__ == "__main__":
    main()
