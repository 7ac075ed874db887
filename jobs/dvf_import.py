"""`axi dvf import` and the DVF veille's optional import: stream geo-DVF files (paths or
URLs, gzip or plain, told apart by their first bytes) into ventes_dvf, grouped into sales,
idempotently.

Why streaming: a département's five years are ~1 million rows; the file is read in 1 MB
chunks, decompressed and parsed in a worker thread (jobs/dvf_parse.py) while the previous
batch of sales is written (COPY, then INSERT … ON CONFLICT DO NOTHING: memory/dvf.py),
so memory stays bounded and the database works while Python parses. Each batch is its
own transaction: a file cut short (a truncated download) keeps the sales read before the
cut, and its report says why it stopped. A file that cannot be read at all (a missing
file, a 404 or 500, another header) is reported and the other files are still imported.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
import zlib
from collections import Counter
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from jobs.dvf_parse import HeaderError, SaleParser
from jobs.types import Progress

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
                        method: str = "copy") -> SourceReport:
    """Import one file or URL; never raises for the file's own faults (see the report)."""
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
                         default: bool = False, method: str = "copy",
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
