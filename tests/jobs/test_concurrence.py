"""The veille concurrence's fetch against a loopback server of fictional agencies: HTML
pages (numbered and "Suivant" pagination), a JSON API, robots.txt, the delay between
requests, retries, and the failure modes (changed layout, 500, timeout, 429, a page of
10,000 links) — each a broken source or a partial run with its French reason."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from bot.config import Settings
from jobs.concurrence import ConcurrenceVeille, watermark_key
from jobs.concurrence_config import Agency
from jobs.types import RunContext, VeilleRecord
from tests.fakes import listing_server as _fake
from tests.fakes.listing_server import FakeListings

listing_server_session = _fake.listing_server_session
listing_server = _fake.listing_server

UA = "Axi/1.0 (veille ICI Dordogne; +https://axi.icidordogne.fr)"
NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def vezere(base: str, **extra: Any) -> dict[str, Any]:
    return {"nom": "Agence de la Vézère", "type": "html", "url": f"{base}/agence-vezere/annonces",
            "conteneur": "article.bien", "lien": "a.lien-annonce",
            "champs": {"titre": "h2", "prix": ".prix", "surface": ".surface", "commune": ".ville"},
            "pages": {"parametre": "page", "max": 5}, **extra}


def perigord(base: str) -> dict[str, Any]:
    return {"nom": "Périgord Immo", "type": "html", "url": f"{base}/perigord-immo/biens",
            "motif": r"/perigord-immo/bien-\d+$", "suivant": "a.suivant"}


def api(base: str) -> dict[str, Any]:
    return {"nom": "Vergt Immobilier", "type": "json", "url": f"{base}/api/biens",
            "chemin": "data.items", "pages": {"parametre": "page", "max": 5},
            "champs": {"url": "link", "titre": "title", "prix": "price", "surface": "surface",
                       "commune": "city"}}


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"User-Agent": UA}) as client:
        yield client


LOOPBACK_ALLOWED = "127.0.0.0/8,::1"
"""The fake agencies run on 127.0.0.1: the tests allow loopback, as an operator would
allow a LAN mirror (AXI_VEILLE_ALLOWED_NETWORKS); production allows nothing."""


def settings(allowed: str = LOOPBACK_ALLOWED) -> Settings:
    return Settings(_env_file=None, AXI_VEILLE_USER_AGENT=UA,  # type: ignore[call-arg]
                    AXI_VEILLE_ALLOWED_NETWORKS=allowed)


def context(http: httpx.AsyncClient, agences: list[Any], *, delai_s: float = 0.0,
            watermarks: dict[str, str] | None = None, allowed: str = LOOPBACK_ALLOWED,
            **config: Any) -> RunContext:
    veille = VeilleRecord(1, "concurrence", "concurrence",
                          {"agences": agences, "delai_s": delai_s, **config}, "0 7 * * *", {}, True)
    return RunContext(veille=veille, http=http, store=None, settings=settings(allowed), now=NOW,
                      watermarks=dict(watermarks or {}))


def mark(url: str) -> str:
    """The watermark key of the agency configured at `url` (its last listing count)."""
    return watermark_key(Agency("x", "html", url))


def kind(**options: Any) -> ConcurrenceVeille:
    return ConcurrenceVeille(**{"timeout_s": 2.0, "backoff_s": 0.01, **options})


async def test_html_json_and_both_paginations(listing_server: FakeListings,
                                              http: httpx.AsyncClient) -> None:
    base = listing_server.url
    progress: list[tuple[int, int | None, str]] = []
    ctx = context(http, [vezere(base), perigord(base), api(base)])
    ctx.progress = lambda done, total, what: progress.append((done, total, what))
    fetched = await kind().fetch(ctx)

    assert fetched.broken == {} and fetched.partial is None
    assert fetched.healthy == {"Agence de la Vézère", "Périgord Immo", "Vergt Immobilier"}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for item in fetched.items:
        assert item.key == item.data["url"]
        by_source.setdefault(item.source, []).append(dict(item.data))
    vez = by_source["Agence de la Vézère"]
    assert len(vez) == 12
    assert vez[0] == {"url": f"{base}/agence-vezere/annonce/1", "titre": "Maison périgourdine avec piscine",
                      "prix": 185000, "surface": 120, "commune": "Le Bugue"}
    assert vez[1]["prix"] == 59000 and vez[2]["surface"] == 45.5 and "prix" not in vez[3]
    assert [d["url"].rsplit("-", 1)[1] for d in by_source["Périgord Immo"]] == [
        "101", "102", "103", "104", "105", "106"]
    assert [d["url"] for d in by_source["Vergt Immobilier"]] == [
        f"{base}/annonces/vergt-1?ref=api", "https://listings.example.org/annonces/vergt-2",
        f"{base}/annonces/vergt-3", f"{base}/annonces/vergt-4"]
    assert by_source["Vergt Immobilier"][1] == {
        "url": "https://listings.example.org/annonces/vergt-2", "titre": "Villa", "prix": 265000,
        "surface": 150, "commune": "Saint-Amand-de-Vergt"}
    assert fetched.watermarks == {mark(f"{base}/agence-vezere/annonces"): "12",
                                  mark(f"{base}/perigord-immo/biens"): "6",
                                  mark(f"{base}/api/biens"): "4"}

    # pages 1-3 then an empty page 4 ends it; "Suivant" twice; the API's empty page 3
    assert [h.query for h in listing_server.hits("/agence-vezere")] == ["", "page=2", "page=3", "page=4"]
    assert [h.path for h in listing_server.hits("/perigord-immo")] == [
        "/perigord-immo/biens", "/perigord-immo/biens/page-2"]
    assert len(listing_server.hits("/api/biens")) == 3
    assert len(listing_server.hits("/robots.txt")) == 1  # once per host and run
    assert {h.user_agent for h in listing_server.requests} == {UA}
    assert progress[0] == (0, 3, "Agence de la Vézère") and progress[-1][:2] == (3, 3)


async def test_robots_txt_is_honoured(listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    prive = {"nom": "Agence privée", "type": "html", "url": f"{base}/prive/annonces", "lien": "a"}
    fetched = await kind().fetch(context(http, [prive, perigord(base)]))
    assert fetched.broken == {"Agence privée": f"robots.txt interdit la lecture de {base}/prive/annonces"}
    assert fetched.healthy == {"Périgord Immo"}
    assert listing_server.hits("/prive") == []

    listing_server.reset()
    listing_server.robots = "User-agent: Axi\nDisallow: /perigord-immo/biens/page-\n"
    fetched = await kind().fetch(context(http, [perigord(base)]))
    assert "robots.txt interdit" in fetched.broken["Périgord Immo"]
    assert [h.path for h in listing_server.hits("/perigord-immo")] == ["/perigord-immo/biens"]

    listing_server.reset()
    listing_server.robots_status = 404  # no robots.txt: everything allowed
    fetched = await kind().fetch(context(http, [prive]))
    assert fetched.broken == {} and fetched.healthy == {"Agence privée"}

    listing_server.reset()
    listing_server.robots_status = 500  # unreachable robots.txt: nothing is read
    fetched = await kind(retries=0).fetch(context(http, [perigord(base)]))
    assert fetched.broken["Périgord Immo"].startswith("robots.txt injoignable")
    assert listing_server.hits("/perigord-immo") == []


async def test_the_delay_between_requests_to_a_host_is_respected(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    await kind().fetch(context(http, [vezere(base)], delai_s=0.2))
    times = [h.at for h in listing_server.requests]
    assert len(times) == 5  # robots.txt + 4 pages
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= 0.19, gaps

    listing_server.reset()
    listing_server.robots = "User-agent: *\nCrawl-delay: 1\n"  # the site asks for more
    await kind().fetch(context(http, [perigord(base)], delai_s=0.05))
    times = [h.at for h in listing_server.requests]
    assert times[2] - times[1] >= 0.99


async def test_a_changed_layout_is_broken_not_no_news(listing_server: FakeListings,
                                                      http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.layout_changed = True
    fetched = await kind().fetch(context(http, [vezere(base)],
                                         watermarks={mark(f"{base}/agence-vezere/annonces"): "12"}))
    assert fetched.items == [] and fetched.healthy == set()
    reason = fetched.broken["Agence de la Vézère"]
    assert "plus aucune annonce" in reason and "il y en avait 12" in reason
    assert fetched.watermarks == {}  # the last good count stays: broken until listings return

    # the same emptiness on a source that never had listings is not a breakage
    fetched = await kind().fetch(context(http, [vezere(base)]))
    assert fetched.broken == {} and fetched.healthy == {"Agence de la Vézère"}
    assert fetched.watermarks == {mark(f"{base}/agence-vezere/annonces"): "0"}


async def test_a_page_of_10000_links_is_capped_and_partial(listing_server: FakeListings,
                                                           http: httpx.AsyncClient) -> None:
    base = listing_server.url
    flood = {"nom": "Inondation", "type": "html", "url": f"{base}/flood", "lien": "a.x"}
    fetched = await kind().fetch(context(http, [flood, perigord(base)]))
    flooded = [i for i in fetched.items if i.source == "Inondation"]
    assert len(flooded) == 2000 and flooded[0].key == f"{base}/flood/annonce-0"
    assert fetched.partial == "Inondation : plus de 2000 annonces : seules les 2000 premières sont gardées"
    assert fetched.healthy == {"Inondation", "Périgord Immo"}


async def test_retries_on_5xx_then_success(listing_server: FakeListings,
                                           http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.fail["/perigord-immo/biens"] = [500, 503]
    fetched = await kind().fetch(context(http, [perigord(base)]))
    assert fetched.broken == {} and len(fetched.items) == 6
    assert len([h for h in listing_server.hits("/perigord-immo/biens") if h.path.endswith("biens")]) == 3


async def test_5xx_after_the_retries_is_broken(listing_server: FakeListings,
                                               http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.fail["/perigord-immo/biens"] = [500, 500, 500]
    fetched = await kind().fetch(context(http, [perigord(base), api(base)]))
    assert fetched.broken == {"Périgord Immo": f"HTTP 500 sur {base}/perigord-immo/biens (après 3 essais)"}
    assert fetched.healthy == {"Vergt Immobilier"}


async def test_429_honours_retry_after(listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.fail["/api/biens"] = [429]
    listing_server.retry_after = "1"
    fetched = await kind().fetch(context(http, [api(base)]))
    assert fetched.broken == {} and len(fetched.items) == 4
    first, second = listing_server.hits("/api/biens")[:2]
    assert second.at - first.at >= 0.95

    listing_server.reset()
    listing_server.fail["/api/biens"] = [429]
    listing_server.retry_after = "3600"  # longer than we wait: give up at once, say why
    fetched = await kind().fetch(context(http, [api(base)]))
    assert "le site demande d'attendre 3600 s" in fetched.broken["Vergt Immobilier"]
    assert len(listing_server.hits("/api/biens")) == 1


async def test_a_timeout_is_broken(listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.delay_s["/perigord-immo/biens"] = 1.5
    fetched = await kind(timeout_s=0.2, retries=1).fetch(context(http, [perigord(base)]))
    assert fetched.broken["Périgord Immo"].startswith("délai dépassé (0.2 s)")
    assert "après 2 essais" in fetched.broken["Périgord Immo"]


async def test_a_later_page_failing_keeps_the_earlier_pages(listing_server: FakeListings,
                                                           http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.fail["/perigord-immo/biens/page-2"] = [500, 500, 500]
    fetched = await kind().fetch(context(http, [perigord(base)]))
    assert len(fetched.items) == 3 and fetched.healthy == {"Périgord Immo"}
    assert fetched.partial is not None and fetched.partial.startswith("Périgord Immo : page 2 illisible")

    listing_server.reset()
    base_api = api(base)
    base_api["chemin"] = "data.results"  # the API renamed its list: a parse error
    fetched = await kind().fetch(context(http, [base_api]))
    assert "chemin « data.results » introuvable" in fetched.broken["Vergt Immobilier"]


async def test_a_bad_config_is_a_broken_source(listing_server: FakeListings,
                                               http: httpx.AsyncClient) -> None:
    base = listing_server.url
    bad = {"nom": "Agence cassée", "type": "html", "url": f"{base}/x", "lien": "a[["}
    fetched = await kind().fetch(context(http, [bad, perigord(base)]))
    assert fetched.broken["Agence cassée"].startswith("configuration invalide : sélecteur CSS")
    assert fetched.healthy == {"Périgord Immo"}

    ctx = context(http, [])
    ctx.veille = VeilleRecord(1, "concurrence", "concurrence", {"agences": "oops"}, "", {}, True)
    fetched = await kind().fetch(ctx)
    assert fetched.broken == {"configuration": "configuration invalide : « agences » doit être une liste"}


def test_the_kind_declares_itself() -> None:
    veille = ConcurrenceVeille()
    assert veille.type == "concurrence" and veille.baseline_new_sources is True


async def test_an_oversized_page_is_refused_not_read(listing_server: FakeListings,
                                                     http: httpx.AsyncClient) -> None:
    base = listing_server.url
    flood = {"nom": "Inondation", "type": "html", "url": f"{base}/flood", "lien": "a.x"}
    fetched = await kind(max_bytes=20_000).fetch(context(http, [flood]))
    assert fetched.broken == {"Inondation": f"réponse trop grande (plus de 20 ko) sur {base}/flood"}


@pytest.mark.parametrize("robots", [
    "User-agent: *\nAllow: /\nDisallow: /perigord-immo/biens/page-\n",
    "User-agent: *\nDisallow: /*/page-\n",
    "User-agent: Axi\nAllow: /\nDisallow: /perigord-immo/biens/page-*$\n",
], ids=["allow-all-first", "wildcard", "wildcard-and-anchor"])
async def test_robots_txt_is_read_as_rfc_9309_says(listing_server: FakeListings,
                                                   http: httpx.AsyncClient, robots: str) -> None:
    """The longest matching rule decides and `*` / `$` are patterns (RFC 9309, as search
    engines read them). Python's robotparser takes the first rule in file order and reads
    `*` literally: an 'Allow: /' line first, or a wildcard, let Axi read pages the site
    forbids."""
    listing_server.robots = robots
    fetched = await kind().fetch(context(http, [perigord(listing_server.url)]))
    assert "robots.txt interdit" in fetched.broken.get("Périgord Immo", ""), fetched.broken
    assert [h.path for h in listing_server.hits("/perigord-immo")] == ["/perigord-immo/biens"]


@pytest.mark.parametrize("robots", [
    "User-agent: *\nDisallow: /\nAllow: /perigord-immo/\n",
    "User-agent: *\nDisallow: /*?  # no query strings\n",  # these pages have none
], ids=["longer-allow", "no-query-strings"])
async def test_robots_txt_allows_what_it_allows(listing_server: FakeListings,
                                                http: httpx.AsyncClient, robots: str) -> None:
    listing_server.robots = robots
    fetched = await kind().fetch(context(http, [perigord(listing_server.url)]))
    assert fetched.broken == {} and fetched.healthy == {"Périgord Immo"}
