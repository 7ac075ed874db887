"""The DPE veille end to end through the engine (real PostgreSQL, loopback ADEME, geo API
and annuaire): a run reports each new DPE once with its card, stores the watermarks, and
the next run — whose window overlaps the first by 60 days — reports only what is new."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from jobs import kinds
from jobs.engine import Engine
from memory.store import MemoryStore
from tests.fakes import ademe_server as _ademe
from tests.fakes import communes_server as _communes
from tests.fakes.ademe_server import dpe_row
from tests.jobs.conftest import Clock, job_services

ademe_server_session, ademe_server = _ademe.ademe_server_session, _ademe.ademe_server
communes_server_session = _communes.communes_server_session
communes_server = _communes.communes_server
CONFIG = {"dataset": "dpe03existant", "codes_postaux": ["24260", "24510"],
          "prix_m2": {"24260": 1800, "24510": 1600}, "fourchette": 0.15,
          "recouvrement_jours": 60, "ras": True, "taille_page": 2}


async def test_dpe_runs_report_each_dpe_once(store: MemoryStore, ademe_server: Any,
                                             communes_server: Any) -> None:
    await store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
    clock = Clock(datetime(2026, 12, 1, 7, 0, tzinfo=UTC))
    services = job_services(store, clock, AXI_ADEME_API_URL=ademe_server.url,
                            AXI_GEO_API_URL=communes_server.url,
                            AXI_ANNUAIRE_API_URL=communes_server.url)
    await store.add_veille("dpe", "dpe", "0 8 * * *", config=CONFIG,
                           known_types=kinds.known_types())
    ademe_server.add([dpe_row(f"2624E00000{i:02d}", date(2026, 11, 20 + i), "24260",
                              classe="FG"[i % 2]) for i in range(3)])
    ademe_server.add([dpe_row("2624E0000100", date(2026, 11, 25), "24510", classe="C")])

    first = await Engine(services).run("dpe")
    assert first.state == "ok" and first.new == 4, first.error
    assert first.digest is not None
    assert first.digest.subject == "Veille DPE du 1er décembre 2026 : 4 nouveaux DPE dont 3 passoires"
    assert len(first.digest.attachments) == 4
    assert "Mairie - Le Bugue, 05 53 07 20 00" in first.digest.text
    assert await store.read_watermarks("dpe") == {
        "reception": "2026-11-25", "reception:24260": "2026-11-22", "reception:24510": "2026-11-25"}

    clock.advance(days=1)
    ademe_server.add([dpe_row("2624E0000003", date(2026, 12, 1), "24260", classe="G")])
    second = await Engine(services).run("dpe")
    assert second.state == "ok" and second.new == 1
    assert second.digest is not None and [i.key for i in second.reported] == ["2624E0000003"]
    assert all(r["date_reception_dpe_gte"] in ("2026-09-23", "2026-09-26")
               for r in ademe_server.requests[-2:] if "after" not in r)

    clock.advance(days=1)
    third = await Engine(services).run("dpe")
    assert third.new == 0 and third.digest is not None
    assert third.digest.subject == "Veille DPE du 3 décembre 2026 : RAS"
