"""The guards every HTTP endpoint shares (channels/web_guard.py, channels/web.py): the
client's IP behind the tunnel, the rate limiter, bearer parsing, the body limit (413,
declared or chunked), and a broken endpoint answering one French line, never a trace."""

from __future__ import annotations

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
from channels.web_guard import BodyLimit, RateLimiter, bearer, client_ip

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
