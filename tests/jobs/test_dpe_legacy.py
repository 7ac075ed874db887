"""The DPEs the earlier Axi already reported, once imported (`axi import legacy`), are
never reported again by the DPE veille: its real run through the engine, against the
loopback ADEME API that still publishes them, reports only the DPE it never saw."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from bot.legacy_import import import_legacy
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
CONFIG = {"dataset": "dpe03existant", "codes_postaux": ["24260", "24380"],
          "prix_m2": {"24260": 1800, "24380": 1300}, "recouvrement_jours": 60, "ras": True}


async def test_imported_dpes_are_never_reported_again(store: MemoryStore, ademe_server: Any,
                                                      communes_server: Any,
                                                      tmp_path: Path) -> None:
    await store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
    await store.add_veille("dpe", "dpe", "0 8 * * *", config=CONFIG,
                           known_types=kinds.known_types())
    (tmp_path / "dpe_vus.json").write_text('["2424e0000001a", "2424E0000002B"]',
                                           encoding="utf-8")
    (tmp_path / "dpe_veille_vus.csv").write_text(
        "numero_dpe,date_reception,code_postal,commune,etiquette_dpe,trello_card_url,"
        "date_traitement\n2424E0000004D,2026-11-21,24380,Vergt,F,,2026-11-22 08:00:13\n",
        encoding="utf-8")
    report = await import_legacy(store, [tmp_path], timezone="Europe/Paris")
    assert report.written and report.counts() == {"imported": 3, "skipped": 0,
                                                  "unreadable": 0}

    ademe_server.add([dpe_row("2424E0000001A", date(2026, 11, 20), "24260", classe="G"),
                      dpe_row("2424E0000002B", date(2026, 11, 21), "24260", classe="F"),
                      dpe_row("2424E0000004D", date(2026, 11, 21), "24380", classe="F"),
                      dpe_row("2424E0000009Z", date(2026, 11, 22), "24260", classe="G")])
    clock = Clock(datetime(2026, 12, 1, 7, 0, tzinfo=UTC))
    services = job_services(store, clock, AXI_ADEME_API_URL=ademe_server.url,
                            AXI_GEO_API_URL=communes_server.url,
                            AXI_ANNUAIRE_API_URL=communes_server.url)
    run = await Engine(services).run("dpe")
    assert run.state == "ok" and run.seen == 4, run.error
    assert run.new == 1 and [i.key for i in run.reported] == ["2424E0000009Z"]
    assert run.digest is not None and "2424E0000001A" not in run.digest.text
