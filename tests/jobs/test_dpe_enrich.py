"""The DPE enrichment on a real PostgreSQL (sales inserted into ventes_dvf, the commune
cache) and a loopback geo API + annuaire: the last sale by normalized address or within
50 m, the town hall (a "mairie déléguée" skipped, cached 30 days, a failure never failing
the run), the price range, the links and the priority."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bot.config import Settings
from jobs.dpe import DpeVeille
from jobs.dpe_rows import parse_line
from jobs.types import RunContext, SourceItem, VeilleRecord
from memory.store import MemoryStore
from tests.fakes import communes_server as _fake
from tests.fakes.ademe_server import dpe_row

communes_server_session = _fake.communes_server_session
communes_server = _fake.communes_server

NOW = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
CONFIG = {"prix_m2": {"24260": 1800, "24510": 1600}, "fourchette": 0.15,
          "poids": {"passoire": 50, "classe_e": 20, "recu_30j": 30, "recu_60j": 15,
                    "vente_avant_2022": 20, "aucune_vente": 10},
          "seuils": {"P1": 80, "P2": 50}}
BUGUE = (44.918, 0.927)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0) as client:
        yield client


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch: Any) -> None:
    async def instant(_seconds: float) -> None:
        return None

    monkeypatch.setattr("jobs.dpe_http._sleep", instant)


def context(store: Any, fake: Any, http: httpx.AsyncClient, *, dry_run: bool = False) -> RunContext:
    settings = Settings(_env_file=None, AXI_GEO_API_URL=fake.url,  # type: ignore[call-arg]
                        AXI_ANNUAIRE_API_URL=fake.url)
    return RunContext(veille=VeilleRecord(1, "dpe", "dpe", CONFIG, "0 8 * * *", {}, True),
                      http=http, store=store, settings=settings, now=NOW, dry_run=dry_run)


def item(numero: str, **kwargs: Any) -> SourceItem:
    data = parse_line(dpe_row(numero, kwargs.pop("reception", date(2026, 11, 20)),
                              kwargs.pop("postcode", "24260"), **kwargs))
    assert data is not None
    return SourceItem(numero, data["code_postal"], data)


async def add_sale(store: MemoryStore, cle: str, day: str, valeur: int, adresse: str | None,
                   point: tuple[float, float] | None = None, commune: str = "24067") -> None:
    async with store.db.sessions.begin() as session:
        await session.execute(text(
            "INSERT INTO ventes_dvf (cle, date_mutation, nature, valeur, code_postal, "
            "code_commune, nom_commune, adresse, parcelles, types_locaux, surface_bati, "
            "latitude, longitude) VALUES (:cle, :d, 'Vente', :v, '24260', :cc, 'Le Bugue', "
            ":a, ARRAY['240670000A0123'], ARRAY['Maison'], 110, :lat, :lon)"),
            {"cle": cle.ljust(64, "0"), "d": date.fromisoformat(day), "v": valeur, "cc": commune,
             "a": adresse, "lat": point[0] if point else None,
             "lon": point[1] if point else None})


async def test_last_sale_by_address_then_by_distance(store: MemoryStore, communes_server: Any,
                                                     http: Any) -> None:
    await add_sale(store, "a1", "2012-03-01", 90_000, "12 R DE LA PAIX")
    await add_sale(store, "a2", "2019-07-15", 150_000, "12 RUE DE LA PAIX")  # the latest
    await add_sale(store, "a3", "2023-01-01", 300_000, "12 RUE DE LA PAIX", commune="24240")
    await add_sale(store, "b1", "2024-05-02", 210_000, "LA BORIE", (44.9183, 0.9270))  # ~33 m
    await add_sale(store, "b2", "2010-05-02", 80_000, "LES CHAMPS", (44.9186, 0.9270))  # ~67 m
    new = [
        item("BYADDRESS", address="12 Rue de la Paix 24260 Le Bugue", point=(45.5, 1.5)),
        item("NEARBY", address="Lieu-dit Inconnu 24260 Le Bugue", point=BUGUE),
        item("NOTHING", address="1 Impasse Perdue 24260 Le Bugue", point=(44.95, 0.95),
             classe="E"),
    ]
    out = {i.key: i.data for i in await DpeVeille().enrich(context(store, communes_server, http),
                                                            new)}
    sale = out["BYADDRESS"]["derniere_vente"]
    assert (sale["date"], sale["valeur"], sale["distance_m"]) == ("2019-07-15", 150_000, None)
    assert sale["types_locaux"] == ["Maison"] and sale["surface_bati"] == 110
    assert out["BYADDRESS"]["priorite"] == "P1" and out["BYADDRESS"]["points"] == 100
    near = out["NEARBY"]["derniere_vente"]
    assert near["date"] == "2024-05-02" and 30 < near["distance_m"] < 40
    assert out["NEARBY"]["priorite"] == "P1" and out["NEARBY"]["points"] == 80
    assert out["NOTHING"]["derniere_vente"] is None
    assert out["NOTHING"]["raisons"] == ["classe E (+20)", "DPE reçu il y a 11 j (+30)",
                                         "aucune vente connue (+10)"]
    assert out["NOTHING"]["priorite"] == "P2"
    assert out["NOTHING"]["estimation"] == {"bas": 145_000, "haut": 197_000, "prix_m2": 1800}
    assert out["NOTHING"]["liens"]["carte"].startswith("https://www.openstreetmap.org/?mlat=44.95")


async def test_without_dvf_no_sale_is_claimed(store: MemoryStore, communes_server: Any,
                                              http: Any) -> None:
    [out] = await DpeVeille().enrich(context(store, communes_server, http), [item("X", classe="G")])
    assert "derniere_vente" not in out.data  # DVF never imported: no "+10 aucune vente"
    assert out.data["points"] == 80


async def test_town_hall_skips_the_delegated_one_and_is_cached(
        store: MemoryStore, communes_server: Any, http: Any) -> None:
    ctx = context(store, communes_server, http)
    [out] = await DpeVeille().enrich(ctx, [item("M1")])
    assert out.data["mairie"] == {"nom": "Mairie - Le Bugue", "telephone": "05 53 07 20 00",
                                  "courriel": "mairie@ville-lebugue.fr",
                                  "site": "https://www.mairie-24067.fr"}
    assert len(communes_server.requests) == 2  # geo, then the annuaire
    assert 'code_insee_commune%3D%2224067%22' in communes_server.requests[1]
    [again] = await DpeVeille().enrich(ctx, [item("M2")])
    assert again.data["mairie"] == out.data["mairie"] and len(communes_server.requests) == 2
    async with store.db.sessions.begin() as session:
        await session.execute(text("UPDATE cache_communes SET maj_le = now() - interval '31 days'"))
    await DpeVeille().enrich(ctx, [item("M3")])
    assert len(communes_server.requests) == 4  # stale after 30 days: asked again


async def test_town_hall_failures_never_fail_the_run(store: MemoryStore, communes_server: Any,
                                                     http: Any) -> None:
    communes_server.fail_annuaire = 500
    ctx = context(store, communes_server, http)
    [out] = await DpeVeille().enrich(ctx, [item("F1")])
    assert out.data["mairie"] is None and out.data["priorite"] in ("P1", "P2", "P3")
    async with store.db.sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM cache_communes"))).scalar() == 0
    communes_server.fail_annuaire = None
    communes_server.annuaire_body = "{oops"
    [out] = await DpeVeille().enrich(ctx, [item("F2")])
    assert out.data["mairie"] is None
    communes_server.annuaire_body = None
    communes_server.fail_geo = 503  # the name only: the annuaire still gives the town hall
    [out] = await DpeVeille().enrich(ctx, [item("F3", postcode="24380", insee="24571")])
    assert out.data["mairie"]["telephone"] == "05 53 54 90 12"


async def test_commune_found_by_postcode_when_the_dpe_has_no_insee_code(
        store: MemoryStore, communes_server: Any, http: Any) -> None:
    new = item("NOINSEE", postcode="24510", commune="Limeuil")
    data = dict(new.data, code_insee=None)
    [out] = await DpeVeille().enrich(context(store, communes_server, http),
                                     [SourceItem("NOINSEE", "24510", data)])
    assert out.data["mairie"]["nom"] == "Mairie - Limeuil"
    assert out.data["mairie"]["courriel"] is None
    assert communes_server.requests[0].startswith("/communes?codePostal=24510")


async def test_dry_run_writes_no_cache(store: MemoryStore, communes_server: Any,
                                       http: Any) -> None:
    [out] = await DpeVeille().enrich(context(store, communes_server, http, dry_run=True),
                                     [item("D1")])
    assert out.data["mairie"] is not None
    async with store.db.sessions() as session:
        assert (await session.execute(text("SELECT count(*) FROM cache_communes"))).scalar() == 0
