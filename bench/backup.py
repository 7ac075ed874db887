"""The backups' benchmark (issue 13): backup, verify and restore of a database with a
million souvenirs, next to a bare pg_dump / pg_restore of the same database in the same
run (the floor).

A benchmark script, not a test. In one run, on one database:

1. The database: --database-url names a PostgreSQL SERVER and the benchmark uses its own
   database there (--database-name, default axi_bench_backup: created if missing by
   bench/harness.py, migrated, filled); without a URL, the embedded PostgreSQL 16 in --data-dir. It holds
   --rows souvenirs of generated French text (bench/memory_scale.FrenchText, through
   MemoryStore.remember_many) and is refilled only when its count differs.
2. The floor, with the same pg_dump/pg_restore 16 (pgserver's): `pg_dump -Fc` to a file
   (default compression) and `pg_restore --no-owner -d` into a new empty database.
3. Axi (jobs/backup.py) with a new local restic repository in a temporary directory:
   `Backups.backup()` (dump inside an exported snapshot + manifest, restic with
   compression and deduplication, retention), its repository size; a second backup after
   1 % more souvenirs (what a daily backup costs once the repository exists, and how much
   the repository grows); `Backups.verify()` (restic check --read-data, restore into a
   scratch database, comparison); `Backups.restore()` of the latest snapshot into a new
   empty database (fetch, restore in one transaction, comparison).

Printed: seconds, sizes, and the ratios to the floor measured in this run. JSON in
bench/results/backup-<timestamp>.json.

    .venv/bin/python bench/backup.py                          # 1,000,000 souvenirs
    .venv/bin/python bench/backup.py --rows 50000
    .venv/bin/python bench/backup.py --database-url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
# bench/ holds email.py: with bench/ on the path `import email` would find it
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH_DIR]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402
from typing import Any  # noqa: E402

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.harness import ensure_database  # noqa: E402
from bench.memory_scale import FrenchText, create_relations, load_vocabulary  # noqa: E402
from bot.config import Settings  # noqa: E402
from jobs import pg_tools  # noqa: E402
from jobs.backup import Backups  # noqa: E402
from jobs.backup_rules import Target, libpq_target  # noqa: E402
from memory import migrate  # noqa: E402
from memory.database import Database, open_database  # noqa: E402
from memory.store import MemoryStore  # noqa: E402

console = Console(highlight=False)
DEFAULT_DATA_DIR = Path("/root/axi-bench-backup")
RESULTS_DIR = BENCH_DIR / "results"
BATCH = 5000


def bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.fields[amount]}"), TimeElapsedColumn(), console=console,
                    transient=True)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


# ------------------------------------------------------------------------------ database
async def fill(db: Database, store: MemoryStore, rows: int, seed: int,
               start_at: int = 0) -> float:
    """`rows` generated souvenirs through remember_many (batches of 5,000)."""
    gen = FrenchText(load_vocabulary(seed), random.Random(seed + start_at))
    relation_ids = [r[0] for r in (await _fetch(db, "SELECT id FROM relations"))] or \
        await create_relations(db, gen, 300)
    first = datetime.now(UTC) - timedelta(days=5 * 365)
    step = timedelta(days=5 * 365) / max(rows + start_at, 1)
    began = time.perf_counter()
    with bar() as progress:
        task = progress.add_task("souvenirs", total=rows, amount="")
        done = 0
        while done < rows:
            size = min(BATCH, rows - done)
            items = [gen.souvenir(first + step * (start_at + done + i), relation_ids)
                     for i in range(size)]
            await store.remember_many(items)
            done += size
            progress.update(task, completed=done, amount=f"{done:,}/{rows:,}")
    return time.perf_counter() - began


async def _fetch(db: Database, sql: str) -> list[Any]:
    async with db.engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


async def new_database(live: Target, name: str) -> Target:
    conn = await pg_tools.connect(live)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return live.with_database(name)


async def drop_database(live: Target, name: str) -> None:
    conn = await pg_tools.connect(live)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def tool(name: str, args: Sequence[str], target: Target) -> float:
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(pg_tools.bin_dir() / name), *args, env=pg_tools.tool_env(target),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed: {stderr.decode()[-500:]}")
    return time.perf_counter() - began


# ------------------------------------------------------------------------------ phases
async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = (await ensure_database(args.database_url, args.database_name)
           if args.database_url else None)
    where = (f"database {args.database_name} on {libpq_target(args.database_url).server}"
             if url else f"embedded PostgreSQL 16 in {args.data_dir}")
    console.print(f"[bold]Backups benchmark[/] — {args.rows:,} souvenirs, {where}")
    work = Path(tempfile.mkdtemp(prefix="axi-bench-backup-", dir=args.work_dir))
    result: dict[str, Any] = {"rows": args.rows, "where": where}
    async with open_database(url, args.data_dir) as db:
        await migrate.upgrade(db.engine)
        store = MemoryStore(db)
        live = libpq_target(db.engine.url.render_as_string(hide_password=False)
                            .replace("+asyncpg", ""))
        count = await store.count_souvenirs()
        if count != args.rows:
            if count:
                await _fetch_exec(db, "TRUNCATE souvenirs, faits, relations RESTART IDENTITY "
                                      "CASCADE")
            seconds = await fill(db, store, args.rows, args.seed)
            result["fill_seconds"] = seconds
            console.print(f"filled {args.rows:,} souvenirs in {seconds:,.0f} s")
        await _fetch_exec(db, "VACUUM ANALYZE", autocommit=True)
        await _fetch_exec(db, "CHECKPOINT", autocommit=True)
        result["database_bytes"] = int((await _fetch(
            db, "SELECT pg_database_size(current_database())"))[0][0])
        result["server_version"] = (await _fetch(db, "SHOW server_version"))[0][0]
        floor_db, axi_db = "axi_bench_plancher", "axi_bench_restauree"
        try:
            # the floor
            plain = work / "plancher.dump"
            with console.status("floor: pg_dump -Fc"):
                result["floor_dump_seconds"] = await tool("pg_dump", ["-Fc", "-f", str(plain)],
                                                          live)
            result["floor_dump_bytes"] = plain.stat().st_size
            target = await new_database(live, floor_db)
            with console.status("floor: pg_restore"):
                result["floor_restore_seconds"] = await tool(
                    "pg_restore", ["--no-owner", "-d", floor_db, str(plain)], target)
            await drop_database(live, floor_db)
            plain.unlink()

            # Axi
            env = {**os.environ, "RESTIC_PASSWORD": secrets.token_hex(16),
                   "RESTIC_CACHE_DIR": str(work / "cache")}
            repo = work / "depot"
            settings = Settings(_env_file=None,  # type: ignore[call-arg]
                                AXI_BACKUP_REPOSITORY=str(repo), AXI_DATA_DIR=work / "data")
            backups = Backups(store, settings, env=env)
            result["backup"] = await timed(backups.backup, "backup")
            result["repository_bytes"] = du(repo)
            added = max(1, args.rows // 100)
            await fill(db, store, added, args.seed + 1, start_at=args.rows)
            result["backup_again"] = await timed(backups.backup, f"backup after +{added:,}")
            result["repository_bytes_again"] = du(repo)
            result["verify"] = await timed(backups.verify, "verify")
            target = await new_database(live, axi_db)
            target_url = (db.engine.url.set(database=axi_db)
                          .render_as_string(hide_password=False).replace("+asyncpg", ""))
            plan = await backups.plan_restore("latest", target_url)
            with bar() as progress:
                began = time.perf_counter()
                await backups.restore(plan, progress=_progress(progress))
                result["restore_seconds"] = time.perf_counter() - began
            await _fetch_exec(db, f"DELETE FROM souvenirs WHERE id > {args.rows}")
        finally:
            await drop_database(live, floor_db)
            await drop_database(live, axi_db)
            shutil.rmtree(work, ignore_errors=True)
    return result


async def _fetch_exec(db: Database, sql: str, *, autocommit: bool = False) -> None:
    async with db.engine.connect() as conn:
        if autocommit:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text(sql))
        await conn.commit()


def _progress(progress: Progress) -> Any:
    tasks: dict[str, Any] = {}

    def update(done: int, total: int | None, what: str) -> None:
        key = what.split(":")[0]
        if key not in tasks:
            tasks[key] = progress.add_task(what, total=total, amount="")
        amount = f"{done:,}/{total:,}" if "packs" in what or "snapshots" in what else mb(done)
        progress.update(tasks[key], completed=done, total=max(total, done) if total else None,
                        description=what, amount=amount)

    return update


async def timed(operation: Any, label: str) -> dict[str, Any]:
    with bar() as progress:
        began = time.perf_counter()
        report = await operation(progress=_progress(progress))
        seconds = time.perf_counter() - began
    if not report.ok:
        raise RuntimeError(f"{label} failed: {[o.error.en for o in report.outcomes if o.error]}")
    outcome = report.outcomes[0]
    details = outcome.operation.details if outcome.operation else {}
    console.print(f"{label}: {seconds:,.1f} s")
    return {"seconds": seconds, "dump_bytes": report.manifest.dump_bytes if report.manifest
            else None, "added_bytes": details.get("ajoute_octets"), "snapshot": outcome.snapshot}


def show(result: dict[str, Any]) -> None:
    floor_dump, floor_restore = result["floor_dump_seconds"], result["floor_restore_seconds"]
    table = Table(title=f"Backups — {result['rows']:,} souvenirs "
                        f"(database {mb(result['database_bytes'])}, PostgreSQL "
                        f"{result['server_version']})")
    for column in ("step", "seconds", "× floor", "size"):
        table.add_column(column, justify="right" if column != "step" else "left")
    table.add_row("floor: pg_dump -Fc", f"{floor_dump:,.1f}", "1.00",
                  mb(result["floor_dump_bytes"]) + " (file)")
    table.add_row("floor: pg_restore", f"{floor_restore:,.1f}", "1.00", "")
    b, again = result["backup"], result["backup_again"]
    table.add_row("axi backup run (first)", f"{b['seconds']:,.1f}",
                  f"{b['seconds'] / floor_dump:.2f}",
                  f"repository {mb(result['repository_bytes'])} "
                  f"(dump {mb(b['dump_bytes'])})")
    table.add_row("axi backup run (+1 %)", f"{again['seconds']:,.1f}",
                  f"{again['seconds'] / floor_dump:.2f}",
                  f"repository +{mb(result['repository_bytes_again'] - result['repository_bytes'])}")
    table.add_row("axi backup verify", f"{result['verify']['seconds']:,.1f}",
                  f"{result['verify']['seconds'] / floor_restore:.2f} (of pg_restore)", "")
    table.add_row("axi backup restore", f"{result['restore_seconds']:,.1f}",
                  f"{result['restore_seconds'] / floor_restore:.2f}", "")
    console.print(table)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=int, default=1_000_000, help="souvenirs (default 1,000,000)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--database-url", default=os.environ.get("AXI_BENCH_DATABASE_URL"),
                   help="a PostgreSQL server (default: the embedded one in --data-dir)")
    p.add_argument("--database-name", default="axi_bench_backup")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                   help=f"embedded PostgreSQL data dir (default {DEFAULT_DATA_DIR})")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where the repository and dumps go (default: the temp dir)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    show(result)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"backup-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    console.print(f"results: {out}")


if __name__ == "__main__":
    main()
