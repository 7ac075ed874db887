"""Hostile or broken competitor pages against the veille concurrence, over real HTTP: a
compressed bomb, an image instead of a page, a page naming a codec that is not a text
encoding, a JSON number too long to read, a next link urllib cannot read. Each is at
worst that source's failure with a French reason — never a crash of the whole run, so
the other agencies are still read."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from jobs.concurrence import ConcurrenceVeille
from tests.fakes import listing_server as _fake
from tests.fakes.listing_server import FakeListings
from tests.jobs.test_concurrence import UA, context, perigord

listing_server_session = _fake.listing_server_session
listing_server = _fake.listing_server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"User-Agent": UA}) as client:
        yield client


def kind(**options: Any) -> ConcurrenceVeille:
    return ConcurrenceVeille(**{"timeout_s": 5.0, "backoff_s": 0.01, "retries": 0, **options})


def html_source(base: str, path: str, nom: str = "Piégée") -> dict[str, Any]:
    return {"nom": nom, "type": "html", "url": f"{base}{path}", "lien": "a.bien"}


async def test_a_compressed_bomb_is_refused_once_decompressed_past_the_cap(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    bomb = gzip.compress(b"<a class='bien' href='/b'>x</a>" + b" " * 30_000_000, 9)
    assert len(bomb) < 100_000
    listing_server.custom["/bombe"] = (200, {"content-type": "text/html",
                                             "content-encoding": "gzip"}, bomb)
    fetched = await kind(max_bytes=2_000_000).fetch(
        context(http, [html_source(base, "/bombe"), perigord(base)]))
    assert fetched.broken == {"Piégée": f"réponse trop grande (plus de 2000 ko) sur {base}/bombe"}
    assert fetched.healthy == {"Périgord Immo"}


async def test_an_image_instead_of_a_page_is_a_broken_source(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.custom["/photo"] = (200, {"content-type": "image/png"},
                                       b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)
    fetched = await kind().fetch(context(http, [html_source(base, "/photo"), perigord(base)]))
    assert fetched.broken == {"Piégée": "le site a répondu « image/png » au lieu d'une page HTML"}
    assert fetched.healthy == {"Périgord Immo"}


@pytest.mark.parametrize(("content_type", "meta"), [
    ("text/html", '<meta charset="rot13">'), ("text/html; charset=base64", ""),
    ("text/html; charset=zlib", '<meta charset="hex">'),
])
async def test_a_page_naming_a_codec_that_is_not_a_text_encoding_is_still_read(
        listing_server: FakeListings, http: httpx.AsyncClient, content_type: str, meta: str) -> None:
    base = listing_server.url
    body = f'{meta}<a class="bien" href="/bien/1">Maison à Vergt</a>'.encode()
    listing_server.custom["/codec"] = (200, {"content-type": content_type}, body)
    fetched = await kind().fetch(context(http, [html_source(base, "/codec"), perigord(base)]))
    assert fetched.broken == {}
    assert [dict(i.data) for i in fetched.items if i.source == "Piégée"] == [
        {"url": f"{base}/bien/1", "titre": "Maison à Vergt"}]


async def test_a_json_number_too_long_to_read_breaks_that_source_only(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    body = ('{"data": {"items": [{"url": "/a/1", "price": ' + "9" * 5000 + "}]}}").encode()
    listing_server.custom["/api-geante"] = (200, {"content-type": "application/json"}, body)
    source = {"nom": "Géante", "type": "json", "url": f"{base}/api-geante", "chemin": "data.items"}
    fetched = await kind().fetch(context(http, [source, perigord(base)]))
    assert fetched.broken == {"Géante": "réponse JSON illisible (nombre démesuré)"}
    assert fetched.healthy == {"Périgord Immo"} and len(fetched.items) == 6


async def test_odd_prices_and_a_huge_listing_field_from_an_api(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    items = [{"url": "/a/1", "price": "1.250.000,50 €", "surface": "1 200 m²"},
             {"url": "/a/2", "price": 1e308 * 10, "surface": "NaN", "title": "x" * 100_000},
             {"url": "/a/3", "price": [1, 2], "surface": {"m2": 3}, "title": None}]
    listing_server.custom["/api-bizarre"] = (
        200, {"content-type": "application/json"}, json.dumps({"items": items}).encode())
    source = {"nom": "Bizarre", "type": "json", "url": f"{base}/api-bizarre", "chemin": "items",
              "champs": {"prix": "price", "surface": "surface", "titre": "title"}}
    fetched = await kind().fetch(context(http, [source]))
    assert fetched.broken == {}
    data = [dict(i.data) for i in fetched.items]
    assert data[0] == {"url": f"{base}/a/1", "prix": 1250000, "surface": 1200}
    assert data[1]["titre"] == "x" * 199 + "…" and "prix" not in data[1] and "surface" not in data[1]
    assert data[2] == {"url": f"{base}/a/3"}


async def test_a_next_link_urllib_cannot_read_ends_the_pages(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.next_href = "http://[unclosed/page-2"
    fetched = await kind().fetch(context(http, [perigord(base)]))
    assert fetched.broken == {} and len(fetched.items) == 3 and fetched.incomplete == set()
