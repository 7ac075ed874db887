"""The veille concurrence (issue 12, item 3): the new listings of competitor agencies,
read every morning from their listing pages or JSON APIs as the veille's config describes
them (jobs/concurrence_config.py), fetched politely and only on the configured sites at
public addresses (jobs/polite_fetch.py, jobs/fetch_guard.py) and extracted by
jobs/listing_parse.py. A listing's key is its normalized URL, so the engine reports each
one once; a new agency's listings are a silent baseline (`baseline_new_sources`,
jobs/baseline.py) until one fetch of it was complete, or its whole catalogue would
arrive as "new". An agency is identified by its address (`Agency.cle`), not its name.

A source that fails (HTTP error after retries, robots.txt, a refused address or
redirect, unreadable body, bad config) or that suddenly yields nothing while it yielded
listings last time (a changed layout: the selector finds nothing) is broken, with a
French reason — never "no news". The last count per agency is kept as a watermark
(`annonces:<hash of its address>`); a broken source leaves it as it was, so it stays
broken until listings come back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from jobs import concurrence_digest
from jobs.concurrence_config import MAX_ITEMS, MAX_PAGES, Agency, ConfigError, parse_config
from jobs.fetch_guard import shown
from jobs.guarded_http import Resolve
from jobs.listing_parse import (
    Listing,
    ListingParseError,
    check_content_type,
    parse_html,
    parse_json,
    with_query_param,
)
from jobs.polite_fetch import FetchError, PoliteFetcher, Refused, RobotsDisallowed
from jobs.types import Digest, Fetched, RunContext, SourceItem, VeilleRecord

WATERMARK_PREFIX = "annonces:"
CONFIG_SOURCE = "configuration"


def watermark_key(agency: Agency) -> str:
    """The key of the agency's last listing count (by its address: see Agency.cle)."""
    return WATERMARK_PREFIX + hashlib.sha256(agency.cle.encode()).hexdigest()[:32]


class ConcurrenceVeille:
    type = "concurrence"
    baseline_new_sources = True

    def __init__(self, *, timeout_s: float = 20.0, retries: int = 2, backoff_s: float = 1.0,
                 max_items: int = MAX_ITEMS, max_bytes: int = 5_000_000,
                 resolve: Resolve | None = None):
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.resolve = resolve
        """DNS (the system's by default; tests give names of their own)."""
        self.last_fetcher: PoliteFetcher | None = None
        """The last run's fetcher (its request count, for the benchmark and tests)."""

    # ------------------------------------------------------------------ fetch
    async def fetch(self, ctx: RunContext) -> Fetched:
        """Every agency's listings. `ctx.http` is not used: the fetcher has its own
        client, which connects only to public addresses (or AXI_VEILLE_ALLOWED_NETWORKS)."""
        out = Fetched()
        try:
            config = parse_config(ctx.veille.config)
        except ConfigError as exc:
            out.broken[CONFIG_SOURCE] = f"configuration invalide : {exc}"
            return out
        out.broken.update(config.invalid)
        user_agent = getattr(ctx.settings, "veille_user_agent", None) or "Axi"
        networks = tuple(getattr(ctx.settings, "veille_allowed_network_list", ()))
        async with PoliteFetcher(user_agent=user_agent, allowed_networks=networks,
                                 resolve=self.resolve, delay_s=config.delai_s,
                                 timeout_s=self.timeout_s, retries=self.retries,
                                 backoff_s=self.backoff_s, max_bytes=self.max_bytes) as fetcher:
            self.last_fetcher = fetcher
            await self._fetch_all(ctx, fetcher, config.agences, out)
        return out

    async def _fetch_all(self, ctx: RunContext, fetcher: PoliteFetcher, agences: list[Agency],
                         out: Fetched) -> None:
        partial: list[str] = []
        seen: set[str] = set()
        total = len(agences)
        for done, agency in enumerate(agences):
            ctx.progress(done, total, agency.nom)
            out.source_ids[agency.nom] = agency.cle
            try:
                listings, note, complete = await self._fetch_agency(fetcher, agency)
            except (FetchError, ListingParseError) as exc:
                out.broken[agency.nom] = str(exc)
                continue
            previous = _count(ctx.watermarks.get(watermark_key(agency),
                                                 ctx.watermarks.get(WATERMARK_PREFIX + agency.nom)))
            if not listings and previous:
                out.broken[agency.nom] = (
                    f"plus aucune annonce trouvée sur {shown(agency.url)} (il y en avait "
                    f"{previous} au dernier passage) : la mise en page du site a sans doute "
                    "changé, vérifier les sélecteurs")
                continue
            out.healthy.add(agency.nom)
            out.watermarks[watermark_key(agency)] = str(len(listings))
            if not complete:
                out.incomplete.add(agency.nom)
            if note:
                partial.append(f"{agency.nom} : {note}")
            for listing in listings:
                if listing.url not in seen:
                    seen.add(listing.url)
                    out.items.append(SourceItem(listing.url, agency.nom, listing.data()))
        ctx.progress(total, total, "terminé")
        out.partial = "; ".join(partial) or None

    async def _fetch_agency(self, fetcher: PoliteFetcher,
                            agency: Agency) -> tuple[list[Listing], str | None, bool]:
        """The agency's listings over its pages, why they may be incomplete, and whether
        the fetch was complete (as far as the config and the caps read: a page that failed
        on the way makes it incomplete). The first page failing is a FetchError or
        ListingParseError (the source is broken); a later page failing keeps what the
        earlier pages gave, noted as partial; a next page on another site is not read."""
        found: dict[str, Listing] = {}
        url, number, visited = agency.url, 1, set()
        note: str | None = None
        while True:
            visited.add(url)
            try:
                page = await fetcher.get(url, site=agency.url)
                check_content_type(page.content_type, agency.type)
                limit = self.max_items + 1  # enough to tell that one page alone overflows
                parsed = (parse_json(page.text, page.url, chemin=agency.chemin, champs=agency.champs,
                                     limit=limit)
                          if agency.type == "json" else
                          parse_html(page.text, page.url, lien=agency.lien, motif=agency.motif,
                                     conteneur=agency.conteneur, champs=agency.champs,
                                     suivant=agency.suivant, limit=limit))
            except (FetchError, ListingParseError) as exc:
                if number == 1 or isinstance(exc, RobotsDisallowed):
                    raise
                if isinstance(exc, Refused):  # the site's own doing, the same every run
                    return list(found.values()), f"page {number} non lue ({exc})", True
                if isinstance(exc, FetchError) and exc.status in (404, 410):
                    break  # past the last page
                note = (f"page {number} illisible ({exc}) ; les annonces des pages précédentes "
                        "sont gardées, et ses nouvelles annonces ne seront signalées qu'après une "
                        "lecture complète")
                return list(found.values()), note, False
            fresh = 0
            for listing in parsed.listings:
                if listing.url not in found:
                    found[listing.url] = listing
                    fresh += 1
            if len(found) > self.max_items:
                note = (f"plus de {self.max_items} annonces : seules les {self.max_items} "
                        "premières sont gardées")
                return list(found.values())[: self.max_items], note, True
            if number > 1 and fresh == 0:
                break  # past the end: an empty page, or the site repeating its last one
            if agency.suivant:
                following = parsed.next_url
                if not following or following in visited:
                    break
            elif agency.page_param and number < agency.max_pages:
                following = with_query_param(agency.url, agency.page_param, str(number + 1))
            elif agency.page_param and number >= MAX_PAGES:
                note = f"plus de {MAX_PAGES} pages : seules les {MAX_PAGES} premières sont lues"
                break
            else:
                break
            if number >= agency.max_pages:
                if number >= MAX_PAGES:
                    note = f"plus de {MAX_PAGES} pages : seules les {MAX_PAGES} premières sont lues"
                break
            url, number = following, number + 1
        return list(found.values()), note, True

    # ------------------------------------------------------------------ enrich, render
    async def enrich(self, ctx: RunContext, new: list[SourceItem]) -> list[SourceItem]:
        return new

    def render(self, veille: VeilleRecord, new: list[SourceItem], *, when: datetime,
               broken: Mapping[str, str]) -> Digest | None:
        ras = veille.config.get("ras") is True
        agences = veille.config.get("agences")
        order = [entry["nom"] for entry in agences if isinstance(entry, Mapping)
                 and isinstance(entry.get("nom"), str)] if isinstance(agences, list) else []
        return concurrence_digest.render(veille, new, when=when, broken=broken, ras=ras, order=order)


def _count(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
