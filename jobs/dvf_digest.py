"""The DVF veille's digest, pure: "Veille DVF : N nouvelles ventes dans vos secteurs",
grouped by commune, each sale with its date, what was sold, the address, the price and
the €/m² when it can be computed (a price and a dwelling's surface), as email text, HTML
(every value from DVF escaped: text from sources is data) and a short Telegram summary.

Why a module of its own: golden files (tests/jobs/golden/) pin the output, and rendering
must not need a database or the network.
"""

from __future__ import annotations

import html
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

from jobs.types import Digest, SourceItem, VeilleRecord

MAX_LISTED = 300
"""Sales listed in the email; the rest are counted (a first import can bring thousands)."""


def number(value: float) -> str:
    return f"{round(float(value)):,}".replace(",", " ")


def euros(value: float) -> str:
    return number(value) + " €"


def _date(value: Any) -> str:
    try:
        return date.fromisoformat(str(value)).strftime("%d/%m/%Y")
    except ValueError:
        return str(value or "?")


def per_m2(data: Mapping[str, Any]) -> float | None:
    price, surface = data.get("prix"), data.get("surface_bati")
    if not price or not surface:
        return None
    return float(price) / float(surface)


def sale_parts(data: Mapping[str, Any]) -> list[str]:
    """The pieces of one sale's line (unescaped)."""
    types = ", ".join(data.get("types") or [])
    nature = str(data.get("nature") or "Vente")
    parts = [_date(data.get("date")), types or nature]
    if data.get("adresse"):
        parts.append(str(data["adresse"]))
    parts.append(euros(float(data["prix"])) if data.get("prix") else "prix non publié")
    if data.get("surface_bati"):
        extra = f"{number(data['surface_bati'])} m²"
        if data.get("pieces"):
            extra += f", {data['pieces']} p."
        parts.append(extra)
    m2 = per_m2(data)
    if m2 is not None:
        parts.append(f"{euros(m2)}/m²")
    if data.get("surface_terrain"):
        parts.append(f"terrain {number(data['surface_terrain'])} m²")
    if types and nature != "Vente":
        parts.append(nature)
    return parts


def _by_commune(items: Sequence[SourceItem]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for item in items:
        d = item.data
        label = f"{d.get('commune') or '?'} ({d.get('code_postal') or item.source})"
        groups[label].append(d)
    return [(label, sorted(sales, key=lambda s: (str(s.get("date")), str(s.get("adresse")))))
            for label, sales in sorted(groups.items())]


def render_dvf(veille: VeilleRecord, new: Sequence[SourceItem], *, when: datetime,
               broken: Mapping[str, str]) -> Digest | None:
    if not new:
        return None
    n = len(new)
    title = (f"Veille DVF : {n} nouvelle vente dans vos secteurs" if n == 1 else
             f"Veille DVF : {n} nouvelles ventes dans vos secteurs")
    subject = f"{title} ({when:%d/%m/%Y})"
    groups = _by_commune(new)
    text = [title, "Ventes publiées par DVF (Etalab) arrivées depuis la dernière veille.", ""]
    page = [f"<h2>{html.escape(title)}</h2>",
            "<p>Ventes publiées par DVF (Etalab) arrivées depuis la dernière veille.</p>"]
    listed = 0
    for label, sales in groups:
        text.append(f"{label} — {len(sales)} vente{'s' if len(sales) > 1 else ''}")
        page.append(f"<h3>{html.escape(label)} — {len(sales)} "
                    f"vente{'s' if len(sales) > 1 else ''}</h3><ul>")
        for sale in sales:
            if listed >= MAX_LISTED:
                break
            listed += 1
            parts = sale_parts(sale)
            text.append("- " + " · ".join(parts))
            page.append("<li>" + " · ".join(html.escape(p) for p in parts) + "</li>")
        page.append("</ul>")
        text.append("")
    if listed < n:
        more = f"… et {n - listed} autres ventes, non détaillées ici."
        text.append(more)
        page.append(f"<p>{html.escape(more)}</p>")
    for source, reason in sorted(broken.items()):
        note = f"Attention : {source} en échec ({reason}) ; la liste peut être incomplète."
        text.append(note)
        page.append(f"<p><strong>{html.escape(note)}</strong></p>")
    counts = ", ".join(f"{label.split(' (')[0]} {len(sales)}" for label, sales in groups[:12])
    if len(groups) > 12:
        counts += f", et {len(groups) - 12} autres communes"
    summary = f"{title} — {counts}."
    return Digest(subject=subject, text="\n".join(text).rstrip() + "\n",
                  html="\n".join(page) + "\n", summary=summary)
