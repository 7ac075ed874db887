"""`axi dvf import` and the DVF veille's optional import: stream geo-DVF files (paths or
URLs, gzip or plain, told apart by their first bytes) into ventes_dvf, grouped into sales,
idempotently.

Why in PostgreSQL: Python spent ~11 µs a row parsing. Now the file's lines go to COPY as
they are (1 MB chunks, gunzipped in a worker thread; a block is only looked at — UTF-8, no
quote/CR/NUL, every line with its number of fields — and a block that fails is read line
by line with the csv module, its broken lines skipped and counted), into a temporary table
whose date and number columns PostgreSQL reads; then memory/dvf.py builds the sales there
(the same key as jobs/dvf_parse.py, bit for bit) and inserts them, one transaction per file.
When PostgreSQL refuses a value (a bad date or number) the file is read again with every
row checked in Python first, so broken rows are still skipped with their reason. A file cut
short (a truncated download) keeps the sales read before the cut, and its report says why
it stopped. A file that cannot be read at all (a missing file, a 404 or 500, another
header) is reported and the other files are still imported. method="copy"/"unnest": the
older path (jobs/dvf_parse.py in Python, batches of sales written by COPY or unnest), kept
as the reference the tests compare the SQL import with.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import csv
import io
import re
import time
import zlib
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from jobs.dvf_parse import (
    Columns,
    HeaderError,
    RowError,
    SaleParser,
    check_numbers,
    check_row,
    column_indexes,
)
from jobs.types import Progress
from memory.dvf_load import CopyRejected

CHUNK = 1 << 20
BATCH = 5_000
GZIP_MAGIC = b"\x1f\x8b"
YEARS = 5


class SourceUnavailable(Exception):
    """Nothing could be read (message: why). `not_published`: a 404 of a default URL."""

    def __init__(self, message: str, *, not_published: bool = False):
        super().__init__(message)
        self.not_published = not_published


class Truncated(Exception):
    pass


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

    @property
    def sales_known(self) -> int:
        return self.sales - self.sales_new

    @property
    def failed(self) -> bool:
        return self.error is not None

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


def default_sources(url_template: str, now: datetime, years: int = YEARS) -> list[str]:
    """settings.dvf_url for each of the last `years` years (oldest first)."""
    if "{year}" not in url_template:
        return [url_template]
    return [url_template.replace("{year}", str(y)) for y in range(now.year - years + 1,
                                                                  now.year + 1)]


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


class _Lines:
    """Bytes → complete text lines: gunzips when the data starts with the gzip magic
    (multi-member files too), decodes UTF-8, keeps the partial last line for later."""

    def __init__(self) -> None:
        self._gzip: Any = None
        self._started = False
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._tail = ""

    def feed(self, data: bytes) -> list[str]:
        if not self._started:
            if not data:
                return []
            self._started = True
            if data[:2] == GZIP_MAGIC:
                self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._gzip is not None:
            out = []
            while data:
                if self._gzip.eof:  # another gzip member follows
                    self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out.append(self._gzip.decompress(data))
                data = self._gzip.unused_data if self._gzip.eof else b""
            data = b"".join(out)
        text = self._tail + self._text.decode(data)
        lines = text.split("\n")
        self._tail = lines.pop()
        return lines

    def finish(self) -> list[str]:
        """The last line; raises Truncated when a gzip stream ended early."""
        if self._gzip is not None and not self._gzip.eof:
            raise Truncated("truncated gzip: the file ends before its compressed data does")
        tail = self._tail + self._text.decode(b"", final=True)
        self._tail = ""
        return [tail] if tail.strip() else []


async def _chunks(source: str, http: httpx.AsyncClient | None, report: SourceReport,
                  progress: Progress, *, default: bool) -> AsyncGenerator[bytes, None]:
    if is_url(source):
        assert http is not None
        try:
            async with http.stream("GET", source) as response:
                if response.status_code == 404:
                    raise SourceUnavailable("not found (HTTP 404)", not_published=default)
                if response.status_code >= 400:
                    raise SourceUnavailable(f"HTTP {response.status_code}")
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                async for chunk in response.aiter_raw(CHUNK):
                    report.bytes_read += len(chunk)
                    progress(report.bytes_read, total, source)
                    yield chunk
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        return
    try:
        handle, total = await asyncio.to_thread(_open_file, source)
    except OSError as exc:
        raise SourceUnavailable(exc.strerror or str(exc)) from None
    with handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            report.bytes_read += len(chunk)
            progress(report.bytes_read, total, source)
            yield chunk


def _open_file(source: str) -> tuple[Any, int]:
    path = Path(source).expanduser()
    handle = path.open("rb")
    return handle, path.stat().st_size


async def import_source(store: Any, source: str, *, departement: str | None = "24",
                        http: httpx.AsyncClient | None = None,
                        progress: Progress = lambda done, total, what: None,
                        default: bool = False, batch: int = BATCH,
                        method: str = "sql") -> SourceReport:
    """Import one file or URL; never raises for the file's own faults (see the report).
    `method`: "sql" (the file's lines COPYed as they are, the sales built by PostgreSQL:
    memory/dvf.py), or the Python parser (jobs/dvf_parse.py) with its sales written by
    "copy" or "unnest"."""
    if method == "sql":
        return await _import_sql(store, source, departement=departement, http=http,
                                 progress=progress, default=default)
    started = time.monotonic()
    report = SourceReport(source)
    parser = SaleParser(source=Path(source).name if not is_url(source) else source,
                        departement=departement)
    lines = _Lines()
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

    def parse(chunk: bytes) -> list[tuple]:
        return [s.record() for s in parser.feed(lines.feed(chunk))]

    try:
        try:
            async with contextlib.aclosing(_chunks(source, http, report, progress,
                                                   default=default)) as chunks:
                async for chunk in chunks:
                    records.extend(await asyncio.to_thread(parse, chunk))
                    if len(records) >= batch:
                        await flush()
            last = lines.finish()
            records.extend(s.record() for s in parser.feed(last) + parser.finish())
        except Truncated as exc:
            parser.skip_partial_line()
            records.extend(s.record() for s in parser.finish(drop_last=True))
            report.error = f"{exc} (the sales before the cut are kept)"
        except zlib.error as exc:
            records.extend(s.record() for s in parser.finish(drop_last=True))
            report.error = f"corrupt gzip data ({exc}); the sales before it are kept"
        except SourceUnavailable as exc:
            records.extend(s.record() for s in parser.finish(drop_last=True))
            if exc.not_published:
                report.note = f"{exc}: not published yet, skipped"
            else:
                report.error = str(exc)
        except HeaderError as exc:
            report.error = str(exc)
        if not parser.has_header and report.error is None and report.note is None:
            report.error = "empty file: no geo-DVF header"
        await flush(final=True)
    finally:
        if pending is not None and not pending.done():
            pending.cancel()
    report.rows_read, report.rows_outside = parser.rows_read, parser.rows_outside
    report.skipped = dict(parser.skipped)
    if parser.mutations_split:
        report.skipped["mutation rows far from the others (kept as another sale)"] = (
            parser.mutations_split)
    report.seconds = time.monotonic() - started
    return report


async def import_sources(store: Any, sources: Sequence[str], *, departement: str | None = "24",
                         http: httpx.AsyncClient | None = None,
                         progress: Progress = lambda done, total, what: None,
                         default: bool = False, method: str = "sql",
                         user_agent: str = "Axi") -> ImportReport:
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
                default=default, method=method))
    finally:
        if own and client is not None:
            await client.aclose()
    report.seconds = time.monotonic() - started
    return report


# ---- the SQL import: bytes → PostgreSQL, the sales built there (memory/dvf.py) ----

NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?")
"""A number PostgreSQL reads as Python does (checked mode)."""
NUMBER_COLUMNS = ("valeur_fonciere", "surface_reelle_bati", "nombre_pieces_principales",
                  "surface_terrain", "longitude", "latitude")


class _Bytes:
    """Bytes → complete lines (bytes ending in \n): gunzips when the data starts with the
    gzip magic (multi-member files too), keeps the partial last line for later."""

    def __init__(self) -> None:
        self._gzip: Any = None
        self._started = False
        self._tail = b""

    def feed(self, data: bytes) -> bytes:
        if not self._started:
            if not data:
                return b""
            self._started = True
            if data[:2] == GZIP_MAGIC:
                self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._gzip is not None:
            out = []
            while data:
                if self._gzip.eof:  # another gzip member follows
                    self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
                out.append(self._gzip.decompress(data))
                data = self._gzip.unused_data if self._gzip.eof else b""
            data = b"".join(out)
        data = self._tail + data
        end = data.rfind(b"\n") + 1
        self._tail = data[end:]
        return data[:end]

    def finish(self) -> bytes:
        """The last line; raises Truncated when a gzip stream ended early."""
        if self._gzip is not None and not self._gzip.eof:
            raise Truncated("truncated gzip: the file ends before its compressed data does")
        tail, self._tail = self._tail, b""
        return tail + b"\n" if tail.strip() else b""


class _Feed:
    """The lines of one file on their way to COPY. Fast mode: a block of lines passes as
    it is when it is plain (UTF-8, no quote, CR or NUL, every line with its number of
    fields), PostgreSQL reading the values; otherwise its lines are read one by one (the
    csv module) and written back, broken ones skipped with their reason. Checked mode
    (after PostgreSQL refused a value): every row is also checked as the Python parser
    does (département, id_mutation, date, numbers) before it is sent."""

    def __init__(self, header: list[str], departement: str | None, checked: bool) -> None:
        self.index = column_indexes(header)
        self.cols = Columns.of(self.index)
        self.width = len(header)
        self.departement = departement
        self.checked = checked
        self.rows = 0
        self.outside = 0
        self.skipped: Counter[str] = Counter()
        self.last_id: str | None = None
        self._numbers = [(self.index[n], n) for n in NUMBER_COLUMNS]

    def block(self, data: bytes) -> bytes:
        if not data:
            return b""
        if not self.checked and not (b'"' in data or b"\r" in data or b"\x00" in data
                                     or b"\n\n" in data or data[0] == 10):
            lines = data.split(b"\n")
            lines.pop()
            if (lines[0].count(b",") == self.width - 1
                    and list(map(bytes.count, lines, [b","] * len(lines))).count(
                        self.width - 1) == len(lines)
                    and (data.isascii() or _utf8(data))):
                self.rows += len(lines)
                self.last_id = lines[-1].split(b",", 1)[0].decode("utf-8")
                return data
        return self._slow(data)

    def _slow(self, data: bytes) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        reader = csv.reader(data.decode("utf-8", errors="replace").split("\n"))
        width, dept, c = self.width, self.departement, self.cols
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self.rows += 1
                self.skipped[f"unreadable CSV line ({exc})"] += 1
                continue
            if not row:
                continue
            self.rows += 1
            if len(row) != width:
                self.skipped[f"wrong number of columns ({len(row)} instead of {width})"] += 1
                continue
            if self.checked:
                if dept is not None and row[c.departement] != dept:
                    self.outside += 1
                    continue
                try:
                    check_row(row, c, width)
                    check_numbers(row, c)
                    for i, name in self._numbers:
                        if row[i] and not NUMBER.fullmatch(row[i]):
                            raise RowError(f"{name} is not a number")
                except RowError as exc:
                    self.skipped[str(exc)] += 1
                    continue
            writer.writerow(row)
            self.last_id = row[c.id]
        return out.getvalue().encode("utf-8")


def _next_block(feed: _Feed, lines: _Bytes, chunk: bytes) -> bytes:
    return feed.block(lines.feed(chunk))


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def _import_sql(store: Any, source: str, *, departement: str | None,
                      http: httpx.AsyncClient | None, progress: Progress,
                      default: bool) -> SourceReport:
    started = time.monotonic()
    report = SourceReport(source)
    name = Path(source).name if not is_url(source) else source
    for checked in (False, True):
        report = SourceReport(source)
        try:
            feed = await _load_sql(store, source, name, report, departement=departement,
                                   http=http, progress=progress, default=default,
                                   checked=checked)
        except CopyRejected as exc:
            if checked:
                report.error = f"PostgreSQL refused the file: {exc}"
                break
            continue  # a value PostgreSQL cannot read: again, every row checked
        if feed is not None:
            report.rows_read = feed.rows
            report.rows_outside += feed.outside
            for reason, n in feed.skipped.items():
                report.skipped[reason] = report.skipped.get(reason, 0) + n
        break
    report.seconds = time.monotonic() - started
    return report


async def _load_sql(store: Any, source: str, name: str, report: SourceReport, *,
                    departement: str | None, http: httpx.AsyncClient | None,
                    progress: Progress, default: bool, checked: bool) -> _Feed | None:
    lines = _Bytes()
    drop_last = False

    def stopped(exc: Exception) -> None:
        nonlocal drop_last
        drop_last = True
        if isinstance(exc, Truncated):
            report.skipped["truncated last line"] = 1
            report.error = f"{exc} (the sales before the cut are kept)"
        elif isinstance(exc, zlib.error):
            report.error = f"corrupt gzip data ({exc}); the sales before it are kept"
        elif isinstance(exc, SourceUnavailable) and exc.not_published:
            report.note = f"{exc}: not published yet, skipped"
        else:
            report.error = str(exc)

    async with contextlib.aclosing(_chunks(source, http, report, progress,
                                           default=default)) as chunks:
        first = b""
        try:
            async for chunk in chunks:
                first += lines.feed(chunk)
                if first:
                    break
            else:
                first += lines.finish()
        except (Truncated, zlib.error, SourceUnavailable) as exc:
            stopped(exc)
        if not first:
            if report.error is None and report.note is None:
                report.error = "empty file: no geo-DVF header"
            return None
        end = first.index(b"\n")
        header = next(csv.reader([first[:end].decode("utf-8", errors="replace")]), [])
        try:
            feed = _Feed(header, departement, checked)
        except HeaderError as exc:
            report.error = str(exc)
            return None
        rest = first[end + 1:]

        async def data() -> AsyncIterator[bytes]:
            block = feed.block(rest)
            if block:
                yield block
            if drop_last:
                return
            try:
                async for chunk in chunks:
                    block = await asyncio.to_thread(_next_block, feed, lines, chunk)
                    if block:
                        yield block
                block = feed.block(lines.finish())
                if block:
                    yield block
            except (Truncated, zlib.error, SourceUnavailable) as exc:
                stopped(exc)

        load = await store.load_dvf_csv(
            feed.width, feed.index, data(), departement=departement, source=name,
            cut=lambda: feed.last_id if drop_last else None)
    report.sales, report.sales_new = load.sales, load.new
    report.rows_outside = load.outside
    for reason, n in (("no id_mutation", load.no_id), ("bad date_mutation", load.bad_date),
                      ("rows of a sale cut by the end of the file", load.cut)):
        if n:
            report.skipped[reason] = report.skipped.get(reason, 0) + n
    return feed
