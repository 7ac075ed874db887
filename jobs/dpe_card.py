"""The DPE prospect card (pure): one HTML page per new DPE, attached to the digest, that an
agent prints or keeps — the characteristics, the DPE badge in its class colour, the price
range, the last known sale, the town hall, the links and the action checklist. Also the
French formatting the digest shares (dates, euros, one line per lead).

Every string from a source (address, commune, the town hall's record…) is data: it goes
through `html.escape` and is never read as markup or instructions.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
          "septembre", "octobre", "novembre", "décembre")
DAYS = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
COLOURS = {"A": "#009c6d", "B": "#52b153", "C": "#a5cc74", "D": "#f4e70f", "E": "#f0b50f",
           "F": "#eb8235", "G": "#d7221f"}
"""The DPE label's official colours."""
CHECKLIST = ("Vérifier si le bien est déjà en vente (portails, vitrines)",
             "Relever la référence cadastrale (lien cadastre)",
             "Demander le nom du propriétaire en mairie",
             "Envoyer un courrier au propriétaire")


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def long_date(day: date | datetime, *, weekday: bool = False) -> str:
    """« 1er décembre 2026 », « mardi 1er décembre 2026 »."""
    number = "1er" if day.day == 1 else str(day.day)
    text = f"{number} {MONTHS[day.month - 1]} {day.year}"
    return f"{DAYS[day.weekday()]} {text}" if weekday else text


def short_date(value: Any) -> str:
    try:
        return date.fromisoformat(str(value)[:10]).strftime("%d/%m/%Y")
    except ValueError:
        return "date inconnue"


def euros(value: Any) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{round(value):,} €".replace(",", " ")


def is_passoire(data: Mapping[str, Any]) -> bool:
    return data.get("classe") in ("F", "G")


def estimate_text(data: Mapping[str, Any]) -> str:
    est = data.get("estimation")
    if not isinstance(est, Mapping):
        return "estimation impossible (surface ou prix au m² inconnu)"
    return (f"{euros(est.get('bas'))} – {euros(est.get('haut'))} "
            f"({euros(est.get('prix_m2'))}/m²)")


def sale_text(data: Mapping[str, Any]) -> str:
    if "derniere_vente" not in data:
        return "ventes DVF non importées"
    sale = data.get("derniere_vente")
    if not isinstance(sale, Mapping):
        return "aucune vente connue"
    parts = [short_date(sale.get("date")), euros(sale.get("valeur"))]
    what = ", ".join(str(t) for t in sale.get("types_locaux") or [] if t)
    if what:
        parts.append(what)
    if isinstance(sale.get("distance_m"), int | float):
        parts.append(f"à {round(sale['distance_m'])} m ({sale.get('adresse') or 'sans adresse'})")
    return ", ".join(parts)


def mairie_text(data: Mapping[str, Any]) -> str:
    mairie = data.get("mairie")
    if not isinstance(mairie, Mapping):
        return "coordonnées non trouvées"
    parts = [mairie.get("nom"), mairie.get("telephone"), mairie.get("courriel")]
    return ", ".join(str(p) for p in parts if p)


def features(data: Mapping[str, Any]) -> str:
    parts = [f"classe {data.get('classe') or '?'} (GES {data.get('ges') or '?'})"]
    if data.get("type_batiment"):
        parts.append(str(data["type_batiment"]))
    if isinstance(data.get("surface"), int | float):
        parts.append(f"{data['surface']:g} m²")
    if data.get("annee_construction"):
        parts.append(f"construit en {data['annee_construction']}")
    parts.append(f"DPE reçu le {short_date(data.get('date_reception'))}")
    return " · ".join(parts)


def title(data: Mapping[str, Any]) -> str:
    return str(data.get("adresse") or " ".join(
        str(p) for p in (data.get("code_postal"), data.get("commune")) if p) or "adresse inconnue")


def badge(classe: Any, size: int = 28) -> str:
    letter = classe if classe in COLOURS else "?"
    colour = COLOURS.get(str(letter), "#999999")
    ink = "#000000" if letter in ("C", "D", "E") else "#ffffff"
    return (f'<span style="display:inline-block;min-width:{size}px;padding:2px 6px;'
            f'background:{colour};color:{ink};font-weight:bold;font-size:{size * 0.6:.0f}px;'
            f'text-align:center;border-radius:4px">{esc(letter)}</span>')


def link_list(data: Mapping[str, Any]) -> str:
    liens = data.get("liens") if isinstance(data.get("liens"), Mapping) else {}
    out = []
    for key, label in (("carte", "Carte"), ("cadastre", "Cadastre")):
        url = liens.get(key) if liens else None
        if isinstance(url, str) and url.startswith("https://"):
            out.append(f'<a href="{esc(url)}">{label}</a>')
    return " · ".join(out)


def card(data: Mapping[str, Any], when: datetime) -> str:
    """One prospect card, a whole HTML page."""
    reasons = "".join(f"<li>{esc(r)}</li>" for r in data.get("raisons") or [])
    checklist = "".join(f"<li>☐ {esc(c)}</li>" for c in CHECKLIST)
    rows = [("Caractéristiques", esc(features(data))),
            ("Estimation", esc(estimate_text(data))),
            ("Dernière vente connue", esc(sale_text(data))),
            ("Mairie", esc(mairie_text(data))),
            ("Liens", link_list(data) or "—"),
            ("N° DPE", esc(data.get("numero_dpe")))]
    table = "".join(f'<tr><th style="text-align:left;padding:4px 12px 4px 0;vertical-align:top">'
                    f"{k}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        '<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8">'
        f"<title>Fiche prospect DPE {esc(data.get('numero_dpe'))}</title></head>\n"
        '<body style="font-family:Arial,sans-serif;max-width:720px;margin:24px auto">\n'
        f"<h1 style=\"font-size:20px\">{badge(data.get('classe'), 36)} {esc(title(data))}</h1>\n"
        f"<p><strong>Priorité {esc(data.get('priorite') or '?')}</strong> "
        f"({esc(data.get('points', 0))} points)"
        + (' — <strong style="color:#d7221f">passoire thermique</strong>'
           if is_passoire(data) else "") + "</p>\n"
        f"<ul>{reasons}</ul>\n<table>{table}</table>\n"
        f"<h2 style=\"font-size:16px\">À faire</h2>\n<ul style=\"list-style:none;padding:0\">"
        f"{checklist}</ul>\n"
        f"<p style=\"color:#666;font-size:12px\">Fiche établie par Axi le {long_date(when)} à "
        "partir des données ouvertes de l'ADEME, de DVF et de l'annuaire de l'administration."
        "</p>\n</body></html>\n")
