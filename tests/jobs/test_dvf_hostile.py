"""The geo-DVF import (jobs/dvf_import.py) on hostile or odd files, both paths: a gzip bomb,
a 10 MB line, a BOM and CRLF, a changed header, a truncated gzip. Each gives a clear
report, keeps only whole sales (a rerun with the good file completes them) and a rerun is
idempotent."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from jobs.dvf_import import Limits, import_sources
from memory.store import MemoryStore
from tests.fakes.dvf_server import HEADER, synthetic_rows

METHODS = ["sql", "copy"]


async def count(store: MemoryStore) -> int:
    return int((await store.dvf_summary())["ventes"])


def rows(n: int, start: int = 0) -> str:
    return "".join(synthetic_rows(n, start=start))


def zero_bomb(inflated: int) -> bytes:
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return member * (inflated // (16 << 20))


async def import_good(store: MemoryStore, tmp_path: Path, text: str, method: str) -> int:
    """Import the well-formed `text` (a rerun after a bad file): the number of sales."""
    good = tmp_path / "good.csv"
    good.write_text(text, encoding="utf-8")
    report = await import_sources(store, [str(good)], method=method)
    assert not report.failed
    assert await count(store) == report.total("sales")
    return report.total("sales")


@pytest.mark.parametrize("method", METHODS)
async def test_a_gzip_bomb_fails_fast(store: MemoryStore, tmp_path: Path, method: str) -> None:
    text = HEADER + "\n" + rows(300)
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(text.encode()) + zero_bomb(8 << 30))  # 8 GiB in 8 MB
    report = await import_sources(store, [str(path)], method=method)
    src = report.sources[0]
    assert src.error is not None and "\n" not in src.error
    assert src.error.startswith("the gzip data inflates more than 100 times (")
    assert src.error.endswith("refused as a likely decompression bomb; the sales before it "
                              "are kept")
    assert src.bytes_read == 1 << 20 and path.stat().st_size > 8_000_000  # one chunk read
    assert src.rows_read == 300 + 1  # the zeros: one line too long
    assert src.skipped["line longer than 64 KiB"] == 1
    assert src.skipped["rows of a sale cut by the end of the file"] >= 1
    kept = await count(store)
    assert kept == src.sales_new > 100
    # the good file later: the sale cut before the bomb comes whole, the others are known
    total = await import_good(store, tmp_path, text, method)
    assert total == kept + 1


@pytest.mark.parametrize("method", METHODS)
async def test_the_size_cap_is_a_parameter(store: MemoryStore, tmp_path: Path,
                                           method: str) -> None:
    text = HEADER + "\n" + rows(20_000)  # 3.3 MB, read 1 MiB at a time
    path = tmp_path / "big.csv"
    path.write_text(text, encoding="utf-8")
    report = await import_sources(store, [str(path)], method=method,
                                  limits=Limits(max_size=2_000_000))
    src = report.sources[0]
    assert src.error == ("more than 2.0 MB once decompressed: refused (the limit for one "
                         "file); the sales before it are kept")
    assert 2_000 < src.sales_new == await count(store) and src.rows_read < 7_000
    assert await import_good(store, tmp_path, text, method) > src.sales_new


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("newline", [True, False])
async def test_a_10_mb_line_is_skipped(store: MemoryStore, tmp_path: Path, method: str,
                                       newline: bool) -> None:
    before, after = rows(300), rows(300, start=10_000)
    huge = "9" * (10 << 20)
    path = tmp_path / "long.csv"
    path.write_text(HEADER + "\n" + before + huge + ("\n" + after if newline else ""),
                    encoding="utf-8")
    report = await import_sources(store, [str(path)], method=method)
    src = report.sources[0]
    assert not report.failed
    assert src.skipped == {"line longer than 64 KiB": 1}
    assert src.rows_read == (601 if newline else 301)
    again = await import_sources(store, [str(path)], method=method)
    assert again.total("sales_new") == 0 and again.total("sales_known") == src.sales
    good = HEADER + "\n" + before + (after if newline else "")
    assert await import_good(store, tmp_path, good, method) == src.sales


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("packed", [False, True])
async def test_a_bom_and_crlf(store: MemoryStore, tmp_path: Path, method: str,
                              packed: bool) -> None:
    text = HEADER + "\n" + rows(1_000)
    data = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()
    path = tmp_path / ("windows.csv.gz" if packed else "windows.csv")
    path.write_bytes(gzip.compress(data) if packed else data)
    report = await import_sources(store, [str(path)], method=method)
    src = report.sources[0]
    assert not report.failed and not src.skipped and src.rows_read == 1_000
    assert await import_good(store, tmp_path, text, method) == src.sales_new > 400


def with_column(text: str, at: int) -> str:
    """Another column (`extra`) at index `at` of every line."""
    out = []
    for line in text.splitlines():
        fields = line.split(",")
        fields.insert(at, "extra" if line.startswith("id_mutation") else "x")
        out.append(",".join(fields))
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("method", METHODS)
async def test_a_changed_header(store: MemoryStore, tmp_path: Path, method: str) -> None:
    text = HEADER + "\n" + rows(600)
    variants = {"first": with_column(text, 0), "middle": with_column(text, 12),
                "last": with_column(text, 40)}
    swapped = text.replace("longitude,latitude", "latitude,longitude", 1)
    lines = swapped.splitlines()
    variants["reordered"] = "\n".join([lines[0]] + [
        ",".join([*line.split(",")[:-2], *reversed(line.split(",")[-2:])])
        for line in lines[1:]]) + "\n"
    for name, variant in variants.items():
        path = tmp_path / f"{name}.csv"
        path.write_text(variant, encoding="utf-8")
        report = await import_sources(store, [str(path)], method=method)
        assert not report.failed and report.total("rows_read") == 600, name
    assert await import_good(store, tmp_path, text, method) == await count(store)
    assert report.total("sales_known") == await count(store)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text(text.replace("id_parcelle", "parcelle", 1)
                       .replace("code_postal", "cp", 1), encoding="utf-8")
    missing = tmp_path / "missing.csv"  # the header lost a column, the rows did not
    missing.write_text(with_column(text, 0).replace("extra,", "", 1), encoding="utf-8")
    report = await import_sources(store, [str(renamed), str(missing)], method=method)
    assert report.sources[0].error == (
        "not a geo-DVF header: missing column(s) code_postal, id_parcelle")
    assert report.sources[1].error is None and report.sources[1].sales_new == 0
    assert report.sources[1].skipped == {"wrong number of columns (41 instead of 40)": 600}


@pytest.mark.parametrize("method", METHODS)
async def test_a_truncated_gzip_with_another_first_column(store: MemoryStore, tmp_path: Path,
                                                          method: str) -> None:
    text = with_column(HEADER + "\n" + rows(20_000), 0)
    packed = gzip.compress(text.encode(), compresslevel=1)
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(packed[: len(packed) // 2])
    report = await import_sources(store, [str(path)], method=method)
    src = report.sources[0]
    assert src.error == ("truncated gzip: the file ends before its compressed data does "
                         "(the sales before the cut are kept; import the whole file again "
                         "for the rest)")
    assert 5_000 < src.rows_read < 15_000 and src.sales_new == await count(store) > 3_000
    assert src.skipped["rows of a sale cut by the end of the file"] >= 1
    # no partial sale was stored: with the whole file, every kept sale is one of its own
    path.write_bytes(packed)
    whole = await import_sources(store, [str(path)], method=method)
    assert not whole.failed and whole.total("sales_known") == src.sales_new
    assert await count(store) == whole.total("sales")
    again = await import_sources(store, [str(path)], method=method)
    assert again.total("sales_new") == 0
