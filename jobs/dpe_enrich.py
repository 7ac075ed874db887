"""The DPE veille's enrichment: each new DPE gets its price range, the last known sale at
or near its address (DVF, table ventes_dvf), its town hall's phone and email, its map and
cadastre links, and its priority with the reasons.

Why batched and forgiving: a first run can bring thousands of DPEs, so the sales of all
their communes are read in one query and matched in memory (same commune and normalized
address first, else the nearest sale within ~50 m); town halls are looked up once per
commune and cached 30 days in cache_communes. A town hall that cannot be found (geo API or
annuaire down, no record) only leaves the card without it: it never fails the run.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

from sqlalchemy import text

from jobs.dpe_http import SourceError, get_json
from jobs.dpe_rows import clean_text, distance_m, estimate, links, normalize_address
from jobs.dpe_score import score
from jobs.types import RunContext, SourceItem

log = logging.getLogger(__name__)

CACHE_DAYS = 30
NEAR_M = 50.0
CELL = 0.001  # degrees: ~110 m of latitude, ~80 m of longitude here
ANNUAIRE_DATASET = "api-lannuaire-administration"


# ---------------------------------------------------------------------- DVF
class SalesIndex:
    """The sales of some communes, by normalized address and by grid cell."""

    def __init__(self, rows: Iterable[Mapping[str, Any]]):
        self.by_address: dict[tuple[str, str], dict[str, Any]] = {}
        self.cells: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.size = 0
        for row in rows:
            self.size += 1
            sale = _sale(row)
            address = normalize_address(row.get("adresse"))
            if address and row.get("code_commune"):
                key = (str(row["code_commune"]), address)
                known = self.by_address.get(key)
                if known is None or sale["date"] > known["date"]:
                    self.by_address[key] = sale
            lat, lon = row.get("latitude"), row.get("longitude")
            if lat is not None and lon is not None:
                cell = (math.floor(lat / CELL), math.floor(lon / CELL))
                self.cells.setdefault(cell, []).append({**sale, "_lat": lat, "_lon": lon})

    def last_sale(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        address = normalize_address(data.get("adresse"), data.get("code_postal"),
                                    data.get("commune"))
        if address and data.get("code_insee"):
            found = self.by_address.get((str(data["code_insee"]), address))
            if found is not None:
                return dict(found)
        lat, lon = data.get("latitude"), data.get("longitude")
        if not isinstance(lat, float) or not isinstance(lon, float):
            return None
        best: tuple[float, int, dict[str, Any]] | None = None
        row0, col0 = math.floor(lat / CELL), math.floor(lon / CELL)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                for sale in self.cells.get((row0 + dr, col0 + dc), ()):
                    d = distance_m(lat, lon, sale["_lat"], sale["_lon"])
                    if d <= NEAR_M:
                        # nearest first; at the same place, the most recent sale
                        candidate = (round(d, 1), -_ordinal(sale["date"]), sale)
                        if best is None or candidate[:2] < best[:2]:
                            best = candidate
        if best is None:
            return None
        out = {k: v for k, v in best[2].items() if not k.startswith("_")}
        out["distance_m"] = best[0]
        return out


def _ordinal(day: str) -> int:
    try:
        return date.fromisoformat(day[:10]).toordinal()
    except ValueError:
        return 0


def _sale(row: Mapping[str, Any]) -> dict[str, Any]:
    valeur = row.get("valeur")
    return {
        "date": row["date_mutation"].isoformat() if isinstance(row["date_mutation"], date)
        else str(row["date_mutation"]),
        "valeur": int(valeur) if valeur is not None else None,
        "nature": row.get("nature"),
        "adresse": row.get("adresse"),
        "commune": row.get("nom_commune"),
        "types_locaux": list(row.get("types_locaux") or []),
        "surface_bati": row.get("surface_bati"),
        "surface_terrain": row.get("surface_terrain"),
        "distance_m": None,
    }


async def load_sales(store: Any, communes: set[str], postcodes: set[str]) -> SalesIndex | None:
    """The sales of these communes and postcodes; None when DVF was never imported (then
    "no known sale" would be meaningless)."""
    async with store.db.sessions() as session:
        if not (await session.execute(text("SELECT EXISTS (SELECT 1 FROM ventes_dvf)"))).scalar():
            return None
        rows = (await session.execute(text(
            "SELECT date_mutation, nature, valeur, code_postal, code_commune, nom_commune, "
            "adresse, types_locaux, surface_bati, surface_terrain, longitude, latitude "
            "FROM ventes_dvf WHERE code_commune = ANY(:cc) OR code_postal = ANY(:cp)"),
            {"cc": sorted(communes), "cp": sorted(postcodes)})).mappings().all()
    return SalesIndex(rows)


# ---------------------------------------------------------------------- town halls
def _plain(value: str) -> str:
    text_ = unicodedata.normalize("NFKD", value)
    return "".join(c for c in text_ if not unicodedata.combining(c)).lower()


def _json_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return []
    return value if isinstance(value, list) else []


def pick_mairie(records: Any) -> dict[str, Any] | None:
    """The town hall among the annuaire's records: not a "mairie déléguée" (an annex of a
    merged commune), a "Mairie - …" record first; its phone, email and site."""
    if not isinstance(records, list):
        return None
    candidates = [r for r in records if isinstance(r, dict) and isinstance(r.get("nom"), str)
                  and "deleguee" not in _plain(r["nom"])
                  and not any("deleguee" in _plain(str(p.get("type_service_local", "")))
                              for p in _json_list(r.get("pivot")) if isinstance(p, dict))]
    if not candidates:
        return None
    candidates.sort(key=lambda r: not _plain(r["nom"]).startswith("mairie"))
    record = candidates[0]
    phones = [p.get("valeur") for p in _json_list(record.get("telephone"))
              if isinstance(p, dict) and p.get("valeur")]
    sites = [s.get("valeur") for s in _json_list(record.get("site_internet"))
             if isinstance(s, dict) and s.get("valeur")]
    emails = [e.strip() for e in str(record.get("adresse_courriel") or "").split(";") if e.strip()]
    return {"nom": clean_text(record["nom"], 200),
            "telephone": clean_text(phones[0], 40) if phones else None,
            "courriel": clean_text(emails[0], 200) if emails else None,
            "site": clean_text(sites[0], 300) if sites else None}


async def _cached(store: Any, code: str) -> dict[str, Any] | None:
    if store is None:
        return None
    async with store.db.sessions() as session:
        row = (await session.execute(text(
            "SELECT donnees FROM cache_communes WHERE code_commune = :c "
            f"AND maj_le > now() - interval '{CACHE_DAYS} days'"), {"c": code})).first()
    return dict(row[0]) if row is not None else None


async def _remember(store: Any, code: str, data: dict[str, Any]) -> None:
    async with store.db.sessions.begin() as session:
        await session.execute(text(
            "INSERT INTO cache_communes (code_commune, donnees, maj_le) "
            "VALUES (:c, CAST(:d AS jsonb), now()) ON CONFLICT (code_commune) "
            "DO UPDATE SET donnees = EXCLUDED.donnees, maj_le = now()"),
            {"c": code, "d": json.dumps(data, ensure_ascii=False)})


async def commune_info(ctx: RunContext, code: str | None, postcode: str | None,
                       name: str | None) -> dict[str, Any] | None:
    """{"code", "nom", "mairie": {...} | None} for a commune, from the cache or the geo API
    then the annuaire; None when it cannot be known now (nothing is cached then)."""
    settings, headers = ctx.settings, {"User-Agent": ctx.settings.veille_user_agent}
    geo = settings.geo_api_url.rstrip("/")
    try:
        if not code:
            if not postcode:
                return None
            found = await get_json(ctx.http, f"{geo}/communes",
                                   {"codePostal": postcode, "fields": "nom,code",
                                    **({"nom": name} if name else {})},
                                   attempts=2, backoff_s=0.5, headers=headers)
            if not isinstance(found, list) or not found or not isinstance(found[0], dict):
                return None
            code = str(found[0].get("code") or "") or None
            if code is None:
                return None
        cached = await _cached(ctx.store, code)
        if cached is not None:
            return cached
        try:
            commune = await get_json(ctx.http, f"{geo}/communes/{quote(code, safe='')}",
                                     {"fields": "nom,code,codesPostaux"}, attempts=2,
                                     backoff_s=0.5, headers=headers)
        except SourceError as exc:  # the name only: the annuaire may still answer
            log.warning("commune %s unknown to the geo API: %s", code, exc)
            commune = None
        nom = commune.get("nom") if isinstance(commune, dict) else None
        where = f'code_insee_commune="{code}" and pivot LIKE "mairie"'
        answer = await get_json(
            ctx.http, f"{settings.annuaire_api_url.rstrip('/')}/catalog/datasets/"
            f"{ANNUAIRE_DATASET}/records",
            {"where": where, "limit": 20,
             "select": "nom,telephone,adresse_courriel,site_internet,pivot"},
            attempts=2, backoff_s=0.5, headers=headers)
    except SourceError as exc:
        log.warning("town hall of %s (%s) unknown: %s", code or postcode, name, exc)
        return None
    records = answer.get("results") if isinstance(answer, dict) else None
    if records is None:
        log.warning("town hall of %s: unexpected annuaire answer", code)
        return None
    info = {"code": code, "nom": clean_text(nom or name or "", 100),
            "mairie": pick_mairie(records)}
    if ctx.store is not None and not ctx.dry_run:
        await _remember(ctx.store, code, info)
    return info


# ---------------------------------------------------------------------- enrich
def _town_key(data: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    return data.get("code_insee"), data.get("code_postal"), data.get("commune")


async def enrich(ctx: RunContext, new: list[SourceItem]) -> list[SourceItem]:
    if not new:
        return []
    config = ctx.veille.config
    prices = config.get("prix_m2") if isinstance(config.get("prix_m2"), Mapping) else {}
    spread = config.get("fourchette", 0.15)
    spread = float(spread) if isinstance(spread, int | float) and 0 <= spread < 1 else 0.15
    weights = config.get("poids") if isinstance(config.get("poids"), Mapping) else None
    thresholds = config.get("seuils") if isinstance(config.get("seuils"), Mapping) else None

    communes = {str(i.data["code_insee"]) for i in new if i.data.get("code_insee")}
    postcodes = {str(i.data["code_postal"]) for i in new if i.data.get("code_postal")}
    sales = await load_sales(ctx.store, communes, postcodes) if ctx.store is not None else None

    towns: dict[tuple[Any, Any, Any], dict[str, Any] | None] = {}
    keys = sorted({_town_key(i.data) for i in new}, key=str)
    for index, key in enumerate(keys):
        ctx.progress(index, len(keys), "mairies")
        towns[key] = await commune_info(ctx, *key)
    ctx.progress(len(keys), len(keys), "mairies")

    today = ctx.now.date()
    out = []
    for item in new:
        data = dict(item.data)
        price = prices.get(data.get("code_postal") or "") if prices else None
        data["estimation"] = estimate(data.get("surface"), price if isinstance(
            price, int | float) else None, spread)
        if sales is not None:
            data["derniere_vente"] = sales.last_sale(data)
        town = towns.get(_town_key(data))
        data["mairie"] = town.get("mairie") if town else None
        data["liens"] = links(data)
        result = score(data, today, weights=weights, thresholds=thresholds)
        data.update(priorite=result.priorite, points=result.points,
                    raisons=list(result.raisons))
        out.append(SourceItem(item.key, item.source, data))
    return out
