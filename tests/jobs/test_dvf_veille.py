"""The DVF veille (jobs/dvf_veille.py) through the real engine: each postcode's first run
is a silent baseline, then the sales imported since the watermark in the configured
postcodes are reported once; the digest (jobs/dvf_digest.py) against golden files."""

from __future__ import annotations

import gzip
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from jobs.dvf_digest import render_dvf
from jobs.dvf_import import import_sources
from jobs.dvf_veille import DvfVeille
from jobs.engine import Engine
from jobs.types import SourceItem, VeilleRecord
from memory.store import MemoryStore
from tests.fakes import dvf_server
from tests.fakes.dvf_server import HEADER, FakeDvfFiles, synthetic_file, synthetic_rows
from tests.jobs.conftest import Clock, job_services

dvf_files_session = dvf_server.dvf_files_session
dvf_files = dvf_server.dvf_files
GOLDEN = Path(__file__).parent / "golden"
SECTORS = ["24260", "24330", "24510"]  # Le Bugue, Vergt, Limeuil (not Lalinde…)


async def sent(store: MemoryStore) -> list:
    async with store.db.sessions() as session:
        return list((await session.execute(text(
            "SELECT destinataire, sujet, texte FROM notifications ORDER BY id"))).all())


async def setup(store: MemoryStore, config: dict, **settings: str) -> tuple[Engine, Clock]:
    await store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
    clock = Clock(datetime(2026, 11, 30, 8, 0, tzinfo=UTC))
    await store.add_veille("dvf", "dvf", "0 9 * * 1", config=config, known_types=["dvf"])
    return Engine(job_services(store, clock, **settings)), clock


async def test_new_sales_since_the_watermark_reported_once(store: MemoryStore,
                                                           tmp_path: Path) -> None:
    engine, clock = await setup(store, {"codes_postaux": SECTORS})
    older = synthetic_file(tmp_path / "2024.csv", 600, year=2024)
    await import_sources(store, [str(older)])
    baseline = await engine.run("dvf", trigger="planifie")
    assert baseline.state == "ok" and baseline.new > 100
    assert await sent(store) == []  # the first import is not news
    mark = (await store.read_watermarks("dvf"))["importe_le"]

    clock.advance(days=7)
    newer = synthetic_file(tmp_path / "2025.csv", 90, year=2025, start=80_000)
    imported = await import_sources(store, [str(older), str(newer)])
    assert imported.sources[0].sales_new == 0
    expected = {s.cle for s in await store.sales_imported_since(
        datetime.fromisoformat(mark), SECTORS)}
    assert 10 < len(expected) < imported.sources[1].sales_new  # other postcodes left out
    run = await engine.run("dvf", trigger="planifie")
    assert (run.state, run.new) == ("ok", len(expected))
    assert {i.key for i in run.reported} == expected
    mails = await sent(store)
    assert [m.destinataire for m in mails] == ["agence@example.fr", "Ludo"]
    assert mails[0].sujet.startswith(f"Veille DVF : {len(expected)} nouvelles ventes dans "
                                     "vos secteurs")
    assert "Le Bugue (24260)" in mails[0].texte and "Lalinde" not in mails[0].texte
    assert (await store.read_watermarks("dvf"))["importe_le"] > mark

    clock.advance(days=7)
    again = await engine.run("dvf", trigger="planifie")
    assert (again.state, again.new) == ("ok", 0)
    assert len(await sent(store)) == 2


async def test_the_veille_can_import_the_release_itself(store: MemoryStore,
                                                        dvf_files: FakeDvfFiles) -> None:
    path = "/geo-dvf/latest/csv/{year}/departements/24.csv.gz"
    engine, clock = await setup(store, {"codes_postaux": SECTORS, "importer": True},
                                AXI_DVF_URL=dvf_files.url + path)
    dvf_files.put(path.format(year=2025), gzip.compress(
        "".join([HEADER + "\n", *synthetic_rows(200, year=2025)]).encode()))
    dry = await engine.run("dvf", dry_run=True)
    assert dry.state == "essai" and dvf_files.requests == []  # a dry run imports nothing
    first = await engine.run("dvf")
    assert first.state == "ok" and first.new > 20 and len(dvf_files.requests) == 5
    assert await sent(store) == []  # baseline
    clock.advance(days=7)
    dvf_files.put(path.format(year=2026), gzip.compress(
        "".join([HEADER + "\n", *synthetic_rows(40, year=2026, start=90_000)]).encode()))
    second = await engine.run("dvf")
    assert second.state == "ok" and 0 < second.new < 40
    assert len(await sent(store)) == 2
    dvf_files.fail(path.format(year=2026), 500)
    clock.advance(days=7)
    broken = await engine.run("dvf")
    assert broken.state == "partiel" and "HTTP 500" in (broken.error or "")


def golden_items() -> list[SourceItem]:
    def sale(key: str, cp: str, commune: str, **data: object) -> SourceItem:
        return SourceItem(key, cp, {"code_postal": cp, "commune": commune, "nature": "Vente",
                                    **data})
    return [
        sale("a", "24260", "Le Bugue", date="2025-03-14", prix="185000.00",
             adresse="12 RUE DU PORT", types=["Maison", "Dépendance"], surface_bati=104,
             pieces=5, surface_terrain=812),
        sale("b", "24260", "Le Bugue", date="2025-02-03", prix="72500.00",
             adresse="3B AV DE LA GARE", types=["Appartement"], surface_bati=41, pieces=2),
        sale("c", "24330", "Vergt", date="2025-04-01", prix=None, adresse="LE BOURG",
             types=[], surface_terrain=2300, nature="Vente terrain à bâtir"),
        sale("d", "24330", "Vergt", date="2025-04-09", prix="1.00",
             adresse="<b>5 CHE DES VIGNES</b> & Cie", types=["Local industriel. commercial "
                                                             "ou assimilé"]),
    ]


@pytest.mark.parametrize("part", ["subject", "text", "html", "summary"])
def test_digest_golden(part: str) -> None:
    veille = VeilleRecord(1, "dvf", "dvf", {}, "0 9 * * 1", {}, True)
    digest = render_dvf(veille, golden_items(), when=datetime(2026, 11, 30, 9, 0),
                        broken={"import DVF": "2026.csv.gz : HTTP 500"})
    assert digest is not None
    value = getattr(digest, part) + ("\n" if part in ("subject", "summary") else "")
    golden = GOLDEN / f"dvf_digest.{part}.txt"
    if os.environ.get("AXI_UPDATE_GOLDEN"):
        golden.write_text(value, encoding="utf-8")
    assert value == golden.read_text(encoding="utf-8")
    assert render_dvf(veille, [], when=datetime(2026, 11, 30), broken={}) is None
    assert DvfVeille().render(veille, [], when=datetime(2026, 11, 30), broken={}) is None
