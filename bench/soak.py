"""The soak: the whole assistant under fire, the way its users will meet it (issue 14 §1).

A benchmark script, not a test (its short form is: tests/bench/test_soak_quick.py).
It starts Axi for real (`axi run` as a subprocess, this worktree's code) with the loopback
Telegram Bot API, a real Dovecot and an SMTP capture server, the HTTP API and the site's
endpoints, Axis over MCP, the simulated CPU Ollama and the loopback Anthropic server, on a
PostgreSQL 16 of its own (bench/soak_world.py; the servers and `axi run` in
bench/soak_servers.py, the people's clients in bench/soak_clients.py). Thirty people
(bench/soak_people.py: Ludo, the team, clients, strangers, site visitors, Axis) send 1,000
mixed messages over every channel while a DPE veille runs every minute (and once by hand
beside it) and a backup is taken; meanwhile it SIGKILLs `axi run` at random moments
(restarting it each time), stops the local model for a while (fallback allowed for some
people, never-cloud for others), restarts PostgreSQL once and cuts SMTP for a minute. Then
it waits for everything to settle and checks (bench/soak_checks.py): inbound received,
answered exactly once, lost, duplicated, per-conversation order, never-cloud or local-only
content that reached the cloud (the fallback's request bodies, what Axis read), digest
items reported twice or never, the person's wait p50/p95 on the simulated CPU, the local
share. The exit status is 1 when any "must be 0" figure is not 0 (or the backup failed), 0
otherwise.

The person's wait on the simulated CPU: from sending to the first visible output (a
Telegram draft or message, a mail, an HTTP response), where the time the simulated CPU
spent computing within that wait counts at its simulated length (wall / --time-scale)
and everything else (Axi's own work, Telegram's pacing, retry delays) at its wall length.

    .venv/bin/python bench/soak.py                 # 1,000 messages, 30 people, 5 kills
    .venv/bin/python bench/soak.py --quick         # 100 messages, 1 kill (the test suite's)
    .venv/bin/python bench/soak.py --seed 7 --keep # replay a run, keep its logs and data

A failing run prints its seed: `--seed N` replays the same plan (who writes what, when the
kills and outages come; the exact interleaving with Axi's own timing still varies).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# bench/ holds an email.py: with bench/ on the path (python puts the script's own directory
# first) `import email` would find it instead of the standard library's
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Awaitable, Callable, Sequence  # noqa: E402
from dataclasses import asdict  # noqa: E402
from datetime import datetime  # noqa: E402

import httpx  # noqa: E402

from bench.soak_checks import (  # noqa: E402
    Figures,
    Sent,
    as_json,
    details,
    evaluate,
    merged,
    overlap,
    render,
)
from bench.soak_people import Planned, plan, roster  # noqa: E402
from bench.soak_world import DIGEST_RECIPIENTS, SoakConfig, SoakWorld, spread  # noqa: E402

log = logging.getLogger("soak")
KILL_GAP_S = 8.0
RESULTS_DIR = BENCH_DIR / "results"


async def _at(start: float, offset: float) -> None:
    delay = start + offset - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def send_all(world: SoakWorld, planned: Sequence[Planned], start: float,
                   deadline: float) -> None:
    """Telegram and mail arrive when they are sent; a client of the API, the site or MCP
    waits for its answer before its person's next message."""
    direct = [p for p in planned if p.channel in ("telegram", "email")]
    queues: dict[str, list[Planned]] = defaultdict(list)
    for p in planned:
        if p.channel not in ("telegram", "email"):
            queues[p.person.key].append(p)

    async def post() -> None:
        for p in direct:
            await _at(start, p.offset)
            if p.channel == "telegram":
                await world.send_telegram(p)
            else:
                await world.send_email(p)

    async with httpx.AsyncClient() as http:
        async def client(items: list[Planned]) -> None:
            page: list[dict[str, str]] = []
            for p in items:
                await _at(start, p.offset)
                if p.channel == "web":
                    await world.send_web(p, http, deadline)
                elif p.channel == "site":
                    await world.send_site(p, http, deadline, page)
                elif p.channel == "contact":
                    await world.send_contact(p, http, deadline)
                else:
                    await world.send_axis(p, deadline)

        await asyncio.gather(post(), *(client(q) for q in queues.values()))


async def disrupt(world: SoakWorld, cfg: SoakConfig, rng: random.Random, start: float,
                  quick: bool) -> None:
    """Everything that goes wrong, at its moment of the sending phase."""
    d = cfg.duration_s
    events: list[tuple[float, Callable[[], Awaitable[None]]]] = [
        (d * (0.05 if quick else 0.2), lambda: world.ollama_outage(cfg.ollama_outage_s)),
        (d * 0.35, lambda: world.smtp_cut(cfg.smtp_cut_s)),
        (d * 0.4, world.run_veille_by_hand),
        (d * 0.55, lambda: world.pg_restart(cfg.pg_down_s)),
        (d * 0.72, world.take_backup),
    ]
    batches = max(5, int(d // 40))
    for i in range(1, batches + 1):
        events.append((d * i / (batches + 1), lambda: world.new_dpes(3)))
    kills = spread(rng, cfg.kills, d * 0.1, d * 0.92, KILL_GAP_S)
    world.timeline.note("kills planned at " + ", ".join(f"{k:.1f} s" for k in kills))

    async def at(offset: float, work: Callable[[], Awaitable[None]]) -> None:
        await _at(start, offset)
        await work()

    async def killing() -> None:
        for offset in kills:
            await _at(start, offset)
            await world.kill_and_restart(rng)

    await asyncio.gather(killing(), *(at(o, w) for o, w in events))


async def soak(cfg: SoakConfig, *, quick: bool) -> tuple[Figures, SoakWorld]:
    rng = random.Random(cfg.seed)
    people = roster(cfg.people)
    planned = plan(people, cfg.messages, cfg.duration_s, rng)
    async with SoakWorld(cfg, people) as world:
        world.planned = planned
        stop = asyncio.Event()
        helpers = [asyncio.create_task(world.axi.supervise(stop)),
                   asyncio.create_task(world.axis_mailbox(stop))]
        start = time.monotonic()
        deadline = start + cfg.duration_s + cfg.drain_s
        world.timeline.note(f"sending {len(planned)} messages over {cfg.duration_s:.0f} s")
        try:
            await asyncio.gather(send_all(world, planned, start, deadline),
                                 disrupt(world, cfg, rng, start, quick))
            world.timeline.note("every message sent, every disruption over: settling")
            why = "the sending phase used up the drain's time"
            while time.monotonic() < deadline:
                done, why = await world.settled()
                if done:
                    break
                await asyncio.sleep(1.0)
            else:
                world.timeline.note(f"not settled after the drain: {why}")
            await asyncio.sleep(3.0)  # a late duplicate would show now
            world.timeline.note("settled" if not why else "collecting what there is")
            seen, (_, digests) = world.seen(), world.mail_seen()
            stored = await world.stored()
            world.final_seen, world.final_stored = seen, stored
            stored_items, _ = await world.veille_items()
            items = sorted(set(stored_items) | set(world.dpe_served()))
            usage = await world.usage()
        finally:
            stop.set()
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        ran = (start, time.monotonic())
        # a client stuck behind an unanswered message never sent the next ones: they count
        # (never stored, never answered: lost), they do not vanish from the figures
        unsent = [p for p in planned if p.token not in world.sent]
        for p in unsent:
            world.sent[p.token] = Sent(p.token, p.person.key, p.channel, p.conversation,
                                       p.expect, ran[1], p.seq, p.secret, attempts=0)
        figures = evaluate(
            list(world.sent.values()), seen, stored,
            secrets=[p.secret for p in planned if p.secret], cloud_texts=world.cloud(),
            digest_items=items, digests=digests, digest_recipients=DIGEST_RECIPIENTS,
            usage=usage, time_scale=cfg.time_scale, busy=world.busy_intervals(),
            cpu_until=world.cpu.first_tokens(), local_texts=world.local_model_texts())
        figures.extra.update({
            "planned but never sent (its client stuck: counted as lost)": str(len(unsent)),
            "axi run: SIGKILLs / starts / exits on its own":
                f"{world.axi.kills} / {world.axi.runs} / {len(world.axi.own_exits)}",
            "tracebacks in axi run's logs": str(world.axi.tracebacks()),
            "backup (axi backup run)":
                (f"ok, snapshot {world.backup.get('snapshot')}, "
                 f"{world.backup.get('seconds', 0):.1f} s" if world.backup.get("ok")
                 else f"FAILED {world.backup}"),
            "axi veille run dpe beside the scheduler": str(world.veille_run),
            "fallback requests (Anthropic)": f"{len(world.anthropic.bodies):,}",
            "simulated CPU: requests, cached prompt share, busy share of the run":
                f"{len(world.cpu.records):,}, {world.cpu.stats().cached_share:.0%}, "
                f"{busy_share(world, ran):.0%}",
        })
    return figures, world


def busy_share(world: SoakWorld, ran: tuple[float, float]) -> float:
    """The share of the run the simulated CPU spent computing."""
    start, end = ran
    busy = overlap(merged(world.busy_intervals()), start, end)
    return busy / (end - start) if end > start else 0.0


def write_failures(figures: Figures, world: SoakWorld, path: Path) -> None:
    """What the soak knows of each failed message: as sent, as seen, as stored."""
    wanted = set(figures.lost) | set(figures.duplicated) | set(figures.unexpected_answers) \
        | {token for _, token in figures.order_violations}
    record = {token: {
        "sent": [asdict(m) for m in world.sent.values()
                 if m.token == token or m.conversation == token],
        "seen": [asdict(s) for s in world.final_seen if s.token == token
                 or s.conversation == token],
        "stored": [asdict(r) for r in world.final_stored if r.token == token],
    } for token in sorted(wanted)}
    record["_timeline"] = [{"at": round(at, 2), "what": what}  # type: ignore[assignment]
                           for at, what in world.timeline.events]
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=str))


def config(args: argparse.Namespace) -> SoakConfig:
    quick = args.quick
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="axi-soak-"))
    return SoakConfig(
        messages=args.messages or (100 if quick else 1000),
        people=args.people, kills=args.kills if args.kills is not None else (1 if quick else 5),
        seed=args.seed if args.seed is not None else random.randrange(2**31),
        time_scale=args.time_scale,
        duration_s=args.duration or (45.0 if quick else 480.0),
        ollama_outage_s=10.0 if quick else 60.0, smtp_cut_s=15.0 if quick else 60.0,
        pg_down_s=2.0 if quick else 5.0, drain_s=args.drain or (150.0 if quick else 420.0),
        work_dir=work, keep=args.keep)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="100 messages, 1 kill, short outages (the test suite's form)")
    p.add_argument("--messages", type=int, default=None, help="default 1,000 (quick: 100)")
    p.add_argument("--people", type=int, default=30)
    p.add_argument("--kills", type=int, default=None, help="SIGKILLs of axi run (5; quick: 1)")
    p.add_argument("--seed", type=int, default=None, help="default: a new one, printed")
    p.add_argument("--time-scale", type=float, default=0.01,
                   help="wall seconds per simulated CPU second (default 0.01)")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds over which the messages are sent (480; quick: 45)")
    p.add_argument("--drain", type=float, default=None,
                   help="at most this long afterwards for everything to settle")
    p.add_argument("--work-dir", type=Path, default=None, help="default: a new temp dir")
    p.add_argument("--keep", action="store_true", help="keep the database and the logs")
    p.add_argument("--results", type=Path, default=RESULTS_DIR,
                   help=f"where the JSON of the figures goes (default {RESULTS_DIR})")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(message)s")
    logging.getLogger("soak").setLevel(logging.INFO)
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd's every session
    logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # fakes' polls cut at exit
    logging.getLogger("uvicorn").setLevel(logging.CRITICAL)
    for noisy in ("httpx", "httpx2", "mcp", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg = config(args)
    print(f"soak: {cfg.messages} messages, {cfg.people} people, {cfg.kills} kill(s), "
          f"seed {cfg.seed}, time scale {cfg.time_scale}, work dir {cfg.work_dir}", flush=True)
    began = time.monotonic()
    figures, world = asyncio.run(soak(cfg, quick=args.quick))
    took = time.monotonic() - began
    print()
    for line in render(figures):
        print(line)
    print(f"duration of the soak: {took:,.0f} s (seed {cfg.seed})")
    failed = figures.failed or not world.backup.get("ok")
    args.results.mkdir(parents=True, exist_ok=True)
    result = args.results / f"soak-{datetime.now():%Y%m%d-%H%M%S}.json"
    result.write_text(json.dumps({
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        "seconds": round(took, 1), "failed": failed, "backup": world.backup,
        "veille_run": world.veille_run, "figures": as_json(figures),
        "timeline": [[round(at, 2), what] for at, what in world.timeline.events]},
        indent=2, ensure_ascii=False, default=str))
    print(f"results: {result}")
    for line in details(figures):
        print("  " + line)
    if failed:
        report = cfg.work_dir / "failures.json"
        write_failures(figures, world, report)
        print(f"\nSOAK FAILED (seed {cfg.seed}); what happened to each failed message: "
              f"{report}; axi run's logs: {cfg.work_dir / 'logs'}")
    elif args.work_dir is None and not args.keep:
        shutil.rmtree(cfg.work_dir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
