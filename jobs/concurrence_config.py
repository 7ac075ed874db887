"""The veille concurrence's configuration, checked (pure): the agencies are typed by hand
in the veille's JSON config (`axi veille edit concurrence`), so a typo must come back as a
clear French reason attached to that agency (reported as a broken source), never as a
crash of the whole run nor as a silent "no news".

    {"agences": [
       {"nom": "Agence X", "type": "html", "url": "https://…/annonces",
        "lien": "a.annonce"  |  "motif": "/annonce/\\d+",
        "conteneur": "article.bien", "champs": {"titre": "h2", "prix": ".prix", …},
        "pages": {"parametre": "page", "max": 5}  |  "suivant": "a[rel=next]"},
       {"nom": "Agence Y", "type": "json", "url": "https://…/api/biens",
        "chemin": "data.items", "champs": {"url": "link", "titre": "title", …},
        "pages": {"parametre": "page", "max": 3}}],
     "delai_s": 2.0, "ras": false}

What identifies an agency is its `url` (normalized: jobs/listing_parse.normalize_url),
not its `nom`: the name is what Ludo reads and may be corrected at any time, while the
address decides which listings the source yields. So renaming an agency keeps its
baseline and its last count; changing its address starts a new silent baseline (its
listings' addresses usually change with it, and would otherwise all look new). Two
agencies may therefore not share an address.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import soupsieve

from jobs.listing_parse import normalize_url

MAX_PAGES = 20
"""Pages fetched per source at most, whatever the config says."""
MAX_ITEMS = 2000
"""Listings kept per source at most; more makes the run partial."""
MAX_DELAY_S = 60.0
DEFAULT_DELAY_S = 2.0

_COMMON = {"nom", "type", "url", "pages", "suivant", "champs"}
_HTML_KEYS = _COMMON | {"lien", "motif", "conteneur"}
_JSON_KEYS = (_COMMON | {"chemin"}) - {"suivant"}
_HTML_FIELDS = {"titre", "prix", "surface", "commune"}
_JSON_FIELDS = _HTML_FIELDS | {"url"}


class ConfigError(ValueError):
    """A French explanation of what is wrong in the config."""


@dataclass(frozen=True)
class Agency:
    nom: str
    type: str  # "html" | "json"
    url: str
    lien: str | None = None
    motif: str | None = None
    conteneur: str | None = None
    champs: Mapping[str, str] = field(default_factory=dict)
    chemin: str = ""
    page_param: str | None = None
    max_pages: int = 1
    suivant: str | None = None

    @property
    def cle(self) -> str:
        """The source's stable identity: its normalized address (see the docstring)."""
        return normalize_url(self.url) or self.url


@dataclass
class Config:
    agences: list[Agency]
    invalid: dict[str, str]
    """Agency label → why its config is unusable. A label is the agency's name, else
    "agence n°<position>"; a duplicate's is "<name> (n°<position>)": every label distinct
    from every name typed, so no agency's report hides another's."""
    delai_s: float = DEFAULT_DELAY_S
    ras: bool = False


def _text(entry: Mapping[str, Any], key: str, *, required: bool = False) -> str | None:
    value = entry.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"« {key} » doit être un texte non vide")
    return value.strip()


def _selector(entry: Mapping[str, Any], key: str, value: str | None = None) -> str | None:
    selector = _text(entry, key) if value is None else value
    if selector is None:
        return None
    try:
        soupsieve.compile(selector)
    except Exception as exc:  # SelectorSyntaxError, and soupsieve's other refusals
        raise ConfigError(f"sélecteur CSS « {key} » invalide ({selector!r}) : "
                          f"{str(exc).splitlines()[0]}") from exc
    return selector


def _agency(entry: Any) -> Agency:
    if not isinstance(entry, Mapping):
        raise ConfigError("chaque agence doit être un objet JSON")
    nom = _text(entry, "nom", required=True)
    kind = entry.get("type", "html")
    if kind not in ("html", "json"):
        raise ConfigError(f"« type » doit être \"html\" ou \"json\", pas {kind!r}")
    unknown = sorted(set(entry) - (_HTML_KEYS if kind == "html" else _JSON_KEYS))
    if unknown:
        allowed = ", ".join(sorted(_HTML_KEYS if kind == "html" else _JSON_KEYS))
        raise ConfigError(f"clé(s) inconnue(s) : {', '.join(unknown)} (possibles : {allowed})")
    url = _text(entry, "url", required=True)
    assert nom is not None and url is not None
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[::1": an unclosed IPv6 bracket, and urllib's other refusals
        raise ConfigError(f"« url » n'est pas une adresse lisible : {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"« url » doit être une adresse http(s) complète, pas {url!r}")

    page_param, max_pages, suivant = None, 1, None
    if "pages" in entry and "suivant" in entry:
        raise ConfigError("« pages » et « suivant » s'excluent : choisir l'un des deux")
    if "pages" in entry:
        pages = entry["pages"]
        if not isinstance(pages, Mapping):
            raise ConfigError("« pages » doit être un objet {\"parametre\": …, \"max\": …}")
        page_param = _text(pages, "parametre", required=True)
        max_pages = pages.get("max", 5)
        if isinstance(max_pages, bool) or not isinstance(max_pages, int) or max_pages < 1:
            raise ConfigError("« pages.max » doit être un entier ≥ 1")
        max_pages = min(max_pages, MAX_PAGES)
    if kind == "html":
        suivant = _selector(entry, "suivant")
        if suivant is not None:
            max_pages = MAX_PAGES

    champs_raw = entry.get("champs", {})
    if not isinstance(champs_raw, Mapping):
        raise ConfigError("« champs » doit être un objet")
    allowed_fields = _HTML_FIELDS if kind == "html" else _JSON_FIELDS
    bad = sorted(set(champs_raw) - allowed_fields)
    if bad:
        raise ConfigError(f"champ(s) inconnu(s) : {', '.join(bad)} "
                          f"(possibles : {', '.join(sorted(allowed_fields))})")
    champs: dict[str, str] = {}
    for name, value in champs_raw.items():
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"« champs.{name} » doit être un texte non vide")
        champs[name] = _selector(champs_raw, f"champs.{name}", value.strip()) \
            if kind == "html" else value.strip()  # type: ignore[assignment]

    if kind == "json":
        chemin = entry.get("chemin", "")
        if not isinstance(chemin, str):
            raise ConfigError("« chemin » doit être un texte (ex. \"data.items\")")
        return Agency(nom, kind, url, champs=champs, chemin=chemin.strip(),
                      page_param=page_param, max_pages=max_pages)

    lien = _selector(entry, "lien")
    conteneur = _selector(entry, "conteneur")
    motif = _text(entry, "motif")
    if motif is not None:
        try:
            re.compile(motif)
        except re.error as exc:
            raise ConfigError(f"« motif » n'est pas une expression régulière valide : {exc}") from exc
    if lien is None and motif is None:
        raise ConfigError("il faut « lien » (sélecteur CSS des liens d'annonces) ou « motif » "
                          "(expression régulière sur leurs adresses)")
    if champs and conteneur is None:
        raise ConfigError("« champs » se lisent dans le « conteneur » de chaque annonce : "
                          "indiquer « conteneur »")
    return Agency(nom, kind, url, lien=lien, motif=motif, conteneur=conteneur, champs=champs,
                  page_param=page_param, max_pages=max_pages, suivant=suivant)


def parse_config(raw: Any) -> Config:
    """The usable agencies, and why each unusable one is (raised only when the config as
    a whole is unusable: then no agency can be fetched)."""
    if not isinstance(raw, Mapping):
        raise ConfigError("la configuration doit être un objet JSON")
    agences = raw.get("agences", [])
    if not isinstance(agences, list):
        raise ConfigError("« agences » doit être une liste")
    delay = raw.get("delai_s", DEFAULT_DELAY_S)
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY_S:
        raise ConfigError(f"« delai_s » doit être un nombre de secondes entre 0 et {MAX_DELAY_S:g}")
    ras = raw.get("ras", False)
    if not isinstance(ras, bool):
        raise ConfigError("« ras » doit être true ou false")
    config = Config([], {}, float(delay), ras)
    typed = {name for name in map(_name, agences) if name is not None}
    taken: set[str] = set()
    addresses: dict[str, str] = {}
    for position, entry in enumerate(agences, start=1):
        name = _name(entry)
        if name is not None and name not in taken:
            label = name
        else:
            label = _free_label(f"{name} (n°{position})" if name else f"agence n°{position}",
                                typed | taken)
        taken.add(label)
        if name is not None and name != label:
            config.invalid[label] = "nom en double : chaque agence doit avoir un nom distinct"
            continue
        try:
            agency = _agency(entry)
        except ConfigError as exc:
            config.invalid[label] = f"configuration invalide : {exc}"
            continue
        if agency.cle in addresses:
            config.invalid[label] = (f"configuration invalide : même adresse que « "
                                     f"{addresses[agency.cle]} » (une adresse = une agence)")
            continue
        addresses[agency.cle] = agency.nom
        config.agences.append(agency)
    return config


def _name(entry: Any) -> str | None:
    """The agency's name as typed (stripped), None when it has none."""
    nom = entry.get("nom") if isinstance(entry, Mapping) else None
    return nom.strip() if isinstance(nom, str) and nom.strip() else None


def _free_label(label: str, taken: set[str]) -> str:
    """`label`, suffixed until it is no name typed and no label already given."""
    candidate, suffix = label, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{label} ({suffix})"
    return candidate
