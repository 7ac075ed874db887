"""The geo-DVF import (jobs/dvf_import.py, memory/dvf.py) on the real database: idempotent,
gzip or plain, files or the loopback files.data.gouv.fr, and its failures — a changed
header, a truncated gzip, 404 and 500 — reported without losing what was read."""

from __future__ import annotations

import asyncio
import gzip
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs.dvf_import import default_sources, import_sources
from memory.store import MemoryStore
from tests.fakes import dvf_server
from tests.fakes.dvf_server import HEADER, FakeDvfFiles, synthetic_file, synthetic_rows

dvf_files_session = dvf_server.dvf_files_session
dvf_files = dvf_server.dvf_files

EXCERPT = Path(__file__).parent / "data" / "geo-dvf_69043_2025_excerpt.csv"
YEAR_PATH = "/geo-dvf/latest/csv/{year}/departements/24.csv.gz"


async def count(store: MemoryStore) -> int:
    return int((await store.dvf_summary())["ventes"])


@pytest.mark.parametrize("method", ["copy", "unnest"])
async def test_reimport_is_idempotent(store: MemoryStore, tmp_path: Path, method: str) -> None:
    path = synthetic_file(tmp_path / "24.csv", 3_000)
    first = await import_sources(store, [str(path)], method=method)
    src = first.sources[0]
    assert not first.failed and src.rows_read == 3_000 and not src.skipped
    assert src.sales == src.sales_new == await count(store) > 1_000
    again = await import_sources(store, [str(path)], method=method)
    assert again.total("sales_new") == 0 and again.total("sales_known") == src.sales
    assert await count(store) == src.sales


async def test_gzip_and_plain_give_the_same_sales(store: MemoryStore, tmp_path: Path) -> None:
    plain = synthetic_file(tmp_path / "24.csv", 2_000)
    packed = tmp_path / "24.csv.gz"
    # two gzip members, as `cat a.gz b.gz` makes: one file
    data = plain.read_bytes()
    packed.write_bytes(gzip.compress(data[:50_000]) + gzip.compress(data[50_000:]))
    first = await import_sources(store, [str(packed)])
    assert not first.failed and first.total("rows_read") == 2_000
    again = await import_sources(store, [str(plain)])
    assert again.total("sales_new") == 0 and again.total("sales") == first.total("sales")


async def test_the_real_excerpt_and_the_lookups(store: MemoryStore) -> None:
    report = await import_sources(store, [str(EXCERPT)], departement="69")
    assert report.total("sales_new") == 42 and report.total("rows_read") == 87
    before = datetime.now(UTC)
    fresh = await store.sales_imported_since(None, ["69630"])
    assert len(fresh) == 42 and await store.sales_imported_since(before, ["69630"]) == []
    assert await store.sales_imported_since(None, ["24260"]) == []
    # by address (any case) — the most recent sale there
    sale = await store.last_sale_near("69043", "2 rue Favre Garin")
    assert sale is not None and str(sale.date_mutation) == "2025-05-05"
    assert sale.distance_m is None and sale.types_locaux == ["Appartement"]
    # by point: 20 m away from 100 RTE DU PONT DE CHENE
    near = await store.last_sale_near("69043", "100 route du Pont de Chêne",
                                      4.739748 + 0.00025, 45.727321)
    assert near is not None and near.adresse == "100 RTE DU PONT DE CHENE"
    assert near.distance_m is not None and 15 < near.distance_m < 25
    assert await store.last_sale_near("69043", None, 4.70, 45.60) is None
    assert await store.last_sale_near("24067", "2 RUE FAVRE GARIN") is None


async def test_from_the_loopback_server_with_failures(store: MemoryStore,
                                                      dvf_files: FakeDvfFiles) -> None:
    good = "".join([HEADER + "\n", *synthetic_rows(1_500)]).encode()
    ok_url = dvf_files.put(YEAR_PATH.format(year=2024), gzip.compress(good))
    plain_url = dvf_files.put("/plain/24.csv", good)
    missing = dvf_files.url + "/nothing/24.csv.gz"
    broken = dvf_files.fail("/down/24.csv.gz", 500)
    report = await import_sources(store, [ok_url, missing, broken, plain_url])
    by = {s.source: s for s in report.sources}
    assert by[ok_url].error is None and by[ok_url].sales_new > 500
    assert by[plain_url].sales_new == 0 and by[plain_url].sales_known == by[ok_url].sales
    assert by[missing].error == "not found (HTTP 404)"
    assert by[broken].error == "HTTP 500"
    assert {s.source for s in report.failed} == {missing, broken}


async def test_default_years_skip_one_not_published(store: MemoryStore,
                                                    dvf_files: FakeDvfFiles) -> None:
    template = dvf_files.url + YEAR_PATH
    urls = default_sources(template, datetime(2026, 3, 1))
    assert urls == [template.replace("{year}", str(y)) for y in range(2022, 2027)]
    for year in range(2022, 2026):
        rows = synthetic_rows(300, year=year, start=year * 1_000)
        dvf_files.put(YEAR_PATH.format(year=year),
                      gzip.compress("".join([HEADER + "\n", *rows]).encode()))
    report = await import_sources(store, urls, default=True)
    assert not report.failed and report.total("rows_read") == 1_200
    assert report.sources[-1].note == "not found (HTTP 404): not published yet, skipped"


async def test_a_changed_header_is_a_clear_error(store: MemoryStore, tmp_path: Path) -> None:
    path = tmp_path / "changed.csv"
    path.write_text(HEADER.replace("valeur_fonciere", "prix") + "\n"
                    + "".join(synthetic_rows(50)), encoding="utf-8")
    other = synthetic_file(tmp_path / "ok.csv", 50)
    report = await import_sources(store, [str(path), str(other), str(tmp_path / "none.csv")])
    assert report.sources[0].error == (
        "not a geo-DVF header: missing column(s) valeur_fonciere")
    assert report.sources[1].error is None and report.sources[1].sales_new > 0
    assert report.sources[2].error == "No such file or directory"
    assert await count(store) == report.sources[1].sales_new


async def test_a_truncated_gzip_keeps_the_rows_before(store: MemoryStore,
                                                      dvf_files: FakeDvfFiles) -> None:
    data = "".join([HEADER + "\n", *synthetic_rows(20_000)]).encode()
    url = dvf_files.put("/cut/24.csv.gz", gzip.compress(data, compresslevel=1))
    dvf_files.truncate("/cut/24.csv.gz", 0.5)
    report = await import_sources(store, [url])
    src = report.sources[0]
    assert src.error == ("truncated gzip: the file ends before its compressed data does "
                         "(the sales before the cut are kept; import the whole file again "
                         "for the rest)")
    assert 5_000 < src.rows_read < 15_000
    assert src.skipped["truncated last line"] == 1
    assert src.skipped["rows of a sale cut by the end of the file"] >= 1
    kept = await count(store)
    assert kept == src.sales_new > 3_000
    # the whole file later: the sales before the cut are known, the others new
    dvf_files.cuts.clear()
    whole = await import_sources(store, [url])
    assert whole.total("sales_known") == kept and not whole.failed
    assert await count(store) == whole.total("sales")


async def test_departement_filter(store: MemoryStore, tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(HEADER + "\n" + "".join(synthetic_rows(400, departement="24"))
                    + "".join(synthetic_rows(200, departement="47", start=50_000)),
                    encoding="utf-8")
    report = await import_sources(store, [str(path)])
    assert report.total("rows_outside") == 200 and report.total("rows_read") == 600
    dordogne = await count(store)
    everything = await import_sources(store, [str(path)], departement=None)
    assert everything.total("sales_known") == dordogne
    assert everything.total("sales_new") > 0


async def _all_sales(store: MemoryStore) -> dict[str, tuple]:
    async with store.db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT cle, date_mutation, nature, valeur, code_postal, code_commune, nom_commune, "
            "adresse, parcelles, types_locaux, surface_bati, surface_terrain, pieces, "
            "longitude, latitude, source FROM ventes_dvf"))).all()
    return {r[0]: tuple(r) for r in rows}


async def _both_ways(store: MemoryStore, path: Path, departement: str | None
                     ) -> tuple[dict[str, tuple], dict[str, tuple]]:
    await import_sources(store, [str(path)], departement=departement, method="copy")
    python = await _all_sales(store)
    async with store.db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM ventes_dvf"))
    report = await import_sources(store, [str(path)], departement=departement, method="sql")
    assert not report.failed and report.total("sales_new") == len(python)
    return python, await _all_sales(store)


@pytest.mark.parametrize("which", ["excerpt", "synthetic", "shuffled excerpt"])
async def test_sql_and_python_give_the_same_sales(store: MemoryStore, tmp_path: Path,
                                                  which: str) -> None:
    if which == "excerpt":
        path, dep = EXCERPT, "69"
    elif which == "synthetic":
        path, dep = synthetic_file(tmp_path / "24.csv", 4_000), "24"
    else:  # a mutation's rows apart, several parcels, lots and cultures: the exact path
        lines = EXCERPT.read_text(encoding="utf-8").splitlines()
        rows = lines[1:]
        random.Random(3).shuffle(rows)
        path, dep = tmp_path / "shuffled.csv", "69"
        path.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
    python, sql = await _both_ways(store, path, dep)
    assert sql.keys() == python.keys() and len(sql) > 40
    assert sql == python  # every column


async def test_sql_import_skips_broken_lines_with_their_reason(store: MemoryStore,
                                                               tmp_path: Path) -> None:
    lines = EXCERPT.read_text(encoding="utf-8").splitlines()
    broken = [
        lines[1][:60],                                        # cut short
        lines[1].replace("2025-01-03", "2025-13-45"),         # impossible date
        lines[4].replace(",205000,", ",205 000€,"),           # not a number
        lines[7].replace(",4.74319,", ",est,"),               # bad longitude
        ",".join(["", *lines[1].split(",")[1:]]),             # no id_mutation
        "",                                                   # blank line: ignored
        '"2025-1","2025-01-03",x',                            # quoted, too short
    ]
    path = tmp_path / "broken.csv"
    path.write_text("\n".join([lines[0], *broken, *lines[1:]]) + "\n", encoding="utf-8")
    report = await import_sources(store, [str(path)], departement="69")
    src = report.sources[0]
    assert not report.failed and src.sales_new == 42 and src.rows_read == 87 + 6
    assert src.skipped == {
        "wrong number of columns (8 instead of 40)": 1, "bad date_mutation": 1,
        "valeur_fonciere is not a number": 1, "longitude is not a number": 1,
        "no id_mutation": 1, "wrong number of columns (3 instead of 40)": 1}
    # only the column count wrong: PostgreSQL reads the rest, no second pass
    path.write_text("\n".join([lines[0], broken[0], *lines[1:]]) + "\n", encoding="utf-8")
    again = await import_sources(store, [str(path)], departement="69")
    assert again.sources[0].skipped == {"wrong number of columns (8 instead of 40)": 1}
    assert again.total("sales_known") == 42


@pytest.mark.parametrize("method", ["sql", "copy"])
async def test_a_sale_listed_twice_is_stored_once(store: MemoryStore, tmp_path: Path,
                                                  method: str) -> None:
    """DVF lists some sales twice under two id_mutation: one key, one row, the first."""
    lines = list(synthetic_rows(200))
    twice = [line.replace("2025-1,", "2025-99999,", 1) for line in lines
             if line.startswith("2025-1,")]
    path = tmp_path / "twice.csv"
    path.write_text(HEADER + "\n" + "".join(lines + twice), encoding="utf-8")
    report = await import_sources(store, [str(path)], method=method)
    src = report.sources[0]
    assert not report.failed and src.sales == src.sales_new + 1
    assert await count(store) == src.sales_new
    async with store.db.engine.connect() as conn:
        mutations = await conn.scalar(text("SELECT count(DISTINCT cle) FROM ventes_dvf"))
    assert mutations == src.sales_new


async def test_two_imports_at_once(store: MemoryStore, tmp_path: Path) -> None:
    """Imports of overlapping files at the same time, both paths: one waits for the other
    (the import lock), none fails, every sale once."""
    a = synthetic_file(tmp_path / "a.csv", 6_000)
    b = synthetic_file(tmp_path / "b.csv", 6_000, start=1_000)
    reports = await asyncio.gather(
        import_sources(store, [str(a)]), import_sources(store, [str(b)]),
        import_sources(store, [str(a)], method="copy"))
    assert not any(r.failed for r in reports)
    assert await count(store) == sum(r.total("sales_new") for r in reports)
    whole = await import_sources(store, [str(a), str(b)])
    assert whole.total("sales_new") == 0
