"""The veille concurrence cannot be led off its sites (jobs/fetch_guard.py,
jobs/guarded_http.py, jobs/polite_fetch.py), against the loopback agencies: a private
address is refused unless allowed, a name is judged by the addresses it resolves to and
the connection goes to those very addresses, redirects are followed by hand — each hop on
the same site, allowed by robots.txt, at most five — and a "next page" on another host is
not read. Every refusal is a broken source (or a partial one) with its French reason."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from jobs.concurrence import ConcurrenceVeille
from jobs.polite_fetch import MAX_REDIRECTS
from tests.fakes import listing_server as _fake
from tests.fakes.listing_server import FakeListings
from tests.fakes.loopback import LoopbackServer
from tests.jobs.test_concurrence import UA, context, perigord, vezere

listing_server_session = _fake.listing_server_session
listing_server = _fake.listing_server
REFUSED_LOOPBACK = ("connexion refusée : 127.0.0.1 (adresse de boucle locale) ; la veille ne lit "
                    "que des sites publics (AXI_VEILLE_ALLOWED_NETWORKS)")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"User-Agent": UA}) as client:
        yield client


@pytest.fixture
def other_port() -> Iterator[tuple[str, list[str]]]:
    """Another service on the same host (Axi's own port, Ollama…): what it was asked."""
    asked: list[str] = []

    async def anything(request: Request) -> PlainTextResponse:
        asked.append(request.url.path)
        return PlainTextResponse("secret interne")

    with LoopbackServer(Starlette(routes=[Route("/{rest:path}", anything)])) as server:
        yield server.url, asked


class Names:
    """A DNS of the test's own (jobs/guarded_http.Resolve): names no system resolves."""

    def __init__(self, **names: Sequence[str]):
        self.names = {name.replace("_", "."): list(addresses) for name, addresses in names.items()}
        self.asked: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return list(self.names.get(host, [host]))


def kind(**options: Any) -> ConcurrenceVeille:
    return ConcurrenceVeille(**{"timeout_s": 2.0, "backoff_s": 0.01, "retries": 0, **options})


def port_of(server: FakeListings) -> int:
    return httpx.URL(server.url).port or 0


# ----------------------------------------------------------------------------- addresses
async def test_a_private_address_is_refused_without_the_allowance(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    fetched = await kind().fetch(context(http, [vezere(base), perigord(base)], allowed=""))
    assert fetched.broken == {"Agence de la Vézère": REFUSED_LOOPBACK,
                              "Périgord Immo": REFUSED_LOOPBACK}
    assert fetched.items == [] and fetched.healthy == set()
    assert listing_server.requests == []  # not even robots.txt

    fetched = await kind().fetch(context(http, [perigord(base)], allowed="10.0.0.0/8"))
    assert fetched.broken == {"Périgord Immo": REFUSED_LOOPBACK}  # another network allowed


async def test_a_name_is_judged_by_every_address_it_resolves_to(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    port = port_of(listing_server)
    names = Names(agence_test=["127.0.0.1"], mixte_test=["93.184.216.34", "10.0.0.7"],
                  mappee_test=["::ffff:127.0.0.1"], metadonnees_test=["169.254.169.254"])
    agences = [{"nom": name, "type": "html", "url": f"http://{name}:{port}/perigord-immo/biens",
                "lien": "a"} for name in ("agence.test", "mixte.test", "mappee.test")]
    fetched = await kind(resolve=names).fetch(context(http, agences, allowed=""))
    assert {name: reason.split(" ; ")[0] for name, reason in fetched.broken.items()} == {
        "agence.test": "connexion refusée : agence.test → 127.0.0.1 (adresse de boucle locale)",
        "mixte.test": "connexion refusée : mixte.test → 10.0.0.7 (adresse privée)",
        "mappee.test": "connexion refusée : mappee.test → ::ffff:127.0.0.1 (adresse de boucle "
                       "locale)"}
    assert listing_server.requests == []

    # allowing loopback does not allow the metadata address
    metadata = [{"nom": "M", "type": "html", "url": f"http://metadonnees.test:{port}/", "lien": "a"}]
    fetched = await kind(resolve=names).fetch(context(http, metadata))
    assert fetched.broken["M"].startswith(
        "connexion refusée : metadonnees.test → 169.254.169.254 (adresse de lien local)")


async def test_the_connection_goes_to_the_address_that_was_checked(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    """`agence.test` resolves only through the checked resolution: had httpx looked the
    name up again (the window DNS rebinding uses), it would not have connected at all."""
    port = port_of(listing_server)
    names = Names(agence_test=["127.0.0.1"])
    source = {**perigord(f"http://agence.test:{port}")}
    fetched = await kind(resolve=names).fetch(context(http, [source]))
    assert fetched.broken == {} and len(fetched.items) == 6
    assert {h.host for h in listing_server.requests} == {f"agence.test:{port}"}
    assert set(names.asked) == {"agence.test"}


# ----------------------------------------------------------------------------- redirects
async def test_a_redirect_on_the_same_site_is_followed_hop_by_hop(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    port = port_of(listing_server)
    names = Names(agence_test=["127.0.0.1"], www_agence_test=["127.0.0.1"])
    listing_server.redirects["/ancien"] = "/ancien-2"
    listing_server.redirects["/ancien-2"] = f"http://www.agence.test:{port}/perigord-immo/biens"
    source = {**perigord(f"http://agence.test:{port}"), "url": f"http://agence.test:{port}/ancien"}
    fetched = await kind(resolve=names).fetch(context(http, [source]))
    assert fetched.broken == {} and len(fetched.items) == 6
    assert fetched.items[0].key == f"https://www.agence.test:{port}/perigord-immo/bien-101"
    assert [(h.host, h.path) for h in listing_server.requests] == [
        (f"agence.test:{port}", "/robots.txt"), (f"agence.test:{port}", "/ancien"),
        (f"agence.test:{port}", "/ancien-2"), (f"www.agence.test:{port}", "/robots.txt"),
        (f"www.agence.test:{port}", "/perigord-immo/biens"),
        (f"www.agence.test:{port}", "/perigord-immo/biens/page-2")]


async def test_a_redirect_to_another_host_is_refused_even_when_allowed(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base, port = listing_server.url, port_of(listing_server)
    listing_server.redirects["/agence-vezere/annonces"] = f"http://localhost:{port}/perigord-immo/biens"
    fetched = await kind().fetch(context(http, [vezere(base)]))
    assert fetched.broken == {"Agence de la Vézère": (
        f"redirection refusée : http://localhost:{port}/perigord-immo/biens est sur un autre "
        "site (localhost) que la source (127.0.0.1)")}
    assert listing_server.hits("/perigord-immo") == []


async def test_a_redirect_to_another_port_of_the_host_is_refused(
        listing_server: FakeListings, http: httpx.AsyncClient,
        other_port: tuple[str, list[str]]) -> None:
    base, (internal, asked) = listing_server.url, other_port
    listing_server.redirects["/agence-vezere/annonces"] = f"{internal}/api/tags"
    fetched = await kind().fetch(context(http, [vezere(base)]))
    reason = fetched.broken["Agence de la Vézère"]
    assert reason.startswith(f"redirection refusée : {internal}/api/tags vise un autre port")
    assert asked == []


async def test_a_redirect_to_a_path_robots_txt_disallows_is_not_fetched(
        listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    listing_server.redirects["/agence-vezere/annonces"] = "/prive/annonces"
    fetched = await kind().fetch(context(http, [vezere(base)]))
    assert fetched.broken == {
        "Agence de la Vézère": f"robots.txt interdit la lecture de {base}/prive/annonces"}
    assert listing_server.hits("/prive") == []


async def test_redirects_are_bounded(listing_server: FakeListings, http: httpx.AsyncClient) -> None:
    base = listing_server.url
    for n in range(10):
        listing_server.redirects[f"/boucle-{n}"] = f"/boucle-{n + 1}"
    source = {"nom": "Boucle", "type": "html", "url": f"{base}/boucle-0", "lien": "a"}
    fetched = await kind().fetch(context(http, [source]))
    assert fetched.broken == {"Boucle": f"plus de {MAX_REDIRECTS} redirections à partir de "
                                        f"{base}/boucle-0"}
    assert len(listing_server.hits("/boucle")) == MAX_REDIRECTS + 1


async def test_a_robots_txt_redirected_to_another_host_is_not_followed(
        listing_server: FakeListings, http: httpx.AsyncClient,
        other_port: tuple[str, list[str]]) -> None:
    base, (internal, asked) = listing_server.url, other_port
    listing_server.redirects["/robots.txt"] = f"{internal}/robots.txt"
    fetched = await kind().fetch(context(http, [perigord(base)]))
    assert fetched.broken["Périgord Immo"].startswith(
        f"redirection refusée : {internal}/robots.txt vise un autre port")
    assert asked == [] and listing_server.hits("/perigord-immo") == []


# ----------------------------------------------------------------------------- next pages
@pytest.mark.parametrize("target", [
    "http://localhost:{port}/perigord-immo/biens/page-2",
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:11434/api/tags",
])
async def test_a_next_page_on_another_host_is_not_read(
        listing_server: FakeListings, http: httpx.AsyncClient, target: str) -> None:
    base, port = listing_server.url, port_of(listing_server)
    listing_server.next_href = target.format(port=port)
    fetched = await kind().fetch(context(http, [perigord(base)]))
    assert fetched.broken == {} and fetched.healthy == {"Périgord Immo"}
    assert [i.key.rsplit("-", 1)[1] for i in fetched.items] == ["101", "102", "103"]
    assert fetched.partial is not None
    assert fetched.partial.startswith(
        f"Périgord Immo : page 2 non lue (adresse refusée : {target.format(port=port)} ")
    assert listing_server.hits("/perigord-immo/biens/page-2") == []
    assert fetched.incomplete == set()  # the site's own doing, the same every run
