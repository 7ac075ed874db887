"""The bytes of a geo-DVF download → blocks of whole lines, in bounded memory whatever they
are (issue 12). Pure: no I/O, fed by jobs/dvf_sources.py, read by both import paths.

Why: a file from the Internet may be hostile or broken. A gzip bomb (a few MB inflating to
many GB) or one enormous line without a newline made the import's memory grow without
bound. Here gzip data (told by its magic bytes; several members, as `cat a.gz b.gz`
makes, are one file) is inflated at most PIECE bytes at a time; a line longer than
`max_line` is dropped as it streams (counted, never held whole); the inflated size is
capped (`max_size`) and so is its ratio to the compressed bytes read (`max_ratio`, past
`ratio_grace`: geo-DVF inflates ~6×, a bomb ~1000×), each with a one-line English error.
A UTF-8 BOM is dropped and CRLF line ends become LF, so both paths see plain lines.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
BOM = b"\xef\xbb\xbf"
PIECE = 1 << 20
"""Inflated bytes produced at most per step (the unit of memory, with max_line)."""


@dataclass(frozen=True)
class Limits:
    max_line: int = 64 * 1024
    """Bytes of one line (its newline excluded); a longer line is skipped and counted."""
    max_size: int = 16_000_000_000
    """Inflated bytes of one file."""
    max_ratio: float = 100.0
    """Inflated bytes per compressed byte read, checked once `ratio_grace` are inflated."""
    ratio_grace: int = 32 << 20


class StreamStopped(Exception):
    """The data cannot be read past some point (the message says why, in one line); the
    lines before it were whole."""


class Truncated(StreamStopped):
    pass


class CorruptGzip(StreamStopped):
    pass


class TooLarge(StreamStopped):
    """A cap of `Limits` was reached: refused as a likely decompression bomb."""


def size(n: float) -> str:
    """Bytes for a person: 64 KiB, 12.5 MB, 2.1 GB."""
    if n < 1e6:
        return f"{n / 1024:.0f} KiB"
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"


class LineReader:
    """Feed it the raw bytes in order (any chunking); `feed` yields blocks of whole lines,
    each ending with "\\n", none longer than `max_line`; `finish` gives the last line."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.read = 0
        """Raw (compressed) bytes fed so far."""
        self.inflated = 0
        """Bytes after gunzip (the raw bytes when not gzip)."""
        self.long_lines = 0
        """Lines longer than max_line, skipped."""
        self.first_line_too_long = False
        self._head = b""  # the first bytes, until gzip or not is known
        self._gzip: Any = None  # zlib's decompressor, for gzip data
        self._started = False
        self._first = True  # the first line still to come (a BOM to drop)
        self._tail = b""  # the partial last line
        self._skipping = False  # inside a line too long, until its newline

    def feed(self, data: bytes) -> Iterator[bytes]:
        self.read += len(data)
        if not self._started:
            data = self._head + data
            if len(data) < len(GZIP_MAGIC):
                self._head = data
                return
            self._head = b""
            self._started = True
            if data.startswith(GZIP_MAGIC):
                self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if self._gzip is None:
            for start in range(0, len(data), PIECE):
                yield from self._lines(data[start:start + PIECE])
            return
        more = False  # zlib may hold output of what it was given
        while data or more:
            if self._gzip.eof:  # another gzip member follows
                self._gzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._gzip.decompress(data, PIECE)
            except zlib.error as exc:
                raise CorruptGzip(f"corrupt gzip data ({exc})") from None
            if self._gzip.eof:
                data, more = self._gzip.unused_data, False
            else:
                data, more = self._gzip.unconsumed_tail, len(out) == PIECE
            if out:
                yield from self._lines(out)

    def finish(self) -> bytes:
        """The last line (a newline added), or b""; raises Truncated when a gzip stream
        ended early (its partial line is dropped then)."""
        if self._gzip is not None and not self._gzip.eof:
            raise Truncated("truncated gzip: the file ends before its compressed data does")
        rest = self._head + (b"" if self._skipping else self._tail)
        self._head = self._tail = b""
        if self._first and rest.startswith(BOM):
            rest = rest[len(BOM):]
        rest = rest.removesuffix(b"\r")
        return rest + b"\n" if rest.strip() else b""

    def _lines(self, piece: bytes) -> Iterator[bytes]:
        limits = self.limits
        self.inflated += len(piece)
        if self.inflated > limits.max_size:
            raise TooLarge(f"more than {size(limits.max_size)} once decompressed: "
                           "refused (the limit for one file)")
        if (self._gzip is not None and self.inflated > limits.ratio_grace
                and self.inflated > limits.max_ratio * self.read):
            raise TooLarge(f"the gzip data inflates more than {limits.max_ratio:g} times "
                           f"({size(self.inflated)} from {size(self.read)}): refused as a "
                           "likely decompression bomb")
        if self._skipping:
            end = piece.find(b"\n")
            if end < 0:
                return
            self._skipping = False
            piece = piece[end + 1:]
        data = self._tail + piece if self._tail else piece
        end = data.rfind(b"\n") + 1
        block, tail = data[:end], data[end:]
        if block:
            if b"\r" in block:
                block = block.replace(b"\r\n", b"\n")
            if self._first and block.startswith(BOM):
                block = block[len(BOM):]
            lines = block.split(b"\n")
            if max(map(len, lines)) > limits.max_line:  # rare: a long line whole here
                if self._first and len(lines[0]) > limits.max_line:
                    self.first_line_too_long = True
                kept = [line for line in lines if len(line) <= limits.max_line]
                self.long_lines += len(lines) - len(kept)
                block = b"\n".join(kept)
            self._first = False
        if self._measure(tail) > limits.max_line:  # a line too long, its end still to come
            self.long_lines += 1
            self.first_line_too_long |= self._first
            self._first = False
            tail = b""
            self._skipping = True
        self._tail = tail
        if block.strip(b"\n"):
            yield block

    def _measure(self, tail: bytes) -> int:
        """The length of a partial line as it will be judged once whole: without the BOM
        of the first line nor a last CR (maybe the start of its CRLF), so that the verdict
        does not depend on where a chunk ends."""
        n = len(tail)
        if self._first and tail.startswith(BOM):
            n -= len(BOM)
        return n - 1 if tail.endswith(b"\r") else n
