"""The guards every HTTP endpoint shares (channels/web_guard.py, channels/web.py): the
client's IP behind the tunnel, the rate limiter, bearer parsing, the body limit (413,
declared or chunked), and a broken endpoint answering one French line, never a trace."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bot.channel import ChannelServices, ReplyOutcome
from channels.web import build_app
from channels.web_guard import BodyLimit, RateLimiter, WebConfig, bearer, client_ip, rate_key

pytestmark = pytest.mark.nodb


def scope(peer: str, **headers: str) -> dict:
    return {"type": "http", "client": (peer, 50000),
            "headers": [(k.lower().replace("_", "-").encode(), v.encode())
                        for k, v in headers.items()]}


def test_client_ip_is_cloudflares_only_behind_a_loopback_peer() -> None:
    assert client_ip(scope("127.0.0.1", CF_Connecting_IP="203.0.113.9")) == "203.0.113.9"
    assert client_ip(scope("::1", CF_Connecting_IP="2001:db8::1")) == "2001:db8::1"
    # a peer from outside cannot choose its address by sending the header
    assert client_ip(scope("198.51.100.7", CF_Connecting_IP="203.0.113.9")) == "198.51.100.7"
    # garbage in the header is not an address: the peer's stays
    assert client_ip(scope("127.0.0.1", CF_Connecting_IP="1.2.3.4, 5.6.7.8")) == "127.0.0.1"
    assert client_ip(scope("127.0.0.1")) == "127.0.0.1"
    assert client_ip({"type": "http", "client": None, "headers": []}) == "inconnu"


def test_cloudflares_ip_is_believed_from_the_trusted_proxies_only() -> None:
    """In Docker, cloudflared reaches Axi through docker-proxy: the peer is the bridge's
    gateway. Trusted when AXI_TRUSTED_PROXIES says so, never by default."""
    docker = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("172.16.0.0/12"))
    gateway = scope("172.18.0.1", CF_Connecting_IP="81.1.1.1")
    assert client_ip(gateway) == "172.18.0.1"  # every visitor one IP, unless configured
    assert client_ip(gateway, docker) == "81.1.1.1"
    assert client_ip(scope("198.51.100.7", CF_Connecting_IP="81.1.1.1"), docker) == \
        "198.51.100.7"
    assert client_ip(scope("::1", CF_Connecting_IP="81.1.1.1"), docker) == "::1"
    # a dual-stack socket reports loopback as an IPv4-mapped IPv6 address
    assert client_ip(scope("::ffff:127.0.0.1", CF_Connecting_IP="81.1.1.1")) == "81.1.1.1"
    assert WebConfig().trusted_proxies == (ipaddress.ip_network("127.0.0.0/8"),
                                           ipaddress.ip_network("::1/128"))


def test_the_trusted_proxies_come_from_the_settings() -> None:
    from pydantic import ValidationError

    from bot.config import Settings
    from channels.registry import web_config

    default = Settings(_env_file=None)  # type: ignore[call-arg]
    assert web_config(default).trusted_proxies == WebConfig().trusted_proxies
    docker = Settings(_env_file=None,  # type: ignore[call-arg]
                      AXI_TRUSTED_PROXIES="127.0.0.1, ::1, 172.16.0.0/12")
    assert web_config(docker).trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("172.16.0.0/12"))
    for bad in ("cloudflared", "172.16.0.0/40", "127.0.0.1;10.0.0.0/8"):
        with pytest.raises(ValidationError, match="not an IP address or network"):
            Settings(_env_file=None, AXI_TRUSTED_PROXIES=bad)  # type: ignore[call-arg]


def test_per_ip_limits_count_an_ipv6_address_as_its_64() -> None:
    assert rate_key("2a01:cb00:1:2::1") == rate_key("2a01:cb00:1:2:ffff::9") == \
        "2a01:cb00:1:2::/64"
    assert rate_key("2a01:cb00:1:3::1") != rate_key("2a01:cb00:1:2::1")
    assert rate_key("203.0.113.9") == "203.0.113.9"
    assert rate_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert rate_key("inconnu") == "inconnu"
    limiter = RateLimiter(3)
    assert [limiter.check(f"ip:{rate_key(f'2a01:cb00:1:2::{i}')}") for i in range(1, 5)][-1]


def test_rate_limiter_can_be_asked_without_counting() -> None:
    limiter = RateLimiter(2)
    assert [limiter.waiting("a") for _ in range(5)] == [None] * 5
    limiter.check("a")
    limiter.check("a")
    wait = limiter.waiting("a")
    assert wait is not None and 59.0 <= wait <= 60.0


def test_rate_limiter_slides_and_says_how_long_to_wait() -> None:
    now = [1000.0]
    limiter = RateLimiter(3, clock=lambda: now[0])
    assert [limiter.check("a") for _ in range(3)] == [None, None, None]
    wait = limiter.check("a")
    assert wait is not None and 59.0 <= wait <= 60.0
    assert limiter.check("b") is None  # keys are separate
    now[0] += 61
    assert limiter.check("a") is None


def test_rate_limiter_keeps_a_bounded_number_of_keys() -> None:
    limiter = RateLimiter(1, max_keys=100)
    for i in range(1000):
        limiter.check(f"ip-{i}")
    assert len(limiter._hits) == 100


def test_bearer_parsing() -> None:
    def req(value: str | None) -> Request:
        headers = [] if value is None else [(b"authorization", value.encode())]
        return Request({"type": "http", "headers": headers})

    assert bearer(req("Bearer abc")) == "abc"
    assert bearer(req("bearer   abc ")) == "abc"
    assert bearer(req("Basic abc")) is None
    assert bearer(req("Bearer ")) is None
    assert bearer(req(None)) is None


@pytest.fixture
async def limited() -> AsyncIterator[httpx.AsyncClient]:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    app = BodyLimit(Starlette(routes=[Route("/echo", echo, methods=["POST"]),
                                      Route("/hook", echo, methods=["POST"])]),
                    max_bytes=1024, exempt=("/hook",))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        yield client


async def test_body_limit_refuses_a_declared_or_streamed_excess(
        limited: httpx.AsyncClient) -> None:
    assert (await limited.post("/echo", content=b"x" * 1024)).json() == {"size": 1024}
    declared = await limited.post("/echo", content=b"x" * 1025)
    assert declared.status_code == 413
    assert declared.json()["error"] == "trop_volumineux" and "Ko" in declared.json()["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(5):
            yield b"y" * 400

    streamed = await limited.post("/echo", content=chunks())
    assert streamed.status_code == 413
    assert (await limited.post("/hook", content=b"z" * 5000)).json() == {"size": 5000}


def services() -> ChannelServices:
    async def nothing(*args: object) -> None:
        return None

    async def health() -> dict:
        return {"status": "ok"}

    async def outcome(message_id: int, seconds: float) -> ReplyOutcome:
        return ReplyOutcome(message_id, "introuvable", None, None)

    return ChannelServices(
        accept=nothing, accept_batch=nothing, read_cursor=nothing,  # type: ignore[arg-type]
        identify=nothing, addresses_of=nothing, notify=nothing,  # type: ignore[arg-type]
        lock=nothing, wait_reply=outcome, health=health,  # type: ignore[arg-type]
        clock=lambda: datetime.now(UTC))


async def test_a_broken_endpoint_answers_french_json_without_a_trace() -> None:
    async def broken(request: Request) -> JSONResponse:
        raise RuntimeError("secret internal detail /home/axi/.env")

    svc = services()
    svc.mount("/casse", Route("/casse", broken))
    app = build_app(svc)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/casse")
        assert (await client.get("/health")).json() == {"status": "ok"}
    assert response.status_code == 500
    assert response.json()["error"] == "erreur_interne"
    assert "secret" not in response.text and "Traceback" not in response.text


async def test_the_sites_paths_get_cors_on_answers_their_handler_never_gave() -> None:
    from channels.web_guard import WebConfig

    config = WebConfig(site_origins=("https://www.icidordogne.fr",), max_request_bytes=100)
    app = build_app(services(), config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        big = await client.post("/contact", content=b"x" * 500,
                                headers={"Origin": "https://www.icidordogne.fr"})
        other = await client.post("/contact", content=b"x" * 500,
                                  headers={"Origin": "https://evil.example"})
    assert big.status_code == 413
    assert big.headers["access-control-allow-origin"] == "https://www.icidordogne.fr"
    assert other.status_code == 413 and "access-control-allow-origin" not in other.headers


async def test_a_body_trickling_past_the_time_limit_gets_408() -> None:
    import asyncio

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"size": len(await request.body())})

    app = BodyLimit(Starlette(routes=[Route("/echo", echo, methods=["POST"])]),
                    max_bytes=1024, read_timeout_s=0.3)

    async def slowly() -> AsyncIterator[bytes]:
        yield b"a"
        await asyncio.sleep(1.0)
        yield b"b"

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        response = await client.post("/echo", content=slowly())
    assert response.status_code == 408 and response.json()["error"] == "delai_depasse"


async def test_deeply_nested_json_is_a_french_400_with_cors_not_a_500() -> None:
    """`{"a":{"a":…}}` 6000 deep (36 KB, under the size limit) overflows the parser's
    recursion: a 400 the site's widget can show, not a 500 and a traceback in the log."""
    origin = "https://www.icidordogne.fr"
    app = build_app(services(), WebConfig(site_origins=(origin,)))
    nested = '{"a":' * 6000 + "1" + "}" * 6000
    headers = {"Origin": origin, "Content-Type": "application/json"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        chat = await client.post("/chat-proxy", content=nested, headers=headers)
        contact = await client.post("/contact", content=nested, headers=headers)
    assert chat.status_code == 400 and chat.headers["access-control-allow-origin"] == origin
    assert chat.json()["content"][0]["text"] == "Le corps de la requête est imbriqué trop " \
        "profondément."
    assert contact.status_code == 400 and contact.json()["error"] == "json_invalide"
    assert contact.headers["access-control-allow-origin"] == origin


async def test_a_wrong_method_or_path_is_answered_in_french_json() -> None:
    origin = "https://www.icidordogne.fr"
    app = build_app(services(), WebConfig(site_origins=(origin,)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t") as client:
        wrong = await client.get("/chat-proxy", headers={"Origin": origin})
        health = await client.post("/health")
    assert wrong.status_code == 405 and wrong.json()["error"] == "methode_non_autorisee"
    assert wrong.json()["message"] == "Cette adresse n'accepte pas cette méthode."
    assert wrong.headers["access-control-allow-origin"] == origin
    assert health.status_code == 405 and health.json()["error"] == "methode_non_autorisee"
