"""The veille concurrence's digest, pure (issue 12 items 3 and 5): the new competitor
listings grouped by agency — title, price, surface, commune and link when they could be
extracted — as an email (text + HTML) and a short Telegram summary.

Everything shown comes from other people's web pages: it is data, escaped in the HTML,
linked only when it is an http(s) address, and never read as instructions. Nothing new
means no digest (unless the config asks for a "RAS" one); broken sources are alerted by
the engine, and only mentioned here so a digest never looks complete when it is not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from jobs.types import Digest, SourceItem, VeilleRecord

PARIS = ZoneInfo("Europe/Paris")
MAX_PER_AGENCY = 200
"""Listings shown per agency at most (the others are counted): a site that suddenly
lists everything as new must not make an unreadable mail."""


def format_price(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return f"{round(value):,}".replace(",", " ") + " €"


def format_surface(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    text = f"{value:g}" if value != int(value) else str(int(value))
    return text.replace(".", ",") + " m²"


def _date(when: datetime) -> str:
    local = when.astimezone(PARIS) if when.tzinfo else when
    return local.strftime("%d/%m/%Y")


def _count(n: int) -> str:
    return f"{n} nouvelle annonce" if n == 1 else f"{n} nouvelles annonces"


def _safe_link(url: Any) -> str | None:
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        return url
    return None


def _str(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _details(data: Mapping[str, Any]) -> list[str]:
    parts = [format_price(data.get("prix")), format_surface(data.get("surface")),
             _str(data.get("commune"))]
    return [p for p in parts if p]


def group_by_agency(new: Iterable[SourceItem],
                    order: Sequence[str] = ()) -> list[tuple[str, list[SourceItem]]]:
    """The new items per agency: the config's order first, then the others by name."""
    groups: dict[str, list[SourceItem]] = {}
    for item in new:
        groups.setdefault(item.source, []).append(item)
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(groups, key=lambda name: (rank.get(name, len(rank)), name.casefold()))
    return [(name, groups[name]) for name in names]


def render(veille: VeilleRecord, new: Sequence[SourceItem], *, when: datetime,
           broken: Mapping[str, str], ras: bool = False,
           order: Sequence[str] = ()) -> Digest | None:
    if not new and not ras:
        return None
    subject = f"Veille concurrence du {_date(when)} : {_count(len(new))}"
    groups = group_by_agency(new, order)
    return Digest(subject=subject, text=_text(subject, groups, broken),
                  html=_html(subject, groups, broken), summary=_summary(len(new), groups, broken))


def _text(subject: str, groups: list[tuple[str, list[SourceItem]]],
          broken: Mapping[str, str]) -> str:
    lines = [subject]
    if not groups:
        lines += ["", "RAS : aucune nouvelle annonce chez les agences suivies."]
    for agency, items in groups:
        lines += ["", f"{agency} ({_count(len(items))})", ""]
        for item in items[:MAX_PER_AGENCY]:
            title = _str(item.data.get("titre")) or "Annonce sans titre"
            lines.append(" — ".join(["- " + title, *_details(item.data)]))
            link = _safe_link(item.data.get("url")) or _safe_link(item.key)
            if link:
                lines.append(f"  {link}")
        if len(items) > MAX_PER_AGENCY:
            lines.append(f"… et {len(items) - MAX_PER_AGENCY} autres.")
    if broken:
        lines += ["", "Sources indisponibles (leurs annonces manquent à ce relevé) :"]
        lines += [f"- {name} : {reason}" for name, reason in sorted(broken.items())]
    lines += ["", "— Axi, veille concurrence"]
    return "\n".join(lines) + "\n"


def _html(subject: str, groups: list[tuple[str, list[SourceItem]]],
          broken: Mapping[str, str]) -> str:
    out = ['<!DOCTYPE html>', '<html lang="fr"><head><meta charset="utf-8">',
           f"<title>{escape(subject)}</title></head>",
           '<body style="font-family: Arial, sans-serif; color: #222;">',
           f"<h1 style=\"font-size: 20px;\">{escape(subject)}</h1>"]
    if not groups:
        out.append("<p>RAS : aucune nouvelle annonce chez les agences suivies.</p>")
    for agency, items in groups:
        out.append(f"<h2 style=\"font-size: 17px; margin-top: 24px;\">{escape(agency)} "
                   f"<small>({escape(_count(len(items)))})</small></h2>")
        out.append('<ul style="padding-left: 18px;">')
        for item in items[:MAX_PER_AGENCY]:
            title = escape(_str(item.data.get("titre")) or "Annonce sans titre")
            link = _safe_link(item.data.get("url")) or _safe_link(item.key)
            if link:
                title = f'<a href="{escape(link, quote=True)}">{title}</a>'
            details = " · ".join(escape(d) for d in _details(item.data))
            out.append(f"<li style=\"margin-bottom: 6px;\">{title}"
                       + (f"<br><span style=\"color: #555;\">{details}</span>" if details else "")
                       + "</li>")
        if len(items) > MAX_PER_AGENCY:
            out.append(f"<li>… et {len(items) - MAX_PER_AGENCY} autres.</li>")
        out.append("</ul>")
    if broken:
        out.append('<p style="color: #a33;">Sources indisponibles (leurs annonces manquent à ce '
                   "relevé) :</p><ul>")
        out += [f"<li>{escape(name)} : {escape(reason)}</li>" for name, reason in sorted(broken.items())]
        out.append("</ul>")
    out.append('<p style="color: #777; font-size: 12px;">— Axi, veille concurrence</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _summary(total: int, groups: list[tuple[str, list[SourceItem]]],
             broken: Mapping[str, str]) -> str:
    if not groups:
        text = "Veille concurrence : RAS, aucune nouvelle annonce."
    else:
        per_agency = ", ".join(f"{name} : {len(items)}" for name, items in groups)
        text = f"Veille concurrence : {_count(total)} ({per_agency}). Le détail est parti par courriel."
    if broken:
        text += f" Source(s) indisponible(s) : {', '.join(sorted(broken))}."
    return text
