"""What-if for recall at scale: time alternative recall SQL on a database memory_scale.py built.

Diagnostics, not a test and not Axi's code: it reopens a data dir that
`bench/memory_scale.py` kept (or a --database-url), rebuilds the same query set (same
--seed) and times, per query and with recall's AND-then-OR rule:

- `recall()`      : MemoryStore.recall as shipped;
- `bare`          : memory.recall.bare_fts_sql (the floor);
- `float8`        : recall's SQL with the score computed in float8 instead of numeric;
- `float8_capN`   : float8, ranking only the N newest matches (candidate cap).

    .venv/bin/python bench/memory_recall_whatif.py --data-dir /root/axi-bench/run-1m
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_scale import (
    RECALL_LIMIT,
    FrenchText,
    bare_search,
    build_queries,
    console,
    load_vocabulary,
    summary,
    what_if_variants,
)

from memory.database import Database, open_database
from memory.store import MemoryStore
from memory.text import tsquery_text


async def run_sql(db: Database, sql: str, params: dict[str, Any], query: str) -> int:
    """One search with recall's AND-then-OR rule; returns the number of rows."""
    strict = tsquery_text(query, mode="and")
    if strict is None:
        return 0
    async with db.sessions() as session:
        rows = (await session.execute(text(sql), {**params, "tsq": strict,
                                                  "k": RECALL_LIMIT})).all()
        loose = tsquery_text(query, mode="or")
        if len(rows) < RECALL_LIMIT and loose != strict:
            rows = (await session.execute(text(sql), {**params, "tsq": loose,
                                                      "k": RECALL_LIMIT})).all()
    return len(rows)


async def main_async(args: argparse.Namespace) -> None:
    vocab = load_vocabulary(args.seed)
    gen = FrenchText(vocab, random.Random(args.seed))
    queries = build_queries(gen, args.queries, random.Random(args.seed + 1))
    variants = {}
    for cap in args.caps:
        v = what_if_variants(cap)
        variants.setdefault("float8", v["float8_score"][:2])
        variants[f"float8_cap{cap}"] = v[f"float8_capped_{cap}"][:2]
    bare = what_if_variants(args.caps[0])["bare_sql"][0]
    async with open_database(args.database_url, args.data_dir) as db:
        store = MemoryStore(db)
        names = ["recall()", "bare", *variants]
        timings: dict[str, list[float]] = {n: [] for n in names}
        for round_ in ("warm-up", "measure"):
            for q in queries:
                for name in names:
                    t0 = time.perf_counter()
                    if name == "recall()":
                        await store.recall(q.text, limit=RECALL_LIMIT)
                    elif name == "bare":
                        await bare_search(db, bare, q.text, RECALL_LIMIT)
                    else:
                        sql, params = variants[name]
                        await run_sql(db, sql, params, q.text)
                    if round_ == "measure":
                        timings[name].append((time.perf_counter() - t0) * 1000)
    table = Table(title=f"{len(queries)} queries, after one warm-up round (ms)")
    for col in ["variant", "p50", "p95", "p99", "mean", "max"]:
        table.add_column(col, justify="right")
    for name in names:
        s = summary(timings[name])
        table.add_row(name, *(f"{s[k]:.1f}" for k in ["p50", "p95", "p99", "mean", "max"]))
    console.print(table)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="time alternative recall SQL (diagnostics)")
    p.add_argument("--data-dir", type=Path, required=False, default=None)
    p.add_argument("--database-url", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--caps", type=int, nargs="+", default=[1000, 5000])
    args = p.parse_args(argv)
    if args.data_dir is None and args.database_url is None:
        p.error("give --data-dir (kept by memory_scale.py) or --database-url")
    return args


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
