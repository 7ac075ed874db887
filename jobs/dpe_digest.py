"""The DPE veille's digest (pure): the email (text and HTML) to the agency, sorted by
priority with the passoires highlighted, one prospect card per DPE attached (the first
`fiches_max` by priority), a "RAS" mail when nothing is new (config `ras`), and the short
Telegram summary for Ludo (the counts, each P1 on one line).

Why pure: golden files pin the output (tests/jobs/test_dpe_digest.py); source text is
data, escaped in HTML and never read as instructions.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from jobs.dpe_card import (
    badge,
    card,
    esc,
    estimate_text,
    euros,
    features,
    is_passoire,
    link_list,
    long_date,
    mairie_text,
    sale_text,
    title,
)
from jobs.types import Digest, DigestFile, SourceItem, VeilleRecord

PARIS = ZoneInfo("Europe/Paris")
DEFAULT_MAX_CARDS = 50
DEFAULT_MAX_LISTED = 300
"""DPEs detailed in the email at most (config `liste_max`); the others, by priority, are in
an attached CSV, so a source returning 10,000 items still makes a sendable email."""
SUMMARY_P1_LINES = 20
RANK = {"P1": 0, "P2": 1, "P3": 2}


def _local(when: datetime) -> datetime:
    return when.astimezone(PARIS) if when.tzinfo is not None else when


def ordered(items: Sequence[SourceItem]) -> list[SourceItem]:
    """By priority, then points, then the most recent reception, then the number."""
    return sorted(items, key=lambda i: (
        RANK.get(str(i.data.get("priorite")), 3), -int(i.data.get("points") or 0),
        _neg(str(i.data.get("date_reception") or "")), i.key))


def _neg(day: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in day)


def counts(items: Sequence[SourceItem]) -> dict[str, int]:
    out = {"P1": 0, "P2": 0, "P3": 0}
    for item in items:
        key = str(item.data.get("priorite"))
        out[key if key in out else "P3"] += 1
    return out


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def headline(items: Sequence[SourceItem]) -> str:
    passoires = sum(is_passoire(i.data) for i in items)
    return (f"{_plural(len(items), 'nouveau DPE', 'nouveaux DPE')} dont "
            f"{_plural(passoires, 'passoire', 'passoires')}")


def _broken_lines(broken: Mapping[str, str]) -> list[str]:
    return [f"{code} : {reason}" for code, reason in sorted(broken.items())]


def _item_text(item: SourceItem) -> str:
    d = item.data
    flag = " [PASSOIRE]" if is_passoire(d) else ""
    lines = [f"{d.get('priorite') or '?'} ({d.get('points', 0)} pts){flag} — {title(d)}",
             f"  {features(d)}",
             f"  Estimation : {estimate_text(d)}",
             f"  Dernière vente : {sale_text(d)}",
             f"  Mairie : {mairie_text(d)}"]
    if d.get("raisons"):
        lines.append("  Pourquoi : " + " ; ".join(str(r) for r in d["raisons"]))
    liens = d.get("liens") if isinstance(d.get("liens"), Mapping) else {}
    if liens:
        lines.append(f"  Carte : {liens.get('carte', '—')}")
        lines.append(f"  Cadastre : {liens.get('cadastre', '—')}")
    lines.append(f"  N° DPE : {d.get('numero_dpe') or item.key}")
    return "\n".join(lines)


def _item_html(item: SourceItem) -> str:
    d = item.data
    style = ("border:1px solid #ddd;border-radius:6px;padding:10px 12px;margin:10px 0;"
             + ("background:#fff1ec;border-left:6px solid #d7221f" if is_passoire(d) else ""))
    reasons = " ; ".join(esc(r) for r in d.get("raisons") or [])
    passoire = (' <strong style="color:#d7221f">passoire thermique</strong>'
                if is_passoire(d) else "")
    return (
        f'<div style="{style}">\n'
        f"<div>{badge(d.get('classe'))} <strong>{esc(d.get('priorite') or '?')}</strong> "
        f"({esc(d.get('points', 0))} pts){passoire} — <strong>{esc(title(d))}</strong></div>\n"
        f"<div>{esc(features(d))}</div>\n"
        f"<div>Estimation : {esc(estimate_text(d))}</div>\n"
        f"<div>Dernière vente : {esc(sale_text(d))}</div>\n"
        f"<div>Mairie : {esc(mairie_text(d))}</div>\n"
        + (f'<div style="color:#555">Pourquoi : {reasons}</div>\n' if reasons else "")
        + f"<div>{link_list(d)} · N° DPE {esc(d.get('numero_dpe') or item.key)}</div>\n"
        "</div>")


def _page(heading: str, body: str) -> str:
    return ('<!DOCTYPE html>\n<html lang="fr"><head><meta charset="utf-8">'
            f"<title>{esc(heading)}</title></head>\n"
            '<body style="font-family:Arial,sans-serif;max-width:760px">\n'
            f"<h1 style=\"font-size:20px\">{esc(heading)}</h1>\n{body}\n</body></html>\n")


def render(veille: VeilleRecord, new: Sequence[SourceItem], *, when: datetime,
           broken: Mapping[str, str]) -> Digest | None:
    config = veille.config
    local = _local(when)
    day = long_date(local)
    heading = f"Veille DPE du {long_date(local, weekday=True)}"
    broken_lines = _broken_lines(broken)
    if not new:
        if not config.get("ras", True):
            return None
        subject = f"Veille DPE du {day} : RAS"
        text = [heading, "", "RAS : aucun nouveau DPE dans les codes postaux suivis."]
        html_body = ["<p>RAS : aucun nouveau DPE dans les codes postaux suivis.</p>"]
        if broken_lines:
            subject = (f"Veille DPE du {day} : aucun nouveau DPE "
                       f"({_plural(len(broken), 'code postal', 'codes postaux')} en panne)")
            text[-1] = "Aucun nouveau DPE dans les codes postaux qui ont répondu."
            html_body = [f"<p>{esc(text[-1])}</p>"]
        text += _broken_text(broken_lines)
        html_body.append(_broken_html(broken_lines))
        return Digest(subject=subject, text="\n".join(text) + "\n",
                      html=_page(heading, "\n".join(h for h in html_body if h)),
                      summary=subject)

    items = ordered(new)
    tally = counts(items)
    head = headline(items)
    subject = f"Veille DPE du {day} : {head}"
    repartition = f"P1 : {tally['P1']}, P2 : {tally['P2']}, P3 : {tally['P3']}"
    max_cards = config.get("fiches_max", DEFAULT_MAX_CARDS)
    max_cards = max_cards if isinstance(max_cards, int) and max_cards >= 0 else DEFAULT_MAX_CARDS
    with_card = items[:max_cards]
    cards_note = (f"Fiches prospects jointes : {len(with_card)}"
                  + (f" (les {len(with_card)} premières par priorité sur {len(items)})"
                     if len(with_card) < len(items) else "") + ".")
    max_listed = config.get("liste_max", DEFAULT_MAX_LISTED)
    max_listed = (max_listed if isinstance(max_listed, int) and max_listed >= 1
                  else DEFAULT_MAX_LISTED)
    listed = items[:max_listed]
    rest_note = (f"Les {len(items) - len(listed)} autres DPE (les moins prioritaires) sont "
                 "dans le fichier joint dpe-complets.csv." if len(listed) < len(items) else "")
    text = [heading, "", f"{head[0].upper()}{head[1:]} ({repartition}).", cards_note]
    text += [rest_note, ""] if rest_note else [""]
    text += [_item_text(i) + "\n" for i in listed]
    text += _broken_text(broken_lines)
    body = [f"<p><strong>{esc(head[0].upper() + head[1:])}</strong> ({esc(repartition)}). "
            f"{esc(cards_note)}{' ' + esc(rest_note) if rest_note else ''}</p>"]
    body += [_item_html(i) for i in listed]
    body.append(_broken_html(broken_lines))
    attachments = tuple(
        DigestFile(f"fiche-dpe-{_safe(i.data.get('numero_dpe') or i.key)}.html",
                   "text/html", card(i.data, local).encode("utf-8"))
        for i in with_card)
    if rest_note:
        attachments += (DigestFile("dpe-complets.csv", "text/csv", full_csv(items)),)
    plain = re.sub(r"\n{3,}", "\n\n", "\n".join(text)).rstrip("\n") + "\n"
    return Digest(subject=subject, text=plain,
                  html=_page(heading, "\n".join(b for b in body if b)),
                  attachments=attachments, summary=summary(items, day, broken))


CSV_COLUMNS = ("priorite", "points", "classe", "numero_dpe", "date_reception", "adresse",
               "code_postal", "commune", "surface")


def full_csv(items: Sequence[SourceItem]) -> bytes:
    """Every DPE of the digest, one line each (UTF-8 with BOM: Excel reads it in French);
    a cell that a spreadsheet would run as a formula is quoted as text."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([_cell(item.data.get(c)) for c in CSV_COLUMNS])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _safe(value: Any) -> str:
    return "".join(c for c in str(value) if c.isalnum() or c in "-_")[:40] or "sans-numero"


def _broken_text(lines: list[str]) -> list[str]:
    if not lines:
        return []
    return ["", "Codes postaux non consultés (ils seront relus au prochain passage) :",
            *[f"- {line}" for line in lines]]


def _broken_html(lines: list[str]) -> str:
    if not lines:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return ("<p>Codes postaux non consultés (ils seront relus au prochain passage) :</p>"
            f"<ul>{items}</ul>")


def summary(items: Sequence[SourceItem], day: str, broken: Mapping[str, str]) -> str:
    """The short Telegram text for Ludo: the counts, then each P1 on one line."""
    items = ordered(items)
    tally = counts(items)
    lines = [f"Veille DPE du {day} : {headline(items)} "
             f"(P1 : {tally['P1']}, P2 : {tally['P2']}, P3 : {tally['P3']})."]
    p1 = [i for i in items if i.data.get("priorite") == "P1"]
    for item in p1[:SUMMARY_P1_LINES]:
        d = item.data
        est = d.get("estimation") if isinstance(d.get("estimation"), Mapping) else None
        price = f" · {euros(est.get('bas'))} – {euros(est.get('haut'))}" if est else ""
        surface = f" · {d['surface']:g} m²" if isinstance(d.get("surface"), int | float) else ""
        lines.append(f"• {d.get('classe') or '?'}{surface} · {title(d)}{price}")
    if len(p1) > SUMMARY_P1_LINES:
        lines.append(f"… et {len(p1) - SUMMARY_P1_LINES} autres P1 dans le courriel.")
    if broken:
        lines.append(f"{_plural(len(broken), 'code postal', 'codes postaux')} en panne : "
                     + ", ".join(sorted(broken)) + ".")
    return "\n".join(lines)

