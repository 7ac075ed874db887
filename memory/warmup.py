"""Loading recall's working set into PostgreSQL's buffer cache after a (re)start.

Why: recall reads the heap page of every candidate souvenir and the GIN posting lists of
the query's words. On a freshly started server those pages come from disk (or from an OS
page cache that this kind of small server reclaims quickly): measured on one million
souvenirs, a conversational recall took p50 23 ms cold against 10 ms warm. A server that
has run for days holds them already; this makes the first replies after a restart as
fast, using plain SQL (the embedded PostgreSQL ships without pg_prewarm).

What is read, newest first, within `budget_share` of shared_buffers: the souvenirs heap
(through the primary key, so pages go to shared buffers rather than a sequential scan's
small ring), the timestamp index, and the GIN entries of the most frequent lexemes (the
bulk of the full-text index).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

WARM_LEXEMES = 300
"""The most frequent lexemes (from the lexicon) whose GIN posting lists are read."""


@dataclass(frozen=True)
class Warmup:
    souvenirs: int
    heap_mb: float
    seconds: float


class WarmupMixin:
    db: Any

    async def warm_cache(self, *, budget_share: float = 0.75) -> Warmup:
        """Read the newest souvenirs' heap pages (as many as fit in budget_share of
        shared_buffers), the timestamp index and the frequent words' GIN lists."""
        t0 = time.perf_counter()
        async with self.db.engine.connect() as conn:
            await conn.execute(text(
                "SELECT set_config('enable_seqscan', 'off', true), "
                "set_config('enable_bitmapscan', 'off', true)"))
            row = (await conn.execute(text(
                "SELECT current_setting('block_size')::bigint * "
                "(SELECT setting::bigint FROM pg_settings WHERE name = 'shared_buffers') AS buffers, "
                "pg_relation_size('souvenirs') AS heap, "
                "(SELECT count(*) FROM souvenirs) AS n, "
                "(SELECT coalesce(max(id), 0) FROM souvenirs) AS top"))).one()
            n, heap = int(row.n), int(row.heap)
            share = 1.0 if heap == 0 else min(1.0, budget_share * int(row.buffers) / heap)
            keep = int(n * share)
            read = int(await conn.scalar(text(
                "SELECT count(importance) FROM (SELECT importance FROM souvenirs "
                "ORDER BY id DESC LIMIT :k) AS newest"), {"k": keep}) or 0)
            await conn.scalar(text(
                "SELECT count(*) FROM (SELECT 1 FROM souvenirs ORDER BY timestamp DESC "
                "LIMIT :k) AS t"), {"k": keep})
            await conn.execute(text(
                "SELECT set_config('enable_bitmapscan', 'on', true)"))
            lexemes = [r[0] for r in (await conn.execute(text(
                "SELECT lexeme FROM lexique ORDER BY nb DESC LIMIT :k"),
                {"k": WARM_LEXEMES})).all()]
            if lexemes:
                query = " | ".join("'" + lex.replace("'", "''") + "'" for lex in lexemes)
                await conn.scalar(text(
                    "SELECT count(*) FROM (SELECT 1 FROM souvenirs s WHERE s.recherche @@ "
                    "CAST(:q AS tsquery) LIMIT 1) AS g"), {"q": query})
            await conn.rollback()
        return Warmup(souvenirs=read, heap_mb=heap * share / 1e6,
                      seconds=time.perf_counter() - t0)
