"""Who sees what of /health and /metrics, over real HTTP against Axi's real server
(issue 13 §2): the public — which through the Cloudflare tunnel comes from a loopback
peer, with Cloudflare's headers — gets the status only; the server itself (a loopback
peer, no proxy header) or a bearer token of scope `admin` held by Ludo or an
administrateur gets the details; /metrics is refused to everyone else."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bot.app import Axi
from channels.web import WebChannel
from channels.web_guard import WebConfig
from memory.database import Database
from tests.bot.test_pipeline import make_settings
from tests.conftest import empty_tables
from tests.fakes.ollama_server import FakeOllama

TUNNEL = {"CF-Connecting-IP": "203.0.113.7", "CF-Ray": "8c1f2a3b4c5d6e7f-CDG",
          "X-Forwarded-For": "203.0.113.7"}
"""What cloudflared adds to a request from the internet (its peer is 127.0.0.1)."""


@dataclass
class Site:
    axi: Axi
    base: str
    admin: str
    chat: str
    demoted_admin: str


def outward_ip() -> str | None:
    """This machine's address on its network (no packet is sent), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("203.0.113.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def _site(db: Database, database_url: str | None, data_dir: Path, ollama: FakeOllama,
                host: str) -> AsyncIterator[Site]:
    await empty_tables(db)
    web = WebChannel(WebConfig(host=host, port=0))
    async with Axi(make_settings(ollama, None, database_url, data_dir), {"web": web}) as axi:
        store = axi.store
        ludo = await store.add_person("Ludo", relation="créateur")
        anthony = await store.add_person("Anthony", relation="administrateur")
        julie = await store.add_person("Julie", relation="administrateur")
        admin = await store.create_token(anthony.id, scope="admin")
        chat = await store.create_token(ludo.id, scope="chat")
        demoted = await store.create_token(julie.id, scope="admin")
        await store.update_person(julie.id, relation="équipe")  # no longer runs Axi
        await axi.start_channels()
        yield Site(axi, f"http://{host}:{web.port}", admin.secret, chat.secret, demoted.secret)


@pytest.fixture
async def site(db: Database, database_url: str | None, test_data_dir: Path,
               ollama_server: FakeOllama) -> AsyncIterator[Site]:
    async for value in _site(db, database_url, test_data_dir, ollama_server, "127.0.0.1"):
        yield value


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_the_tunnel_gets_the_status_only_and_the_server_itself_the_details(
        site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=15) as client:
        local = await client.get("/health")
        assert local.status_code == 200 and local.headers["cache-control"] == "no-store"
        assert local.json()["components"]["database"]["status"] == "ok"
        assert local.json()["components"]["channels"]["web"]["state"] == "ok"

        public = await client.get("/health", headers=TUNNEL)
        assert public.status_code == 200 and public.json() == {"status": "ok"}
        for forged in ({"CF-Connecting-IP": "127.0.0.1"}, {"X-Forwarded-For": "127.0.0.1"},
                       {"CF-Connecting-IP": "pas une adresse"}, {"Forwarded": "for=127.0.0.1"}):
            assert (await client.get("/health", headers=forged)).json() == {"status": "ok"}

        admin = await client.get("/health", headers={**TUNNEL, **bearer(site.admin)})
        assert admin.status_code == 200 and "components" in admin.json()
        wrong_scope = await client.get("/health", headers={**TUNNEL, **bearer(site.chat)})
        assert wrong_scope.status_code == 403
        assert wrong_scope.json()["error"] == "portee_insuffisante"
        for refused in ("axi_pas-un-vrai-jeton-du-tout", site.demoted_admin):
            invalid = await client.get("/health", headers={**TUNNEL, **bearer(refused)})
            assert invalid.status_code == 401 and "components" not in invalid.text


async def test_metrics_only_for_the_server_itself_or_an_admin_token(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base, timeout=15) as client:
        local = await client.get("/metrics")
        assert local.status_code == 200
        assert local.headers["content-type"].startswith("text/plain")
        assert 'axi_queue_depth{queue="inbox"} 0.0' in local.text
        assert 'axi_component_ok{component="database"} 1.0' in local.text

        anonymous = await client.get("/metrics", headers=TUNNEL)
        assert anonymous.status_code == 401 and "axi_" not in anonymous.text
        assert anonymous.headers["www-authenticate"] == 'Bearer realm="axi"'
        assert (await client.get("/metrics", headers={**TUNNEL, **bearer(site.chat)})
                ).status_code == 403
        assert (await client.get("/metrics", headers={**TUNNEL, **bearer(site.demoted_admin)})
                ).status_code == 401
        admin = await client.get("/metrics", headers={**TUNNEL, **bearer(site.admin)})
        assert admin.status_code == 200
        assert 'axi_queue_depth{queue="outbox"} 0.0' in admin.text


async def test_a_client_elsewhere_on_the_network_is_not_local(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    address = outward_ip()
    if address is None:
        pytest.skip("this machine has no address besides loopback")
    async for site in _site(db, database_url, test_data_dir, ollama_server, address):
        async with httpx.AsyncClient(base_url=site.base, timeout=15) as client:
            # no proxy header at all, but the peer is not loopback
            assert (await client.get("/health")).json() == {"status": "ok"}
            assert (await client.get("/metrics")).status_code == 401
            details = await client.get("/health", headers=bearer(site.admin))
            assert details.json()["components"]["database"]["status"] == "ok"
            assert (await client.get("/metrics", headers=bearer(site.admin))).status_code == 200


async def test_tokens_guessed_on_health_and_metrics_are_rate_limited_per_ip(
        site: Site) -> None:
    """Every other endpoint counts a client's IP before its token is looked up; /health
    and /metrics looked up any number of wrong tokens (a database round trip and a log
    line each). Past the rate, wrong tokens from that IP get 429 without a lookup; the
    right token from another IP, and the public status, are not affected."""
    async with httpx.AsyncClient(base_url=site.base, timeout=15) as client:
        ok = {**TUNNEL, **bearer(site.admin), "CF-Connecting-IP": "203.0.113.8"}
        for _ in range(35):  # a monitor's right token is never limited by this
            assert (await client.get("/health", headers=ok)).status_code in (200, 503)
        codes = []
        for i in range(40):
            path = "/metrics" if i % 2 else "/health"
            codes.append((await client.get(path, headers={
                **TUNNEL, **bearer(f"axi_devine-{i}")})).status_code)
        assert codes[:30] == [401] * 30 and set(codes[30:]) == {429}
        refused = await client.get("/health", headers={**TUNNEL, **bearer("axi_encore")})
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert (await client.get("/health", headers=ok)).status_code in (200, 503)
        public = await client.get("/health", headers=TUNNEL)  # no token: the status
        assert public.status_code in (200, 503) and set(public.json()) == {"status"}
