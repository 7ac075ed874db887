"""Raw bytes → whole lines in bounded memory (jobs/dvf_stream.py): gzip bombs, endless
lines, a BOM, CRLF, truncated or corrupt gzip, several gzip members, any chunking."""

from __future__ import annotations

import gzip
import tracemalloc
from collections.abc import Iterable

import pytest

from jobs.dvf_stream import (
    PIECE,
    CorruptGzip,
    Limits,
    LineReader,
    TooLarge,
    Truncated,
)

ROWS = b"".join(b"2025-%d,2025-01-03,000001,Vente,95000\n" % i for i in range(2_000))
HEADER = b"id_mutation,date_mutation,numero_disposition,nature_mutation,valeur_fonciere\n"


def read_all(data: bytes, chunk: int = 1 << 20, limits: Limits | None = None
             ) -> tuple[bytes, LineReader]:
    reader = LineReader(limits)
    out: list[bytes] = []
    for i in range(0, len(data), chunk):
        out.extend(reader.feed(data[i:i + chunk]))
    out.append(reader.finish())
    return b"".join(out), reader


def zero_bomb(inflated: int) -> bytes:
    """`inflated` bytes of zeros as gzip members of 16 MiB each (~1000:1)."""
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return member * (inflated // (16 << 20))


def consume(reader: LineReader, data: bytes, chunk: int = 1 << 20) -> Iterable[bytes]:
    for i in range(0, len(data), chunk):
        yield from reader.feed(data[i:i + chunk])


def test_plain_and_gzip_any_chunking_give_the_same_lines() -> None:
    data = HEADER + ROWS
    packed = gzip.compress(data[:30_000]) + gzip.compress(data[30_000:])  # two members
    for raw in (data, packed):
        for chunk in (1, 7, 4096, 1 << 20):
            out, reader = read_all(raw, chunk)
            assert out == data and reader.long_lines == 0
    assert read_all(packed)[1].read == len(packed)


def test_bom_and_crlf_become_plain_lines() -> None:
    crlf = (HEADER + ROWS).replace(b"\n", b"\r\n")
    for raw in (b"\xef\xbb\xbf" + crlf, gzip.compress(b"\xef\xbb\xbf" + crlf)):
        for chunk in (1, 5, 1 << 20):
            out, _ = read_all(raw, chunk)
            assert out == HEADER + ROWS
    # the last line without its newline, ending in CR
    assert read_all(b"\xef\xbb\xbfa,b\r\nc,d\r")[0] == b"a,b\nc,d\n"


def test_a_gzip_bomb_stops_early_in_bounded_memory() -> None:
    bomb = zero_bomb(4 << 30)  # 4 GiB of zeros in ~4 MB
    assert len(bomb) < 5_000_000
    reader = LineReader()
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge) as caught:
            for _ in consume(reader, bomb):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert message.startswith("the gzip data inflates more than 100 times (")
    assert message.endswith("): refused as a likely decompression bomb")
    assert "\n" not in message
    assert reader.read == 1 << 20  # stopped in its first chunk
    assert reader.inflated < 250 << 20
    assert peak < 8 << 20  # a few pieces, never the inflated data
    assert reader.first_line_too_long  # zeros, no newline: one endless line


def test_a_bomb_of_newlines_or_of_one_repeated_row_is_refused_too() -> None:
    limits = Limits(ratio_grace=1 << 20)  # the default's 32 MiB of lines take seconds
    for unit in (b"\n", b"2025-1,2025-01-03,000001,Vente,95000\n"):
        member = gzip.compress(unit * ((16 << 20) // len(unit)), compresslevel=9)
        reader = LineReader(limits)
        with pytest.raises(TooLarge, match="refused as a likely decompression bomb"):
            for _ in consume(reader, member * 16, 64 * 1024):
                pass
        assert reader.read == 64 * 1024 and reader.inflated < 8 << 20


def test_the_caps_are_parameters() -> None:
    packed = gzip.compress(HEADER + ROWS * 40)  # 3 MB, an honest ratio
    assert read_all(packed)[0] == HEADER + ROWS * 40
    with pytest.raises(TooLarge, match=r"^more than 1\.0 MB once decompressed: refused "
                                       r"\(the limit for one file\)$"):
        read_all(packed, limits=Limits(max_size=1_000_000))
    tight = Limits(max_ratio=3, ratio_grace=100_000)
    with pytest.raises(TooLarge, match="inflates more than 3 times"):
        read_all(packed, limits=tight)
    # a plain file has no ratio, only the size cap
    assert read_all(HEADER + ROWS * 40, limits=tight)[0] == HEADER + ROWS * 40


@pytest.mark.parametrize("where", ["middle", "end without newline", "first"])
@pytest.mark.parametrize("packed", [False, True])
def test_a_10_mb_line_is_skipped_and_counted_never_held(where: str, packed: bool) -> None:
    huge = b"x," * (5 << 20)
    if where == "middle":
        data, expected = HEADER + ROWS + huge + b"\n" + ROWS, HEADER + ROWS + ROWS
    elif where == "first":
        data, expected = huge + b"\n" + ROWS, ROWS
    else:
        data, expected = HEADER + ROWS + huge, HEADER + ROWS
    raw = gzip.compress(data) if packed else data
    reader = LineReader()
    tracemalloc.start()
    try:
        out = b"".join(consume(reader, raw, 64 * 1024)) + reader.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out == expected
    assert reader.long_lines == 1
    assert reader.first_line_too_long == (where == "first")
    assert peak < 4 * PIECE  # a piece and its copies, never the 10 MB line


def test_a_line_just_at_the_limit_is_kept() -> None:
    limits = Limits(max_line=100)
    line = b"y" * 100
    out, reader = read_all(line + b"\n" + b"z" * 101 + b"\nok\n", 3, limits=limits)
    assert out == line + b"\nok\n" and reader.long_lines == 1
    out, reader = read_all(line + b"\n" + b"z" * 101 + b"\nok\n", 1 << 20, limits=limits)
    assert out == line + b"\nok\n" and reader.long_lines == 1


def test_a_truncated_gzip_gives_its_whole_lines_then_says_so() -> None:
    packed = gzip.compress(HEADER + ROWS, compresslevel=1)
    cut = packed[: len(packed) // 2]
    reader = LineReader()
    got = b"".join(consume(reader, cut, 1000))
    assert got and got.endswith(b"\n") and (HEADER + ROWS).startswith(got)
    with pytest.raises(Truncated) as caught:
        reader.finish()
    assert str(caught.value) == ("truncated gzip: the file ends before its compressed data "
                                 "does")


def test_corrupt_gzip_data() -> None:
    packed = bytearray(gzip.compress(HEADER + ROWS))
    packed[200:260] = b"\xff" * 60
    with pytest.raises(CorruptGzip, match=r"^corrupt gzip data \(Error -3 while "):
        read_all(bytes(packed))
