"""The DPE veille (issue 12, item 2): new energy diagnostics (ADEME open data, dataset
`dpe03existant`) in the agency's postcodes, each enriched into a prospect card.

Why it is built this way: the earlier Axi looked at the last 26 hours, 50 rows per
postcode, and kept nothing, so a late or failed run lost DPEs. Here each postcode is read
from its stored watermark (the last reception date seen) minus an overlap (DPEs are often
published weeks late), sorted by reception date ascending, following the API's `next`
links (page paging is capped by the API at size × page ≤ 10,000; `next` uses `after`), and
the engine keeps only the `numero_dpe` it never saw, so the overlap costs nothing. Because
the sort is ascending, the last date seen is always a safe place to resume, even when a
postcode broke midway or the run hit its cap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

from jobs.dpe_http import SourceError, get_json
from jobs.dpe_rows import FIELDS, parse_line
from jobs.types import Digest, Fetched, RunContext, SourceItem, VeilleRecord

DEFAULT_DATASET = "dpe03existant"
DEFAULT_OVERLAP_DAYS = 60
DEFAULT_PAGE_SIZE = 500
DEFAULT_CAP = 20_000
"""DPEs fetched per run at most (config `max_par_passage`); beyond, the run is partial and
the next one resumes from the watermarks."""
MAX_PAGES = 2_000
"""Pages read per postcode at most: `next` links that never end stop here."""
WHOLE = "*"
"""The source name of a failure of the whole veille (the engine's WHOLE_FETCH)."""
SORT = "date_reception_dpe,numero_dpe"
POSTCODE = re.compile(r"^\d{5}$")


def _int(config: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = config.get(name, default)
    if not isinstance(value, int | float) or isinstance(value, bool):
        return default
    return max(low, min(high, int(value)))


def postcodes(config: Mapping[str, Any]) -> list[str]:
    raw = config.get("codes_postaux") or []
    out: list[str] = []
    for value in raw if isinstance(raw, list) else []:
        text = str(value).strip()
        if POSTCODE.match(text) and text not in out:
            out.append(text)
    return out


def window_start(watermarks: Mapping[str, str], postcode: str, today: date,
                 overlap_days: int) -> date:
    """The first reception date asked for: the postcode's watermark (else the veille's,
    else today; never after today: a watermark from a bad date must not blind the veille)
    minus the overlap."""
    for key in (f"reception:{postcode}", "reception"):
        value = watermarks.get(key)
        if value:
            try:
                return (min(date.fromisoformat(value[:10]), today)
                        - timedelta(days=overlap_days))
            except ValueError:
                continue
    return today - timedelta(days=overlap_days)


def _page(body: Any) -> tuple[list[Any], str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise SourceError("réponse inattendue (pas de liste « results »)")
    nxt = body.get("next")
    return body["results"], nxt if isinstance(nxt, str) and nxt else None


def _unreadable(count: int) -> str:
    return f"{count} ligne(s) illisible(s) et aucune lisible (format de l'API changé ?)"


async def _unknown(ctx: RunContext, keys: list[str]) -> set[str]:
    """The keys this veille never stored (all of them without a store): only those count
    against the run's cap, so a window full of known DPEs never stops the veille."""
    if not keys or ctx.store is None:
        return set(keys)
    return set(keys) - await ctx.store.known_keys(ctx.veille.id, keys)


def _same_origin(url: str, base: str) -> bool:
    a, b = urlsplit(url), urlsplit(base)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


class DpeVeille:
    type = "dpe"

    async def fetch(self, ctx: RunContext) -> Fetched:
        config = ctx.veille.config
        dataset = str(config.get("dataset") or DEFAULT_DATASET)
        url = f"{ctx.settings.ademe_api_url.rstrip('/')}/{quote(dataset, safe='')}/lines"
        overlap = _int(config, "recouvrement_jours", DEFAULT_OVERLAP_DAYS, 0, 3650)
        size = _int(config, "taille_page", DEFAULT_PAGE_SIZE, 1, 10_000)
        cap = _int(config, "max_par_passage", DEFAULT_CAP, 1, 1_000_000)
        headers = {"User-Agent": ctx.settings.veille_user_agent}
        today = ctx.now.date()
        horizon = (today + timedelta(days=1)).isoformat()
        codes = postcodes(config)
        fetched = Fetched()
        if not codes:  # a config without usable postcodes must not be an endless "RAS"
            fetched.broken[WHOLE] = ("aucun code postal valide dans la configuration "
                                     "(« codes_postaux » : une liste de codes à 5 chiffres)")
            return fetched
        seen: set[str] = set()
        latest: dict[str, str] = {}
        new_count = 0
        for index, code in enumerate(codes):
            if new_count >= cap:
                fetched.partial = ((fetched.partial or f"plafond de {cap} DPE atteint")
                                   + " ; codes postaux non lus : " + ", ".join(codes[index:]))
                break
            ctx.progress(index, len(codes), f"DPE {code}")
            params: dict[str, str | int] | None = {
                "size": size, "code_postal_ban_in": code,
                "date_reception_dpe_gte": window_start(ctx.watermarks, code, today,
                                                       overlap).isoformat(),
                "sort": SORT, "select": ",".join(FIELDS),
            }
            page_url: str | None = url
            visited: set[str] = set()
            readable = unreadable = pages = 0
            capped = False  # this postcode stopped at the cap (not: the run is partial)
            try:
                while page_url is not None:
                    pages += 1
                    if pages > MAX_PAGES:
                        raise SourceError(f"plus de {MAX_PAGES} pages : lecture arrêtée")
                    body = await get_json(ctx.http, page_url, params, headers=headers)
                    results, nxt = _page(body)
                    page_items = []
                    for line in results:
                        data = parse_line(line) if isinstance(line, dict) else None
                        if data is None:
                            unreadable += 1
                            continue
                        readable += 1
                        if data["numero_dpe"] not in seen:
                            seen.add(data["numero_dpe"])
                            page_items.append(SourceItem(data["numero_dpe"], code, data))
                    unknown = await _unknown(ctx, [i.key for i in page_items])
                    for item in page_items:
                        if item.key in unknown:
                            if new_count >= cap:
                                fetched.partial = (f"plafond de {cap} DPE atteint (code "
                                                   f"postal {code} non terminé)")
                                capped = True
                                break
                            new_count += 1
                        fetched.items.append(item)
                        # a date after tomorrow is an error of the source: as a watermark
                        # it would blind the veille for good (nothing is received "after")
                        day = item.data["date_reception"]
                        if day > latest.get(code, "") and day <= horizon:
                            latest[code] = day
                    if capped:  # an earlier postcode's unreadable lines cut nothing here
                        break
                    if not results or nxt is None:
                        break
                    if not page_items:  # a page that brings nothing new: the API loops
                        raise SourceError(_unreadable(unreadable) if not readable else
                                          "pages sans aucun DPE nouveau : lecture arrêtée")
                    if not _same_origin(nxt, url):
                        raise SourceError("lien « next » vers un autre site, ignoré")
                    if nxt in visited:
                        raise SourceError("lien « next » qui boucle")
                    visited.add(nxt)
                    page_url, params = nxt, None
                if unreadable and not readable:
                    raise SourceError(_unreadable(unreadable))
            except SourceError as exc:
                fetched.broken[code] = str(exc)
            else:
                if unreadable:
                    note = f"{code} : {unreadable} ligne(s) illisible(s) ignorée(s)"
                    fetched.partial = f"{fetched.partial} ; {note}" if fetched.partial else note
                if not capped and not unreadable:  # read whole, whatever the others did
                    fetched.healthy.add(code)
        ctx.progress(len(codes), len(codes), "DPE")
        for code, day in latest.items():
            fetched.watermarks[f"reception:{code}"] = day
        if latest and not fetched.broken and fetched.partial is None:
            fetched.watermarks["reception"] = max(latest.values())
        return fetched

    async def enrich(self, ctx: RunContext, new: list[SourceItem]) -> list[SourceItem]:
        from jobs.dpe_enrich import enrich
        from jobs.trello import push_leads

        return await push_leads(ctx, await enrich(ctx, new))

    def render(self, veille: VeilleRecord, new: list[SourceItem], *, when: datetime,
               broken: Mapping[str, str]) -> Digest | None:
        from jobs.dpe_digest import render

        return render(veille, new, when=when, broken=broken)
