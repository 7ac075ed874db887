"""The DVF veille (type "dvf", seeded Mondays 09:00): the sales imported into ventes_dvf
since its last run, in the configured postcodes, reported once each.

Why it reads the table rather than the files: `axi dvf import` (or this veille itself,
with config {"importer": true}; default false) fills ventes_dvf when Etalab publishes a
release; the veille only has to say what arrived. Its watermark is the latest
`importe_le` it saw; it reads back one day before it (an import committed late is still
seen; the engine's per-veille keys make the overlap free). Each postcode's first run is a
silent baseline (`baseline_new_sources`): the first import's five years are not news.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from jobs.dvf_digest import render_dvf
from jobs.types import Digest, Fetched, RunContext, SourceItem, VeilleRecord

WATERMARK = "importe_le"
OVERLAP = timedelta(days=1)
IMPORT_SOURCE = "import DVF"


def item_of(sale: Any) -> SourceItem:
    """A stored sale (memory.dvf.DvfSale) as a veille item: small JSON for the digest."""
    return SourceItem(key=sale.cle, source=sale.code_postal or "", data={
        "date": sale.date_mutation.isoformat(),
        "prix": str(sale.valeur) if sale.valeur is not None else None,
        "nature": sale.nature,
        "adresse": sale.adresse,
        "commune": sale.nom_commune,
        "code_postal": sale.code_postal,
        "code_commune": sale.code_commune,
        "types": list(sale.types_locaux),
        "surface_bati": sale.surface_bati,
        "surface_terrain": sale.surface_terrain,
        "pieces": sale.pieces,
        "parcelles": list(sale.parcelles),
    })


class DvfVeille:
    type = "dvf"
    baseline_new_sources = True

    async def fetch(self, ctx: RunContext) -> Fetched:
        config = ctx.veille.config
        postcodes = [str(p) for p in config.get("codes_postaux") or []]
        fetched = Fetched()
        if config.get("importer") and not ctx.dry_run:
            await self._import(ctx, fetched)
        since = None
        mark = ctx.watermarks.get(WATERMARK)
        if mark:
            since = datetime.fromisoformat(mark) - OVERLAP
        sales = await ctx.store.sales_imported_since(since, postcodes)
        fetched.items = [item_of(s) for s in sales]
        fetched.healthy.update(postcodes)
        latest = max((s.importe_le for s in sales), default=None)
        if latest is not None and (not mark or latest > datetime.fromisoformat(mark)):
            fetched.watermarks[WATERMARK] = latest.isoformat()
        return fetched

    async def _import(self, ctx: RunContext, fetched: Fetched) -> None:
        """The latest geo-DVF release first (settings.dvf_url, the last five years)."""
        from jobs.dvf_import import default_sources, import_sources

        departement = str(ctx.veille.config.get("departement", "24"))
        report = await import_sources(
            ctx.store, default_sources(ctx.settings.dvf_url, ctx.now),
            departement=departement, http=ctx.http, progress=ctx.progress, default=True)
        if report.failed:
            fetched.broken[IMPORT_SOURCE] = "; ".join(
                f"{s.source} : {s.error}" for s in report.failed)[:500]
        else:
            fetched.healthy.add(IMPORT_SOURCE)

    async def enrich(self, ctx: RunContext, new: list[SourceItem]) -> list[SourceItem]:
        return new

    def render(self, veille: VeilleRecord, new: list[SourceItem], *, when: datetime,
               broken: Mapping[str, str]) -> Digest | None:
        return render_dvf(veille, new, when=when, broken=broken)
