"""Where geo-DVF files come from: a path or a URL (files.data.gouv.fr), read as raw chunks
with a progress callback, then as blocks of whole lines (jobs/dvf_stream.py). The I/O
half of the import, so that jobs/dvf_import.py only decides what to do with the lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from jobs.dvf_stream import LineReader

CHUNK = 1 << 20
YEARS = 5


class SourceUnavailable(Exception):
    """Nothing could be read (message: why). `not_published`: a 404 of a default URL."""

    def __init__(self, message: str, *, not_published: bool = False):
        super().__init__(message)
        self.not_published = not_published


def default_sources(url_template: str, now: datetime, years: int = YEARS) -> list[str]:
    """settings.dvf_url for each of the last `years` years (oldest first)."""
    if "{year}" not in url_template:
        return [url_template]
    return [url_template.replace("{year}", str(y)) for y in range(now.year - years + 1,
                                                                  now.year + 1)]


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def display_name(source: str) -> str:
    """What ventes_dvf.source says: a file's name, or the URL."""
    return source if is_url(source) else Path(source).name


async def read_chunks(source: str, http: httpx.AsyncClient | None,
                      progress: Callable[[int, int | None], None], *,
                      default: bool) -> AsyncGenerator[bytes, None]:
    """The raw bytes of a file or URL; `progress(bytes so far, total or None)`. Raises
    SourceUnavailable (a missing file, an HTTP error, a broken connection)."""
    done = 0
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
                    done += len(chunk)
                    progress(done, total)
                    yield chunk
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"{type(exc).__name__}: {exc}".rstrip(": ")) from None
        return
    try:
        handle, size = await asyncio.to_thread(_open_file, source)
    except OSError as exc:
        raise SourceUnavailable(exc.strerror or str(exc)) from None
    with handle:
        while chunk := await asyncio.to_thread(handle.read, CHUNK):
            done += len(chunk)
            progress(done, size)
            yield chunk


def _open_file(source: str) -> tuple[Any, int]:
    path = Path(source).expanduser()
    handle = path.open("rb")
    return handle, path.stat().st_size


async def line_blocks(chunks: AsyncIterator[bytes], reader: LineReader
                      ) -> AsyncGenerator[bytes, None]:
    """Blocks of whole lines of `chunks` (the last line included), inflated and split in a
    worker thread one block at a time, so that memory holds about one block. Raises what
    `chunks` and `reader` raise (SourceUnavailable, jobs.dvf_stream.StreamStopped)."""
    async for chunk in chunks:
        blocks = reader.feed(chunk)
        while (block := await asyncio.to_thread(next, blocks, None)) is not None:
            yield block
    last = reader.finish()
    if last:
        yield last
