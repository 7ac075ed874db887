"""The DPE veille's pure helpers (no I/O): an ADEME `dpe03existant` line turned into the
small JSON an item keeps, the price range, addresses normalized for the DVF lookup, the
distance between two points, and the map and cadastre links.

Why a module of its own: the fetch (jobs/dpe.py), the enrichment (jobs/dpe_enrich.py) and
the digest (jobs/dpe_digest.py) all read the same fields; keeping the parsing here lets it
be tested on plain dicts, and keeps source text as data (nothing here interprets it).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from datetime import date
from typing import Any
from urllib.parse import quote

FIELDS = (
    "numero_dpe", "date_reception_dpe", "date_etablissement_dpe", "etiquette_dpe",
    "etiquette_ges", "adresse_ban", "code_postal_ban", "nom_commune_ban", "code_insee_ban",
    "surface_habitable_logement", "type_batiment", "annee_construction", "_geopoint",
)
"""The columns asked for (`select`): everything the digest and the enrichment use."""

CLASSES = "ABCDEFG"
MAX_TEXT = 300
"""Source strings are cut to this length: an item's data stays small."""


_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
"""C0/C1 controls (NUL: PostgreSQL's jsonb refuses it; ESC: terminal sequences in
`--dry-run`), zero-width and bidirectional overrides: never kept from a source."""
_SURROGATES = re.compile("[\ud800-\udfff]")
"""Lone surrogates (a JSON "\\ud800" escape): not UTF-8, so jsonb refuses the item."""


def clean_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """A source's string as inert, one-line text: controls removed, lone surrogates
    replaced (U+FFFD), whitespace folded, cut to `limit`."""
    if value is None:
        return None
    text = _SURROGATES.sub("\ufffd", str(value))
    text = " ".join(_CONTROLS.sub(" ", text).split())
    return text[:limit] or None


_text = clean_text


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(str(value).replace(",", "."))
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _date(value: Any) -> str | None:
    """An ISO date (YYYY-MM-DD) or None: the API sends dates, sometimes datetimes."""
    text = _text(value, 40)
    if text is None:
        return None
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        return None


def _geopoint(value: Any) -> tuple[float, float] | None:
    """data-fair's `_geopoint` is "lat,lon"."""
    if not isinstance(value, str) or "," not in value:
        return None
    lat_text, _, lon_text = value.partition(",")
    try:
        lat, lon = float(lat_text), float(lon_text)
    except ValueError:
        return None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return lat, lon


def parse_line(line: Mapping[str, Any]) -> dict[str, Any] | None:
    """The item data of one API line, or None when it has no usable `numero_dpe` or
    reception date (it could never be keyed nor windowed)."""
    raw = line.get("numero_dpe")
    numero = _text(raw, 40) if isinstance(raw, str | int) and not isinstance(raw, bool) else None
    reception = _date(line.get("date_reception_dpe"))
    if numero is None or reception is None:
        return None
    classe = (_text(line.get("etiquette_dpe"), 1) or "").upper()
    ges = (_text(line.get("etiquette_ges"), 1) or "").upper()
    surface = _number(line.get("surface_habitable_logement"))
    annee = _number(line.get("annee_construction"))
    point = _geopoint(line.get("_geopoint"))
    return {
        "numero_dpe": numero,
        "date_reception": reception,
        "date_etablissement": _date(line.get("date_etablissement_dpe")),
        "classe": classe if classe and classe in CLASSES else None,
        "ges": ges if ges and ges in CLASSES else None,
        "adresse": _text(line.get("adresse_ban")),
        "code_postal": _text(line.get("code_postal_ban"), 5),
        "commune": _text(line.get("nom_commune_ban"), 100),
        "code_insee": _text(line.get("code_insee_ban"), 5),
        "surface": round(surface, 1) if surface is not None and surface < 100_000 else None,
        "type_batiment": _text(line.get("type_batiment"), 40),
        "annee_construction": int(annee) if annee is not None and 1000 < annee < 2200 else None,
        "latitude": point[0] if point else None,
        "longitude": point[1] if point else None,
    }


def estimate(surface: float | None, prix_m2: float | None,
             fourchette: float) -> dict[str, int] | None:
    """The price range: surface × €/m² of the postcode ± fourchette, rounded to the
    thousand euros; None when the surface or the price is unknown."""
    if not surface or not prix_m2:
        return None
    middle = surface * prix_m2
    return {"bas": int(round(middle * (1 - fourchette), -3)),
            "haut": int(round(middle * (1 + fourchette), -3)),
            "prix_m2": int(prix_m2)}


_ABBREVIATIONS = {
    "r": "rue", "av": "avenue", "ave": "avenue", "bd": "boulevard", "bld": "boulevard",
    "pl": "place", "rte": "route", "che": "chemin", "chem": "chemin", "imp": "impasse",
    "fg": "faubourg", "st": "saint", "ste": "sainte",
}

_SUFFIXES = {"b": "bis", "t": "ter", "q": "quater"}


def normalize_address(address: str | None, code_postal: str | None = None,
                      commune: str | None = None) -> str | None:
    """An address reduced to compare DPE (BAN: "12 Rue de la Paix 24260 Le Bugue") and
    DVF ("12 RUE DE LA PAIX") spellings: no accents, lower case, no postcode nor commune
    at the end, usual abbreviations expanded, "bis"/"ter" kept."""
    if not address:
        return None
    text = unicodedata.normalize("NFKD", address)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    if code_postal:
        text = text.split(code_postal)[0]
    text = re.sub(r"\b\d{5}\b.*$", "", text)
    text = re.sub(r"[^a-z0-9]+", " ", text).strip()
    if commune:
        name = normalize_address(commune)
        if name and text.endswith(" " + name):
            text = text[: -len(name) - 1]
    text = " ".join(_ABBREVIATIONS.get(w, w) for w in text.split())
    text = re.sub(r"^(\d+) ?(bis|ter|quater|b|t|q)\b",
                  lambda m: f"{m[1]} {_SUFFIXES.get(m[2], m[2])}", text)
    return text or None


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    r = 6_371_000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


def links(data: Mapping[str, Any]) -> dict[str, str]:
    """The map (OpenStreetMap) and cadastre (Géoportail's cadastral layer) links: at the
    point when the DPE has coordinates, else a search on the address."""
    lat, lon = data.get("latitude"), data.get("longitude")
    if isinstance(lat, float) and isinstance(lon, float):
        return {
            "carte": f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}"
                     f"#map=18/{lat:.6f}/{lon:.6f}",
            "cadastre": "https://www.geoportail.gouv.fr/carte?"
                        f"c={lon:.6f},{lat:.6f}&z=19&l0=CADASTRALPARCELS.PARCELLAIRE_EXPRESS"
                        "::GEOPORTAIL:OGC:WMTS(1)&permalink=yes",
        }
    query = str(data.get("adresse") or " ".join(
        str(p) for p in (data.get("code_postal"), data.get("commune")) if p))
    return {
        "carte": "https://www.openstreetmap.org/search?query=" + quote(query),
        "cadastre": "https://www.cadastre.gouv.fr/scpc/rechercherPlan.do",
    }
