"""geo-DVF from the Internet: bytes → lines (jobs/dvf_stream.py), lines → sales (the Python
parser jobs/dvf_parse.py, the SQL path's line checker jobs/dvf_feed.py), and the whole
import (jobs/dvf_import.py) into PostgreSQL.

What this proves, on generated files (the real column layout, each row possibly broken:
a bad date, no id, another département, a field too many, a number that is not one,
hostile text in the text columns, junk lines between the rows) and arbitrary bytes:

- the line reader gives the same lines whatever the chunking, gzip (one or several
  members) or not, CRLF or LF, with or without a BOM; a line too long is dropped and
  counted, never silently; broken gzip stops with a one-line reason;
- nothing lost silently: every CSV record read is kept in a sale, counted outside the
  département, or skipped with its reason (rows_read = outside + skipped + kept), and
  every well-formed row of the département is in a sale; the SQL path's checker accounts
  for every record the same way;
- a number its column cannot hold (NaN, an infinity, past int32 or numeric(14, 2), a
  sale's total surface past int32) is refused with its reason, in both paths, never a
  crash nor a value stored;
- the whole import never raises for a file's own faults and stores every well-formed row.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from jobs.dvf_feed import Feed
from jobs.dvf_import import import_sources
from jobs.dvf_parse import SaleParser
from jobs.dvf_stream import Limits, LineReader, StreamStopped, Truncated
from memory.dvf import Sale
from memory.store import MemoryStore
from tests.fakes.dvf_server import HEADER, synthetic_rows
from tests.fuzz.support import fuzz, hostile_text

Draw = Callable[[st.SearchStrategy[Any]], Any]
COLUMNS = HEADER.split(",")
WIDTH = len(COLUMNS)
NUMBERS = ("valeur_fonciere", "surface_reelle_bati", "nombre_pieces_principales",
           "surface_terrain", "longitude", "latitude")
TEXTS = ("adresse_nom_voie", "nom_commune", "type_local", "nature_mutation", "adresse_suffixe")


# ------------------------------------------------------------------ bytes → lines
def read_all(data: bytes, cuts: list[int], limits: Limits) -> tuple[list[bytes], LineReader]:
    reader = LineReader(limits)
    lines: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        for block in reader.feed(data[start:cut]):
            lines += block.split(b"\n")[:-1] if block.endswith(b"\n") else block.split(b"\n")
        start = cut
    last = reader.finish()
    if last:
        lines.append(last.removesuffix(b"\n"))
    return [line for line in lines if line.strip(b"\n")], reader


def expected_lines(data: bytes, max_line: int) -> tuple[list[bytes], int]:
    """The reference: UTF-8 BOM dropped, CRLF → LF, lines over max_line dropped (counted)."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    lines = data.split(b"\n")
    kept = [line.removesuffix(b"\r") for line in lines]
    long = sum(1 for line in kept if len(line) > max_line)
    return [line for line in kept if len(line) <= max_line and line.strip(b"\n")], long


text_lines = st.lists(st.one_of(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")),
                                st.sampled_from([b"", b"\r", b"a" * 40, b"x,y,z", b"\xef\xbb\xbf"])),
                      max_size=12)


def same_lines(lines: list[bytes], crlf: bool, bom: bool, cuts: list[int], members: int) -> None:
    end = b"\r\n" if crlf else b"\n"
    data = (b"\xef\xbb\xbf" if bom else b"") + end.join(lines) + (end if lines else b"")
    limits = Limits(max_line=32)
    want, long = expected_lines(data, 32)
    if members:  # several gzip members, as `cat a.gz b.gz` makes
        size = len(data) // members + 1
        raw = b"".join(gzip.compress(data[i:i + size]) for i in range(0, len(data), size)) \
            if data else gzip.compress(b"")
    else:
        raw = data
    if not members and raw.startswith(b"\x1f\x8b"):
        return  # plain data that starts as gzip does: read as gzip (next test)
    got, reader = read_all(raw, [c for c in cuts if c <= len(raw)], limits)
    assert got == want
    assert reader.long_lines == long


@fuzz(200)
@example([b"a" * 32], True, False, [33], 0)  # a line of max_line bytes, its CRLF cut
@example([b"a" * 32], False, True, [35], 0)  # the first line after a BOM, cut
@given(text_lines, st.booleans(), st.booleans(), st.lists(st.integers(0, 2000), max_size=6),
       st.integers(0, 3))
def test_the_same_lines_whatever_the_chunking_and_gzip(
        lines: list[bytes], crlf: bool, bom: bool, cuts: list[int], members: int) -> None:
    same_lines(lines, crlf, bom, cuts, members)


@fuzz(200)
@given(st.binary(max_size=400), st.integers(0, 400), st.binary(max_size=40),
       st.lists(st.integers(0, 500), max_size=4))
def test_broken_gzip_stops_with_a_reason(data: bytes, at: int, junk: bytes, cuts: list[int]) -> None:
    raw = gzip.compress(data)
    raw = b"\x1f\x8b" + (raw[2:at] + junk + raw[at:])[: len(raw) + len(junk)]
    try:
        lines, _ = read_all(raw, [c for c in cuts if c <= len(raw)], Limits(max_line=64))
    except StreamStopped as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert all(len(line) <= 64 for line in lines)


@fuzz(20)
@given(st.integers(1, 5))
def test_a_decompression_bomb_is_refused(megabytes: int) -> None:
    bomb = gzip.compress(b"\n" * (megabytes << 20), compresslevel=9)
    limits = Limits(max_size=1 << 20, ratio_grace=1 << 19, max_ratio=50)
    with pytest.raises(StreamStopped, match="refused"):
        read_all(bomb, [], limits)


def test_a_gzip_cut_short_says_so() -> None:
    with pytest.raises(Truncated):
        read_all(gzip.compress(b"a,b\n" * 1000)[:-20], [], Limits())


# ------------------------------------------------------------------ rows → sales
BROKEN = ["date", "id", "outside", "width", "number", "text", "junk_line"]


@st.composite
def dvf_files(draw: Draw, bad_numbers: st.SearchStrategy[str] | None = None
              ) -> tuple[list[str], set[str]]:
    """Lines of a geo-DVF file (header first) and the parcels of its well-formed rows."""
    rows = [next(csv.reader([line])) for line in synthetic_rows(draw(st.integers(0, 12)))]
    lines, good = [HEADER], set()
    numbers = bad_numbers or st.sampled_from(["abc", "12,5", "1 200", "-", "0x10", "1e", "--1"])
    for i, row in enumerate(rows):
        row = list(row)
        row[COLUMNS.index("id_parcelle")] = f"P{i:05d}"  # each row its own parcel
        broken = draw(st.one_of(st.none(), st.none(), st.sampled_from(BROKEN)))
        if broken == "date":
            row[1] = draw(st.sampled_from(["2025-02-30", "", "14/03/2025", "2025-13-01"]))
        elif broken == "id":
            row[0] = ""
        elif broken == "outside":
            row[COLUMNS.index("code_departement")] = draw(st.sampled_from(["33", "2A", ""]))
        elif broken == "number":
            row[COLUMNS.index(draw(st.sampled_from(NUMBERS)))] = draw(numbers)
        elif broken == "text":  # quoted by the writer: still a good row
            row[COLUMNS.index(draw(st.sampled_from(TEXTS)))] = draw(hostile_text(30)).replace(
                "\x00", "").encode("utf-8", "replace").decode("utf-8")
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerow(row)
        # as the line reader gives it (CRLF → LF); a lone CR left in a quoted field makes
        # the csv module refuse the line (skipped with that reason): not a good row
        text = out.getvalue().removesuffix("\n").replace("\r\n", "\n")
        if broken == "width":
            text += ","
        if broken in (None, "text") and "\r" not in text:
            good.add(row[COLUMNS.index("id_parcelle")])
        lines += text.split("\n")
        if broken == "junk_line":  # a line of junk after this good row (no quote: it would
            if "\r" not in text:  # swallow the next lines)
                good.add(row[COLUMNS.index("id_parcelle")])
            junk = draw(hostile_text(60)).replace('"', "").replace("\x00", "")
            lines += junk.encode("utf-8", "replace").decode("utf-8").replace(
                "\r\n", "\n").split("\n")
    return lines, good


def parse(lines: list[str], chunk: int) -> tuple[list[Sale], SaleParser]:
    parser = SaleParser("fuzz.csv", departement="24")
    sales: list[Sale] = []
    for i in range(0, len(lines), chunk):
        sales += parser.feed(lines[i:i + chunk])
    return sales + parser.finish(), parser


def records(lines: list[str]) -> int:
    """The CSV records the lines hold (the csv module's count, blank ones aside)."""
    count = 0
    reader = csv.reader(lines[1:])
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return count
        except csv.Error:
            count += 1
            continue
        count += bool(row)


def every_row_accounted_for(lines: list[str], good: set[str], chunk: int) -> list[Sale]:
    sales, parser = parse(lines, chunk)
    kept = sum(len(s.parcelles) for s in sales)
    assert parser.rows_read == records(lines)
    assert parser.rows_read == parser.rows_outside + sum(parser.skipped.values()) + kept
    parcels = {p for s in sales for p in s.parcelles}
    assert good <= parcels  # every well-formed row is in a sale
    assert all(reason for reason in parser.skipped)
    return sales


def fits_its_columns(sale: Sale) -> None:
    """What ventes_dvf can hold and a price statistic can use: finite numbers in range."""
    if sale.valeur is not None:
        assert sale.valeur.is_finite() and abs(sale.valeur) < Decimal(10) ** 12
    for value in (sale.surface_bati, sale.surface_terrain, sale.pieces):
        assert value is None or -(2**31) <= value < 2**31
    for point in (sale.longitude, sale.latitude):
        assert point is None or math.isfinite(point)


@fuzz(200)
@given(dvf_files(), st.integers(1, 8))
def test_every_record_is_kept_outside_or_skipped_with_its_reason(
        file: tuple[list[str], set[str]], chunk: int) -> None:
    lines, good = file
    for sale in every_row_accounted_for(lines, good, chunk):
        fits_its_columns(sale)


quoted_breaks = st.lists(st.sampled_from(["LE BOURG", "\n", "EST", ",", '"', " ", "é"]),
                        max_size=8).map("".join)


@fuzz(100)
@example("LE BOURG\nEST", 1)
@given(st.one_of(quoted_breaks, hostile_text(30).map(
    lambda s: s.replace("\r", "").replace("\x00", "").encode("utf-8", "replace").decode(
        "utf-8"))), st.integers(1, 3))
def test_a_quoted_line_break_is_one_record_whatever_the_chunking(voie: str, chunk: int) -> None:
    row = next(csv.reader([next(synthetic_rows(1))]))
    row[COLUMNS.index("adresse_nom_voie")] = voie
    row[COLUMNS.index("id_parcelle")] = "P00000"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(row)
    lines = [HEADER, *out.getvalue().removesuffix("\n").split("\n")]
    every_row_accounted_for(lines, {"P00000"}, chunk)
    feed = Feed(COLUMNS, "24", False)  # the SQL path's checker, given the same blocks
    sent = b"".join(feed.block("".join(f"{line}\n" for line in lines[i:i + chunk]).encode())
                    for i in range(1, len(lines), chunk)) + feed.finish()
    # the record as the csv module reads the lines whole (a quoted line break is lost)
    assert list(csv.reader(io.StringIO(sent.decode("utf-8"), newline=""))) == list(
        csv.reader(lines[1:]))
    assert feed.rows == 1 and not feed.skipped


OUT_OF_RANGE = st.sampled_from(["inf", "-Infinity", "1e400", "NaN", "nan", "1e308", "3000000000",
                                "1e13", "99999999999999"])


@fuzz(60)
@example(("surface_reelle_bati", "inf"))
@example(("nombre_pieces_principales", "1e400"))
@example(("valeur_fonciere", "NaN"))
@example(("longitude", "inf"))
@example(("surface_reelle_bati", "3000000000"))
@example(("valeur_fonciere", "1e13"))
@given(st.tuples(st.sampled_from(NUMBERS), OUT_OF_RANGE))
def test_a_number_its_column_cannot_hold_is_refused_with_its_reason(bad: tuple[str, str]) -> None:
    row = next(csv.reader([next(synthetic_rows(1))]))  # a house: every number is used
    row[COLUMNS.index(bad[0])] = bad[1]
    sales = every_row_accounted_for([HEADER, ",".join(row)], set(), 1)
    for sale in sales:
        fits_its_columns(sale)
    if not sales:  # refused, saying which column
        _, parser = parse([HEADER, ",".join(row)], 1)
        assert [bad[0] in reason for reason in parser.skipped] == [True]


def test_a_total_its_column_cannot_hold_refuses_the_sale() -> None:
    rows = [next(csv.reader([line])) for line in synthetic_rows(3)][1:]  # a house, 2 rows
    assert rows[0][0] == rows[1][0]
    for i, row in enumerate(rows):
        row[COLUMNS.index("surface_reelle_bati")] = "2000000000"
        row[COLUMNS.index("lot1_numero")] = str(i)  # two dwellings: surfaces summed
    sales, parser = parse([HEADER, *(",".join(r) for r in rows)], 1)
    assert sales == []
    assert parser.skipped == {"unusable sale (surface_reelle_bati total out of range)": 2}


def quoted_cr_file() -> tuple[list[str], set[str]]:
    """One row whose street is a line break then a lone CR (quoted by the writer)."""
    row = next(csv.reader([next(synthetic_rows(1))]))
    row[COLUMNS.index("adresse_nom_voie")] = "\n\r"
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(row)
    return [HEADER, *out.getvalue().removesuffix("\n").split("\n")], set()


@fuzz(150)
@example(quoted_cr_file(), False)  # a field holding CR must be written back quoted
@given(dvf_files(), st.booleans())
def test_the_sql_paths_checker_accounts_for_every_record(
        file: tuple[list[str], set[str]], checked: bool) -> None:
    lines, good = file
    feed = Feed(COLUMNS, "24", checked)
    out = feed.block(("\n".join(lines[1:]) + "\n").encode("utf-8") if len(lines) > 1 else b"")
    out += feed.finish()
    sent = list(csv.reader(io.StringIO(out.decode("utf-8"), newline="")))
    assert feed.rows == len(sent) + sum(feed.skipped.values()) + feed.outside
    if checked:  # the rows PostgreSQL gets are the ones the Python parser keeps
        assert {r[COLUMNS.index("id_parcelle")] for r in sent} >= good


# ------------------------------------------------------------------ the whole import
@fuzz(8)
@given(dvf_files(), st.sampled_from(["sql", "copy"]))
async def test_the_import_stores_every_well_formed_row_and_never_raises(
        store: MemoryStore, tmp_path: Path, file: tuple[list[str], set[str]], method: str) -> None:
    lines, good = file
    path = tmp_path / "fuzz.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from tests.conftest import empty_tables
    await empty_tables(store.db)
    report = await import_sources(store, [str(path)], method=method)
    [source] = report.sources
    assert source.error is None
    from sqlalchemy import text
    async with store.db.engine.connect() as conn:
        stored = {p for (ps,) in await conn.execute(text("SELECT parcelles FROM ventes_dvf"))
                  for p in ps}
    assert good <= stored, (lines, source)


@fuzz(8)
@example(("valeur_fonciere", "1e13"), "sql")
@example(("surface_reelle_bati", "3000000000"), "copy")
@example(("longitude", "inf"), "sql")
@example(("valeur_fonciere", "NaN"), "copy")
@example(("valeur_fonciere", "NaN"), "sql")
@example(("nombre_pieces_principales", "1e400"), "sql")
@given(st.tuples(st.sampled_from(NUMBERS), OUT_OF_RANGE), st.sampled_from(["sql", "copy"]))
async def test_one_number_out_of_range_is_one_row_refused(
        store: MemoryStore, tmp_path: Path, bad: tuple[str, str], method: str) -> None:
    rows = [next(csv.reader([line])) for line in synthetic_rows(6)]
    rows[0][COLUMNS.index(bad[0])] = bad[1]  # a house alone in its sale: every number used
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([HEADER, *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    from tests.conftest import empty_tables
    await empty_tables(store.db)
    report = await import_sources(store, [str(path)], method=method)
    [source] = report.sources
    assert source.error is None
    from sqlalchemy import text
    async with store.db.engine.connect() as conn:
        bad_rows = await conn.scalar(text(
            "SELECT count(*) FROM ventes_dvf WHERE valeur = 'NaN' OR longitude IN "
            "('Infinity', '-Infinity', 'NaN') OR latitude IN ('Infinity', '-Infinity', 'NaN')"))
        stored = await conn.scalar(text("SELECT count(*) FROM ventes_dvf"))
    assert bad_rows == 0
    refused = sum(n for reason, n in source.skipped.items() if bad[0] in reason)
    fits = bad == ("valeur_fonciere", "3000000000")  # the one value its column holds
    assert refused == (0 if fits else 1) and stored == source.sales == (4 if fits else 3)
    assert source.rows_read == 6 and sum(source.skipped.values()) == refused


@pytest.mark.parametrize("method", ["sql", "copy"])
async def test_a_sale_whose_total_does_not_fit_is_refused(
        store: MemoryStore, tmp_path: Path, method: str) -> None:
    rows = [next(csv.reader([line])) for line in synthetic_rows(6)]
    for i in (1, 2):  # the two rows of a house on two cultures: two dwellings now
        rows[i][COLUMNS.index("surface_reelle_bati")] = "2000000000"
        rows[i][COLUMNS.index("lot1_numero")] = str(i)
    path = tmp_path / "big.csv"
    path.write_text("\n".join([HEADER, *(",".join(r) for r in rows)]) + "\n", encoding="utf-8")
    report = await import_sources(store, [str(path)], method=method)
    [source] = report.sources
    assert source.error is None
    assert source.skipped == {"unusable sale (surface_reelle_bati total out of range)": 2}
    assert source.sales == source.sales_new == 3
