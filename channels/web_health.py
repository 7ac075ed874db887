"""`GET /health` and `GET /metrics` (issue 13 §2): who may see what.

- `/health` answers everyone with its status code (200, or 503 when Axi cannot serve
  people: the rule is in bot/health_rules.py) so that Uptime Kuma can watch it through
  the Cloudflare tunnel. The public gets `{"status": …}` only (computed at most every
  PUBLIC_CACHE_S, whoever floods it); the whole report — every component and the
  reasons — goes to a local client (the server itself: a loopback peer with no proxy
  header, see web_guard.local_client) or to a bearer token of scope `admin`. A request
  with a token that is invalid (401) or of another scope (403) is refused, so a monitor
  whose token was revoked says so instead of silently losing the details. An IP that
  showed more wrong tokens than `rate_per_minute` in a minute gets 429 without a lookup.
- `/metrics` (Prometheus text) only for a local client or an `admin` token: 401 without
  a token (or with an invalid one), 403 for a token of another scope.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.channel import ChannelServices
from channels.web_guard import (
    RateLimiter,
    WebConfig,
    WebPart,
    authorize,
    bearer,
    client_ip,
    error,
    local_client,
    rate_key,
    too_many,
)

HEALTH_TIMEOUT_S = 5.0
METRICS_TIMEOUT_S = 10.0
PUBLIC_CACHE_S = 5.0
ADMIN = frozenset({"admin"})
NO_STORE = {"Cache-Control": "no-store"}


def status_code(status: str) -> int:
    """What a monitor sees: 503 for `error` (Axi cannot serve people), 200 otherwise."""
    return 503 if status == "error" else 200


async def report_of(services: ChannelServices) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(services.health(), timeout=HEALTH_TIMEOUT_S)
    except Exception as exc:  # a broken check is itself unhealthy
        return {"status": "error",
                "reasons": [f"rapport de santé impossible ({type(exc).__name__})"]}


async def privileged(request: Request, services: ChannelServices,
                     wrong: RateLimiter | None = None,
                     config: WebConfig | None = None) -> bool | JSONResponse:
    """True for a local client or an admin token; False for the public without a token;
    the 401/403 to answer for a token that does not grant `admin` — or 429, without a
    lookup, once the client's IP showed `wrong` too many such tokens (guessing tokens is
    bounded here as on every endpoint; a right token is never counted)."""
    if local_client(request):
        return True
    if bearer(request) is None:
        return False
    key = ""
    if wrong is not None:
        trusted = config.trusted_proxies if config is not None else WebConfig().trusted_proxies
        key = f"ip:{rate_key(client_ip(request, trusted))}"
        if (wait := wrong.waiting(key)) is not None:
            return too_many(wait)
    grant = await authorize(request, services, ADMIN)
    if isinstance(grant, JSONResponse):
        if wrong is not None:
            wrong.check(key)
        return grant
    return True


class PublicStatus:
    """The public's status, computed once for every request within `ttl_s`."""

    def __init__(self, ttl_s: float = PUBLIC_CACHE_S):
        self.ttl_s = ttl_s
        self.status: str | None = None
        self.at = 0.0
        self._lock = asyncio.Lock()

    def remember(self, status: str) -> None:
        self.status, self.at = status, time.monotonic()

    async def get(self, compute: Callable[[], Awaitable[dict[str, Any]]]) -> str:
        async with self._lock:  # a burst waits for one report, not one each
            if self.status is None or time.monotonic() - self.at >= self.ttl_s:
                self.remember(str((await compute()).get("status", "error")))
            assert self.status is not None
            return self.status


def part(services: ChannelServices, config: WebConfig | None = None) -> WebPart:
    config = config or WebConfig()
    public = PublicStatus()
    wrong = RateLimiter(config.rate_per_minute)  # per IP, tokens refused: then 429

    async def health(request: Request) -> Response:
        allowed = await privileged(request, services, wrong, config)
        if isinstance(allowed, JSONResponse):
            return allowed
        if allowed:
            report = await report_of(services)
            public.remember(str(report.get("status", "error")))
            return JSONResponse(report, status_code=status_code(report.get("status", "")),
                                headers=NO_STORE)
        status = await public.get(lambda: report_of(services))
        return JSONResponse({"status": status}, status_code=status_code(status),
                            headers=NO_STORE)

    async def metrics(request: Request) -> Response:
        if services.metrics is None:
            return error(404, "introuvable", "Cette adresse n'existe pas.")
        allowed = await privileged(request, services, wrong, config)
        if isinstance(allowed, JSONResponse):
            return allowed
        if not allowed:
            return error(401, "jeton_manquant", "Les métriques demandent un jeton "
                         "d'administration (en-tête Authorization: Bearer …).",
                         headers={"WWW-Authenticate": 'Bearer realm="axi"'})
        try:
            body, content_type = await asyncio.wait_for(
                services.metrics(request.headers.get("accept", "")), METRICS_TIMEOUT_S)
        except TimeoutError:
            return error(503, "indisponible", "Les métriques n'ont pas pu être lues à temps.")
        return Response(body, headers={"Content-Type": content_type, **NO_STORE})

    return WebPart(routes=[Route("/health", health, methods=["GET"]),
                           Route("/metrics", metrics, methods=["GET"])])
