"""A geo-DVF file into ventes_dvf in chunks, three PostgreSQL connections working at once
(issue 12: the import within 3× a bare COPY of the file).

Why: one connection did everything in turn — COPY the file, build its sales (GROUP BY,
sha256 key), insert them — and PostgreSQL runs a statement on one core. Here the file is
cut into chunks at mutation boundaries (a mutation's rows are contiguous in geo-DVF);
connection A COPYs chunk n+1 while B builds the sales of chunk n into a table of their
own and W (the writer) inserts those of chunk n-1 — W also builds a chunk when it has
nothing to insert. The staging and sales tables are UNLOGGED regular tables (a temporary
table is seen by its own connection only), committed by A and B; ventes_dvf is written
by W alone, in ONE transaction: nothing is stored if anything fails, and a killed import
(its connections dropped) leaves nothing half-stored. Its leftover tables are named after
A's backend pid; each import first drops those whose backend is gone. Only W's inserts
hold the import lock (from the first to the commit: one import writing at a time, which
makes its anti-join safe); the chunks are copied and built meanwhile, into tables no
other import reads, and DPE lookups read ventes_dvf throughout.

Sales are grouped per chunk, so a mutation whose rows are in two chunks (not contiguous)
would be two sales: the ids of each chunk are kept (Python, alongside the COPY) and when
one is found in an earlier chunk, the chunks' inserts are rolled back and the whole file
is built at once from its chunks, as before. A key repeated across chunks is stored once
(W's anti-join sees the chunks it inserted before; the first in the file kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from memory.dvf import IMPORT_LOCK
from memory.dvf_load import CopyRejected, DvfLoad, build_sql, insert_sql, staging_sql

CHUNK_BYTES = 8 << 20
"""Bytes of CSV a chunk holds at least (its last mutation completed): ~47,000 rows."""
SETTINGS = ("SET LOCAL work_mem = '256MB'; SET LOCAL synchronous_commit = off; "
            "SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL enable_hashagg = off; "
            "SET LOCAL jit = off")
"""Sorts and the sales in memory; no commit waits for the disk (ventes_dvf's commit is
durable once the WAL writer flushes it: an import lost to a crash is imported again); no
parallel workers (the import's connections already use the cores); the sorted GROUP BY
(a hash of every mutation's aggregates would take hundreds of MB); no JIT compilation
(measured: it costs a chunk's statements more than it saves)."""
LEFTOVERS = r"""
SELECT string_agg(format('%I', c.relname), ', ')
FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace
WHERE s.nspname = current_schema() AND c.relkind = 'r'
  AND c.relname ~ '^dvf_(stage|sales)_[0-9]+_[0-9a-z]+$'
  AND (split_part(c.relname, '_', 3) = $1
       OR split_part(c.relname, '_', 3)::bigint NOT IN (SELECT pid FROM pg_stat_activity))"""
"""The staging and sales tables of imports whose connection is gone (killed midway), and
those of a tag (an import's own: its connection A's pid)."""


class Scattered(Exception):
    """A mutation's rows are in two chunks: the file is built at once instead."""


@dataclass
class Chunk:
    n: int
    stage: str
    sales: str
    final: bool
    rows: int
    """Rows COPYed (those the build did not group are counted by reason)."""


class Chunker:
    """A file's blocks of lines (whole lines, as COPY gets them) → chunks of about
    CHUNK_BYTES, each ending where a mutation does; `scattered` once a chunk holds an
    id_mutation an earlier chunk held."""

    def __init__(self, data: AsyncIterable[bytes], id_column: int, limit: int) -> None:
        self._data = aiter(data)
        self._column = id_column
        self.limit = limit
        self.ended = False
        self.scattered = False
        self._pending = b""
        self._last: bytes | None = None  # the id of the last line given (None: unknown)
        self._seen: set[bytes] = set()

    def _id(self, line: bytes) -> bytes | None:
        fields = line.split(b",", self._column + 1)
        return fields[self._column] if len(fields) > self._column else None

    def _ids_of(self, block: bytes) -> list[bytes]:
        if b'"' not in block:  # every line a record, no field quoted
            lines = block.split(b"\n")
            if self._column == 0:  # geo-DVF's id_mutation: the cheapest
                return [line[:line.find(b",")] for line in lines]
            return [line.split(b",", self._column + 1)[self._column] for line in lines
                    if line.count(b",") >= self._column]
        rows = csv.reader(io.StringIO(block.decode("utf-8", errors="replace"), newline=""))
        return [row[self._column].encode() for row in rows if len(row) > self._column]

    def _cut(self, block: bytes, want: int) -> int | None:
        """Where in the block, at `want` bytes or after, a mutation starts (None: nowhere,
        or the block has a quoted field: its lines may not be its records)."""
        if b'"' in block:
            return None
        start = 0 if want <= 0 else block.find(b"\n", want - 1) + 1
        prev = self._last if start == 0 else self._id(
            block[block.rfind(b"\n", 0, start - 1) + 1:start - 1])
        while start < len(block):
            end = block.index(b"\n", start)
            now = self._id(block[start:end])
            if prev is not None and now != prev:
                return start
            prev, start = now, end + 1
        return None

    async def blocks(self) -> AsyncIterator[bytes]:
        """The next chunk's blocks (the last when `ended` is set afterwards)."""
        ids: set[bytes] = set()
        size = 0
        block, self._pending = self._pending, b""
        while True:
            if not block:
                try:
                    block = await anext(self._data)
                except StopAsyncIteration:
                    self.ended = True
                    break
            if size + len(block) >= self.limit:
                at = self._cut(block, self.limit - size)
                if at is not None:
                    block, self._pending = block[:at], block[at:]
            if block:
                ids.update(self._ids_of(block))
                size += len(block)
                self._last = None if b'"' in block else self._id(block[block.rfind(
                    b"\n", 0, -1) + 1:-1])
                yield block
            block = b""
            if self._pending:
                break
        ids.discard(b"")  # rows without an id are not grouped (nor a block's end)
        if not ids.isdisjoint(self._seen):
            self.scattered = True
        self._seen |= ids


@dataclass
class Pipeline:
    """One file's chunks: copied by A, built by B or W, inserted by W in the file's order."""

    tag: str
    width: int
    columns: dict[str, int]
    departement: str | None
    source: str
    cut: Callable[[], str | None]
    chunks: list[Chunk] = field(default_factory=list)
    to_build: list[Chunk] = field(default_factory=list)
    built: dict[int, DvfLoad] = field(default_factory=dict)
    copied: float = 0.0
    """When the last chunk was COPYed (0: not yet)."""
    failure: BaseException | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    busy: dict[str, float] = field(default_factory=dict)

    def name(self, kind: str, n: int | str) -> str:
        return f"dvf_{kind}_{self.tag}_{n}"

    async def signal(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait(self) -> None:
        async with self.changed:
            await self.changed.wait()

    def spent(self, what: str, since: float) -> None:
        self.busy[what] = self.busy.get(what, 0.0) + time.perf_counter() - since

    async def copy(self, conn: Any, chunker: Chunker) -> None:
        """Connection A: each chunk COPYed into its own table, committed, then handed on
        (once a mutation is found in two chunks, the rest of the file in one more)."""
        try:
            while not chunker.ended:
                if chunker.scattered:
                    chunker.limit = 1 << 62
                chunk = await self._copy_chunk(conn, chunker)
                self.chunks.append(chunk)
                if not chunker.scattered:
                    self.to_build.append(chunk)
                await self.signal()
        except BaseException as exc:
            self.failure = self.failure or exc
            raise
        finally:
            self.copied = time.perf_counter()
            await self.signal()

    async def _copy_chunk(self, conn: Any, chunker: Chunker) -> Chunk:
        import asyncpg

        n = len(self.chunks)
        stage = self.name("stage", n)
        create, text_cols = staging_sql(stage, self.width, self.columns)
        async with conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(create)
            try:
                status = await conn.copy_to_table(stage, source=chunker.blocks(),
                                                  format="csv", force_not_null=text_cols)
            except asyncpg.exceptions.DataError as exc:
                raise CopyRejected(str(exc)) from None
        return Chunk(n, stage, self.name("sales", n), chunker.ended,
                     int(status.rsplit(" ", 1)[-1]))

    async def build(self, conn: Any, chunk: Chunk) -> DvfLoad:
        """A chunk's sales into its sales table (in a transaction of `conn`'s: committed by
        B, part of W's own); its counts."""
        started = time.perf_counter()
        sql = build_sql(self.columns, chunk.stage, chunk.sales)
        load = DvfLoad()
        last = self.cut() if chunk.final else None
        dep = self.departement
        async with conn.transaction():
            await conn.execute(SETTINGS)
            await conn.execute(sql["build"], dep, last)
            sales, complex_ids, too_big, grouped = await conn.fetchrow(sql["summary"])
            load.sales, grouped = int(sales), int(grouped)
            if too_big:  # the rows of sales whose total surface does not fit: by reason
                big = await conn.fetch(sql["big"])
                load.skip([r[0] for r in big], [r[1] for r in big])
            if chunk.rows != grouped:  # rows not kept (rare but for a file cut short)
                load.outside, load.no_id, load.bad_date, load.cut, total = (
                    int(v) for v in await conn.fetchrow(sql["stats"], dep, last))
                if total - load.outside - load.no_id - load.bad_date - load.cut - grouped:
                    # rows with a number their column cannot hold: by reason
                    reasons = await conn.fetch(sql["numbers"], dep, last)
                    load.skip([r[0] for r in reasons], [r[1] for r in reasons])
            if complex_ids:
                # no statistics on the staging table: never nested loops over its rows
                await conn.execute("SET LOCAL enable_nestloop = off")
                sales, big, rows = await conn.fetchrow(sql["exact"], dep, last, complex_ids)
                load.sales += int(sales)
                load.skip(big, rows)
                await conn.execute("SET LOCAL enable_nestloop = on")  # W's inserts
        self.spent("build", started)
        return load

    async def builder(self, conn: Any) -> None:
        """Connection B: builds the chunks copied, as W inserts them."""
        try:
            while self.failure is None:
                if self.to_build:
                    chunk = self.to_build.pop(0)
                    self.built[chunk.n] = await self.build(conn, chunk)
                    await self.signal()
                elif self.copied:
                    return
                else:
                    await self.wait()
        except BaseException as exc:
            self.failure = self.failure or exc
            await self.signal()
            raise

    async def write(self, conn: Any, chunker: Chunker) -> DvfLoad:
        """Connection W, in its transaction: each chunk's new sales inserted in the file's
        order (the import lock taken before the first); builds a chunk when idle.
        Raises Scattered (nothing inserted then is kept: the caller rolls back)."""
        load = DvfLoad()
        done = 0
        while True:
            if self.failure is not None:
                raise self.failure
            if chunker.scattered:
                raise Scattered
            if done in self.built:
                if done == 0:
                    await self.lock(conn)
                chunk_load = self.built.pop(done)
                started = time.perf_counter()
                status = await conn.execute(insert_sql(self.chunks[done].sales), self.source)
                self.spent("insert", started)
                chunk_load.new = int(status.rsplit(" ", 1)[-1])
                load.add(chunk_load)
                done += 1
            elif self.copied and done == len(self.chunks):
                return load
            elif self.to_build:
                chunk = self.to_build.pop(0)  # W builds it itself meanwhile
                self.built[chunk.n] = await self.build(conn, chunk)
            else:
                await self.wait()

    async def lock(self, conn: Any) -> None:
        """The import lock: another import's sales are all committed or all to come."""
        started = time.perf_counter()
        await conn.execute(f"SELECT pg_advisory_xact_lock({IMPORT_LOCK})")
        self.spent("wait", started)

    async def write_whole(self, conn: Any) -> DvfLoad:
        """W, after Scattered: every chunk in one table, built and inserted at once."""
        whole = Chunk(len(self.chunks), self.name("stage", "all"), self.name("sales", "all"),
                      True, sum(c.rows for c in self.chunks))
        union = " UNION ALL ".join(f"SELECT * FROM {c.stage}" for c in self.chunks)
        await conn.execute(f"CREATE UNLOGGED TABLE {whole.stage} AS {union}")
        load = await self.build(conn, whole)
        await self.lock(conn)
        status = await conn.execute(insert_sql(whole.sales), self.source)
        load.new = int(status.rsplit(" ", 1)[-1])
        return load


async def drop_tables(conn: Any, tag: str) -> None:
    """Drop the staging and sales tables of dead imports and those tagged `tag`."""
    tables = await conn.fetchval(LEFTOVERS, tag)
    if tables:
        await conn.execute(f"DROP TABLE IF EXISTS {tables}")


async def load_dvf_csv(db: Any, width: int, columns: dict[str, int],
                       data: AsyncIterable[bytes], *, departement: str | None,
                       source: str, cut: Callable[[], str | None],
                       timings: dict[str, float] | None = None) -> DvfLoad:
    """COPY a geo-DVF file's data lines (CSV, `width` fields, no header; `columns`:
    name → index) into PostgreSQL in chunks of CHUNK_BYTES, build and store its sales in
    one transaction. `cut()`, asked once the data has all been sent: the id_mutation
    whose rows are dropped (a file cut short), or None. Raises CopyRejected when
    PostgreSQL refuses a line (nothing is stored then). `timings`, when
    given, gets the seconds of each phase: copy (until the last chunk is COPYed), build
    and insert (what was left then), commit; and, overlapping them, wait (for another
    import's lock), build and insert (all chunks)."""
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        a, b, w = [await _driver(stack, db) for _ in range(3)]
        tag = str(await a.fetchval("SELECT pg_backend_pid()"))
        await drop_tables(a, tag)
        pipeline = Pipeline(tag, width, columns, departement, source, cut)
        chunker = Chunker(data, columns["id_mutation"], CHUNK_BYTES)
        copier = asyncio.create_task(pipeline.copy(a, chunker))
        builder = asyncio.create_task(pipeline.builder(b))
        try:
            try:
                async with w.transaction():
                    await w.execute(SETTINGS)
                    load = await pipeline.write(w, chunker)
                    written = time.perf_counter()
            except Scattered:
                pipeline.to_build.clear()
                await asyncio.gather(copier, builder)
                async with w.transaction():
                    await w.execute(SETTINGS)
                    load = await pipeline.write_whole(w)
                    written = time.perf_counter()
            committed = time.perf_counter()
        finally:
            pipeline.failure = pipeline.failure or asyncio.CancelledError()
            await pipeline.signal()
            for task in (copier, builder):
                task.cancel()
            await asyncio.gather(copier, builder, return_exceptions=True)
            for conn in (a, w):
                with contextlib.suppress(Exception):
                    await drop_tables(conn, tag)
                    break
    if timings is not None:
        timings["copy"] = pipeline.copied - started
        timings["build and insert"] = written - pipeline.copied
        timings["commit"] = committed - written
        for what, seconds in pipeline.busy.items():
            timings[f"{what} (all chunks)" if what != "wait" else what] = seconds
    return load


async def _driver(stack: contextlib.AsyncExitStack, db: Any) -> Any:
    """An asyncpg connection of the pool, for the import's duration."""
    conn = await stack.enter_async_context(db.engine.connect())
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    return driver
