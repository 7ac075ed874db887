"""`axi dvf import` and the DVF veille's optional import: geo-DVF files (paths or URLs,
gzip or plain) into ventes_dvf, grouped into sales, idempotently, with a report per file.

Why this shape: a file is read once, as a stream of whole lines in bounded memory
(jobs/dvf_sources.py, jobs/dvf_stream.py), whatever it holds. By default (method "sql")
its lines go to COPY as they are (jobs/dvf_feed.py looks at them first) and PostgreSQL
builds and stores the sales (memory/dvf_pipeline.py, memory/dvf_load.py: the same key as
jobs/dvf_parse.py, bit for bit), one transaction per file. When PostgreSQL refuses a value (a bad date or
number) the file is read again with every row checked in Python, so broken rows are still
skipped with their reason. A file cut short (a truncated download, corrupt gzip data, a
decompression bomb, a broken connection) keeps the sales read before the cut (the last
mutation, maybe incomplete, is dropped), and its report says why it stopped: importing
the whole file again adds the rest. A file that cannot be read at all (a missing file, a
404 or 500, another header) is reported and the other files are still imported.
method="copy"/"unnest": the older path (jobs/dvf_parse.py in Python, batches of sales
written by COPY or unnest), kept as the reference the tests compare the SQL import with.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from jobs.dvf_feed import Feed
from jobs.dvf_parse import HeaderError, SaleParser
from jobs.dvf_sources import (
    SourceUnavailable,
    default_sources,
    display_name,
    is_url,
    line_blocks,
    read_chunks,
)
from jobs.dvf_stream import Limits, LineReader, StreamStopped, Truncated, size
from jobs.types import Progress
from memory.dvf_load import CopyRejected

__all__ = ["ImportReport", "Limits", "SourceReport", "SourceUnavailable", "default_sources",
           "import_source", "import_sources", "is_url"]
BATCH = 5_000


@dataclass
class SourceReport:
    source: str
    bytes_read: int = 0
    rows_read: int = 0
    rows_outside: int = 0
    sales: int = 0
    sales_new: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    """Why the file could not be read (entirely, or past some point)."""
    note: str | None = None
    """Something to know that is not a failure (a year not published yet)."""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per phase of the SQL import (memory/dvf_pipeline.py's, and "python": the time
    spent reading and checking the lines, while PostgreSQL runs the COPY)."""

    @property
    def sales_known(self) -> int:
        return self.sales - self.sales_new

    @property
    def failed(self) -> bool:
        return self.error is not None

    def skip(self, reason: str, n: int = 1) -> None:
        if n:
            self.skipped[reason] = self.skipped.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "bytes": self.bytes_read, "rows_read": self.rows_read,
                "rows_outside_departement": self.rows_outside, "sales": self.sales,
                "sales_new": self.sales_new, "sales_known": self.sales_known,
                "rows_skipped": dict(self.skipped), "error": self.error, "note": self.note,
                "seconds": round(self.seconds, 3)}


@dataclass
class ImportReport:
    departement: str | None
    sources: list[SourceReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[SourceReport]:
        return [s for s in self.sources if s.failed]

    def total(self, name: str) -> int:
        return sum(getattr(s, name) for s in self.sources)

    def skipped(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for s in self.sources:
            out.update(s.skipped)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"departement": self.departement, "files": len(self.sources),
                "rows_read": self.total("rows_read"),
                "rows_outside_departement": self.total("rows_outside"),
                "sales": self.total("sales"), "sales_new": self.total("sales_new"),
                "sales_known": self.total("sales_known"), "rows_skipped": dict(self.skipped()),
                "failed": [s.source for s in self.failed], "seconds": round(self.seconds, 3),
                "sources": [s.as_dict() for s in self.sources]}


def _stopped(report: SourceReport, exc: Exception) -> None:
    """The file could not be read past some point: what its report says."""
    if isinstance(exc, Truncated):
        report.skip("truncated last line")
        report.error = (f"{exc} (the sales before the cut are kept; import the whole file "
                        "again for the rest)")
    elif isinstance(exc, StreamStopped):
        report.error = f"{exc}; the sales before it are kept"
    elif isinstance(exc, SourceUnavailable) and exc.not_published:
        report.note = f"{exc}: not published yet, skipped"
    else:
        report.error = str(exc)


def _count_stream(report: SourceReport, reader: LineReader) -> None:
    """The lines the reader dropped, as rows read and skipped."""
    report.rows_read += reader.long_lines
    report.skip(f"line longer than {size(reader.limits.max_line)}", reader.long_lines)


def _no_header(report: SourceReport, reader: LineReader) -> None:
    if reader.first_line_too_long:
        report.error = (f"not a geo-DVF file: its first line is longer than "
                        f"{size(reader.limits.max_line)}")
    elif report.error is None and report.note is None:
        report.error = "empty file: no geo-DVF header"


async def import_source(store: Any, source: str, *, departement: str | None = "24",
                        http: httpx.AsyncClient | None = None,
                        progress: Progress = lambda done, total, what: None,
                        default: bool = False, batch: int = BATCH,
                        method: str = "sql", limits: Limits | None = None) -> SourceReport:
    """Import one file or URL; never raises for the file's own faults (see the report).
    `method`: "sql" (the file's lines COPYed as they are, the sales built by PostgreSQL:
    memory/dvf_pipeline.py), or the Python parser (jobs/dvf_parse.py) with its sales written
    by "copy" or "unnest". `limits`: jobs.dvf_stream.Limits (line length, inflated size)."""
    started = time.monotonic()
    report = SourceReport(source)
    for checked in ((False, True) if method == "sql" else (False,)):
        report = SourceReport(source)
        reader = LineReader(limits)

        def seen(done: int, total: int | None, report: SourceReport = report) -> None:
            report.bytes_read = done
            progress(done, total, source)

        chunks = read_chunks(source, http, seen, default=default)
        try:
            async with contextlib.aclosing(chunks):
                if method == "sql":
                    await _import_sql(store, source, report, line_blocks(chunks, reader),
                                      reader, departement=departement, checked=checked)
                else:
                    await _import_python(store, source, report, line_blocks(chunks, reader),
                                         reader, departement=departement, batch=batch,
                                         method=method)
        except CopyRejected as exc:
            if checked:
                report.error = f"PostgreSQL refused the file: {exc}"
                break
            continue  # a value PostgreSQL cannot read: again, every row checked
        _count_stream(report, reader)
        break
    report.seconds = time.monotonic() - started
    return report


async def import_sources(store: Any, sources: Sequence[str], *, departement: str | None = "24",
                         http: httpx.AsyncClient | None = None,
                         progress: Progress = lambda done, total, what: None,
                         default: bool = False, method: str = "sql",
                         user_agent: str = "Axi", limits: Limits | None = None) -> ImportReport:
    """Import several files or URLs, one after the other."""
    started = time.monotonic()
    report = ImportReport(departement)
    own = http is None and any(is_url(s) for s in sources)
    client = http or (httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=15.0),
                                        follow_redirects=True,
                                        headers={"User-Agent": user_agent}) if own else None)
    try:
        for source in sources:
            report.sources.append(await import_source(
                store, source, departement=departement, http=client, progress=progress,
                default=default, method=method, limits=limits))
    finally:
        if own and client is not None:
            await client.aclose()
    report.seconds = time.monotonic() - started
    return report


async def _import_python(store: Any, source: str, report: SourceReport,
                         blocks: AsyncGenerator[bytes, None], reader: LineReader, *,
                         departement: str | None, batch: int, method: str) -> None:
    parser = SaleParser(source=display_name(source), departement=departement)
    records: list[tuple] = []
    pending: asyncio.Task[int] | None = None

    async def flush(final: bool = False) -> None:
        nonlocal records, pending
        if pending is not None:
            report.sales_new += await pending
            pending = None
        if records:
            report.sales += len(records)
            pending = asyncio.create_task(store.insert_dvf_sales(records, method=method))
            records = []
        if final and pending is not None:
            report.sales_new += await pending
            pending = None

    def parse(block: bytes) -> list[tuple]:
        lines = block.decode("utf-8", errors="replace").split("\n")
        lines.pop()
        return [s.record() for s in parser.feed(lines)]

    try:
        try:
            async with contextlib.aclosing(blocks):
                async for block in blocks:
                    records.extend(await asyncio.to_thread(parse, block))
                    if len(records) >= batch:
                        await flush()
            records.extend(s.record() for s in parser.finish())
        except (StreamStopped, SourceUnavailable) as exc:
            _stopped(report, exc)
            records.extend(s.record() for s in parser.finish(drop_last=True))
        except HeaderError as exc:
            report.error = str(exc)
        if not parser.has_header:
            _no_header(report, reader)
        await flush(final=True)
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
    report.rows_read, report.rows_outside = parser.rows_read, parser.rows_outside
    for reason, n in parser.skipped.items():
        report.skip(reason, n)
    report.skip("mutation rows far from the others (kept as another sale)",
                parser.mutations_split)


async def _import_sql(store: Any, source: str, report: SourceReport,
                      blocks: AsyncGenerator[bytes, None], reader: LineReader, *,
                      departement: str | None, checked: bool) -> None:
    """Raises CopyRejected (PostgreSQL refused a value: nothing stored)."""
    cut = False
    async with contextlib.aclosing(blocks):
        first = b""
        try:
            first = await anext(blocks, b"")
        except (StreamStopped, SourceUnavailable) as exc:
            _stopped(report, exc)
            cut = True
        if not first:
            _no_header(report, reader)
            return
        end = first.index(b"\n")
        header = next(csv.reader([first[:end].decode("utf-8", errors="replace")]), [])
        try:
            feed = Feed(header, departement, checked)
        except HeaderError as exc:
            report.error = str(exc)
            return
        busy = 0.0

        def check(block: bytes | None) -> bytes:
            """A block of lines for COPY; None: the end (a record held back, its quoted
            field never closed)."""
            nonlocal busy
            started = time.perf_counter()
            out = feed.finish() if block is None else feed.block(block)
            busy += time.perf_counter() - started
            return out

        async def data() -> AsyncIterator[bytes]:
            nonlocal cut, busy
            block = check(first[end + 1:])
            if block:
                yield block
            try:
                while not cut:
                    started = time.perf_counter()
                    raw = await anext(blocks, None)
                    busy += time.perf_counter() - started
                    if raw is None:
                        break
                    block = await asyncio.to_thread(check, raw)
                    if block:
                        yield block
            except (StreamStopped, SourceUnavailable) as exc:
                _stopped(report, exc)
                cut = True
            block = check(None)
            if block:
                yield block

        load = await store.load_dvf_csv(
            feed.width, feed.index, data(), departement=departement,
            source=display_name(source), cut=lambda: feed.last_id if cut else None,
            timings=report.timings)
        report.timings["python"] = busy
    report.sales, report.sales_new = load.sales, load.new
    report.rows_read = feed.rows
    report.rows_outside = load.outside + feed.outside
    for reason, n in feed.skipped.items():
        report.skip(reason, n)
    for reason, n in (("no id_mutation", load.no_id), ("bad date_mutation", load.bad_date),
                      ("rows of a sale cut by the end of the file", load.cut),
                      *load.skipped.items()):
        report.skip(reason, n)
