"""The optional Trello sink of the DPE veille: each new P1 lead becomes a card at the top
of a list, when AXI_TRELLO_KEY, AXI_TRELLO_TOKEN and AXI_TRELLO_LIST_ID are all set (the
earlier Axi's key and token were published in its code: new ones must be issued).

Why it asks Trello first: a run that failed after the cards were made is run again with
the same new items; the list's cards are read once per run and a lead whose DPE number is
already on a card is not posted twice. A Trello failure is logged and leaves the leads
without a card: it never fails the run, and the digest carries the leads anyway.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

import httpx

from jobs.dpe_card import estimate_text, features, mairie_text, sale_text, title
from jobs.dpe_http import SourceError, get_json
from jobs.types import RunContext, SourceItem

log = logging.getLogger(__name__)
_MARKDOWN = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def configured(settings: Any) -> bool:
    return bool(settings.trello_key and settings.trello_token and settings.trello_list_id)


def _md(value: Any) -> str:
    """Source text as inert Markdown (Trello renders descriptions)."""
    return _MARKDOWN.sub(r"\\\1", " ".join(str(value or "").split()))


def card_fields(data: Mapping[str, Any]) -> tuple[str, str]:
    numero = str(data.get("numero_dpe") or "")
    name = f"DPE {data.get('classe') or '?'} · {title(data)} · {numero}"[:500]
    liens = data.get("liens") if isinstance(data.get("liens"), Mapping) else {}
    lines = [f"**Priorité {data.get('priorite')}** ({data.get('points', 0)} points)",
             f"Adresse : {_md(title(data))}",
             _md(features(data)),
             f"Estimation : {_md(estimate_text(data))}",
             f"Dernière vente : {_md(sale_text(data))}",
             f"Mairie : {_md(mairie_text(data))}",
             "Pourquoi : " + _md(" ; ".join(str(r) for r in data.get("raisons") or []))]
    for key in ("carte", "cadastre"):
        url = liens.get(key) if liens else None
        if isinstance(url, str) and url.startswith("https://"):
            lines.append(f"{key.capitalize()} : {url}")
    lines.append(f"N° DPE : {numero}")
    return name, "\n\n".join(lines)[:16_000]


async def push_leads(ctx: RunContext, items: list[SourceItem]) -> list[SourceItem]:
    """The items, the P1 ones carrying `trello` (the card's URL) once a card exists."""
    settings = ctx.settings
    leads = [i for i in items if i.data.get("priorite") == "P1"]
    if ctx.dry_run or not leads or not configured(settings):
        return items
    api = settings.trello_api_url.rstrip("/")
    auth = {"key": settings.trello_key.get_secret_value(),
            "token": settings.trello_token.get_secret_value()}
    try:
        cards = await get_json(ctx.http, f"{api}/lists/{settings.trello_list_id}/cards",
                               {**auth, "fields": "name,desc,shortUrl"}, attempts=2,
                               backoff_s=0.5)
    except SourceError as exc:
        log.warning("Trello: the list's cards could not be read (%s); no card made", exc)
        return items
    existing = [c for c in cards if isinstance(c, dict)] if isinstance(cards, list) else []
    made: dict[str, str] = {}
    for lead in leads:
        numero = str(lead.data.get("numero_dpe") or lead.key)
        known = next((c for c in existing if numero in f"{c.get('name')} {c.get('desc')}"), None)
        if known is not None:
            made[lead.key] = str(known.get("shortUrl") or "")
            continue
        name, desc = card_fields(lead.data)
        try:
            response = await ctx.http.post(f"{api}/cards", params={
                **auth, "idList": settings.trello_list_id, "name": name, "desc": desc,
                "pos": "top"})
        except httpx.HTTPError as exc:
            log.warning("Trello: card for DPE %s not made (%s)", numero, type(exc).__name__)
            continue
        if response.status_code != 200:
            log.warning("Trello: card for DPE %s refused (HTTP %s)", numero, response.status_code)
            continue
        try:
            made[lead.key] = str(response.json().get("shortUrl") or "")
        except (ValueError, AttributeError):
            made[lead.key] = ""
    return [SourceItem(i.key, i.source, {**i.data, "trello": made[i.key]}) if i.key in made
            else i for i in items]
