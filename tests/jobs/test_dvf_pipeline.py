"""The SQL import in chunks (memory/dvf_pipeline.py) on the real database: chunks give the
same sales as the Python parser, a mutation found in two chunks is still one sale, a key
repeated across chunks is stored once (the first), a file cut short drops its last
mutation, and the unlogged tables of a killed import are dropped by the next one while
nothing of it is stored."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs.dvf_import import import_sources
from jobs.dvf_parse import column_indexes
from memory import dvf_pipeline
from memory.dvf import IMPORT_LOCK
from memory.store import MemoryStore
from tests.fakes import dvf_server
from tests.fakes.dvf_server import HEADER, FakeDvfFiles, synthetic_rows

dvf_files_session = dvf_server.dvf_files_session
dvf_files = dvf_server.dvf_files

EXCERPT = Path(__file__).parent / "data" / "geo-dvf_69043_2025_excerpt.csv"
SALES = ("SELECT cle, date_mutation, nature, valeur, code_postal, code_commune, nom_commune, "
         "adresse, parcelles, types_locaux, surface_bati, surface_terrain, pieces, longitude, "
         "latitude, source FROM ventes_dvf")
TABLES = ("SELECT relname FROM pg_class WHERE relkind = 'r' "
          "AND relname ~ '^dvf_(stage|sales)_' ORDER BY relname")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of ~6 KB: a few dozen rows each."""
    monkeypatch.setattr(dvf_pipeline, "CHUNK_BYTES", 6_000)


async def fetch(store: MemoryStore, sql: str) -> list[tuple]:
    async with store.db.engine.connect() as conn:
        return [tuple(r) for r in (await conn.execute(text(sql))).all()]


async def sales(store: MemoryStore) -> dict[str, tuple]:
    return {r[0]: r for r in await fetch(store, SALES)}


async def both_ways(store: MemoryStore, source: str, departement: str
                    ) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """The sales of the Python parser, then of the SQL import (in chunks)."""
    await import_sources(store, [source], departement=departement, method="copy")
    python = await sales(store)
    async with store.db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM ventes_dvf"))
    await import_sources(store, [source], departement=departement)
    return python, await sales(store)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("which", ["synthetic", "excerpt", "one mutation far apart"])
async def test_chunks_give_the_sales_of_the_python_parser(store: MemoryStore, tmp_path: Path,
                                                          which: str) -> None:
    path = tmp_path / "file.csv"
    if which == "synthetic":
        path.write_text(HEADER + "\n" + "".join(synthetic_rows(1_500)), encoding="utf-8")
        dep = "24"
    else:
        lines = EXCERPT.read_text(encoding="utf-8").splitlines()
        rows = lines[1:]
        if which == "one mutation far apart":  # its rows in the first and the last chunk
            rows.append(rows.pop(0))
        path.write_text("\n".join([lines[0], *rows]) + "\n", encoding="utf-8")
        dep = "69"
    python, sql = await both_ways(store, str(path), dep)
    assert len(sql) > 40 and sql == python  # every column
    assert await fetch(store, TABLES) == []  # the import's tables dropped


@pytest.mark.usefixtures("small_chunks")
async def test_a_key_repeated_across_chunks_is_stored_once(store: MemoryStore,
                                                           tmp_path: Path) -> None:
    """A sale listed again under another id_mutation, chunks later (another street name:
    not part of the key): one row, the first in the file."""
    lines = list(synthetic_rows(300))
    again = [line.replace("2025-1,", "2025-99999,", 1).replace("AV DE LA GARE", "RUE NEUVE")
             for line in lines if line.startswith("2025-1,")]
    path = tmp_path / "twice.csv"
    path.write_text(HEADER + "\n" + "".join(lines + again), encoding="utf-8")
    report = await import_sources(store, [str(path)])
    src = report.sources[0]
    assert not report.failed and src.sales == src.sales_new + 1
    stored = await fetch(store, "SELECT count(*), count(DISTINCT cle) FROM ventes_dvf")
    assert stored == [(src.sales_new, src.sales_new)]
    fields = lines[0].split(",")
    first = await fetch(store, "SELECT adresse FROM ventes_dvf WHERE parcelles = "
                               f"ARRAY['{fields[15]}']")
    assert first == [(f"{fields[5]} AV DE LA GARE",)]


@pytest.mark.usefixtures("small_chunks")
async def test_a_cut_file_in_chunks_drops_its_last_mutation(store: MemoryStore,
                                                            dvf_files: FakeDvfFiles) -> None:
    data = "".join([HEADER + "\n", *synthetic_rows(2_000)]).encode()
    url = dvf_files.put("/cut/24.csv.gz", gzip.compress(data, compresslevel=1))
    dvf_files.truncate("/cut/24.csv.gz", 0.5)
    python, sql = await both_ways(store, url, "24")
    assert len(sql) > 300 and sql == python


async def blocks(lines: list[str], hold: asyncio.Event) -> AsyncIterator[bytes]:
    """The lines in blocks of 50, stopping midway until `hold` is set."""
    for i in range(0, len(lines), 50):
        if i == len(lines) // 2:
            await hold.wait()
        yield "".join(lines[i:i + 50]).encode()


@pytest.mark.usefixtures("small_chunks")
async def test_a_killed_import_stores_nothing_and_its_tables_go(store: MemoryStore,
                                                                tmp_path: Path) -> None:
    """The import's copying and writing connections killed midway (as when its process
    is), the writer holding the import lock: nothing stored; the unlogged tables it had
    committed are dropped by the next import, not another live import's."""
    header = HEADER.split(",")
    lines = list(synthetic_rows(2_000))
    hold = asyncio.Event()
    running = asyncio.create_task(store.load_dvf_csv(
        len(header), column_indexes(header), blocks(lines, hold), departement="24",
        source="24.csv", cut=lambda: None))
    writer = None
    for _ in range(400):  # until chunks are built and the writer holds the import lock
        await asyncio.sleep(0.05)
        writer = (await fetch(store, "SELECT pid FROM pg_locks WHERE locktype = 'advisory' "
                                     f"AND objid = {IMPORT_LOCK} AND granted") or [(None,)])[0][0]
        if writer is not None and len(await fetch(store, TABLES)) >= 4:
            break
    assert writer is not None
    tag = (await fetch(store, TABLES))[0][0].split("_")[2]
    async with store.db.engine.connect() as conn:  # the copying and the writing connections
        await conn.execute(text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                f"WHERE pid IN ({tag}, {writer})"))
    hold.set()
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises
        await running
    await store.db.engine.dispose()  # the pool's dead connections
    assert await fetch(store, "SELECT count(*) FROM ventes_dvf") == [(0,)]
    left = [name for (name,) in await fetch(store, TABLES)]
    assert len(left) >= 4 and {name.split("_")[2] for name in left} == {tag}
    # a live import's table (its connection open) stays
    async with store.db.engine.connect() as other:
        pid = await other.scalar(text("SELECT pg_backend_pid()"))
        await other.execute(text(f"CREATE UNLOGGED TABLE dvf_stage_{pid}_0 (c0 text)"))
        await other.commit()
        path = tmp_path / "24.csv"
        path.write_text(HEADER + "\n" + "".join(lines), encoding="utf-8")
        report = await import_sources(store, [str(path)])
        assert not report.failed and report.total("sales_new") > 500
        assert await fetch(store, TABLES) == [(f"dvf_stage_{pid}_0",)]
        await other.execute(text(f"DROP TABLE dvf_stage_{pid}_0"))
        await other.commit()


def test_chunks_end_where_a_mutation_does() -> None:
    """The chunker's cuts: never inside a mutation; `scattered` once a mutation's rows
    are in two chunks."""
    lines = [f"{m},x\n".encode() for m in (1, 1, 2, 2, 2, 3, 4, 4, 5)]

    async def run(rows: list[bytes]) -> tuple[list[list[bytes]], bool]:
        async def data() -> AsyncIterator[bytes]:
            for i in range(0, len(rows), 2):
                yield b"".join(rows[i:i + 2])

        chunker = dvf_pipeline.Chunker(data(), 0, 5)
        chunks = []
        while not chunker.ended:
            chunks.append([b async for b in chunker.blocks()])
        return chunks, chunker.scattered

    chunks, scattered = asyncio.run(run(lines))
    ids = [{line.split(b",")[0] for line in b"".join(c).splitlines()} for c in chunks]
    assert len(chunks) > 2 and not scattered
    assert all(a.isdisjoint(b) for i, a in enumerate(ids) for b in ids[i + 1:])
    assert b"".join(b"".join(c) for c in chunks) == b"".join(lines)
    assert asyncio.run(run([*lines, b"1,y\n"]))[1]
