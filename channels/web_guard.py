"""What guards every HTTP endpoint of Axi, in one place: the client's IP behind the
Cloudflare tunnel, bearer tokens and their scopes (401/403), rate limits (429 with
`Retry-After`), the request size limit (413), and JSON errors in French that never carry
a stack trace. Pure helpers and a small ASGI middleware; the endpoints live in
channels/web_api.py, channels/site.py and channels/axis*.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.channel import ChannelServices
from bot.web_contract import TokenGrant

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.0/8"),
                                 ipaddress.ip_network("::1/128"))
"""The proxies trusted by default: the Cloudflare tunnel on the same host."""


@dataclass(frozen=True)
class WebConfig:
    """The HTTP channel's settings, filled by the composition root."""

    host: str = "127.0.0.1"
    port: int = 5000
    public_host: str = "axi.icidordogne.fr"
    site_origins: tuple[str, ...] = ()
    reply_timeout_s: float = 90.0
    keepalive_s: float = 15.0
    max_request_bytes: int = 64 * 1024
    rate_per_minute: int = 30
    agency_email: str | None = None
    agency_cc: tuple[str, ...] = ()
    start_timeout_s: float = 10.0
    head_timeout_s: float = 10.0
    """A request's head (its headers) must arrive within this, or the connection is closed
    (channels/web_slow.py: slow clients holding connections)."""
    trusted_proxies: tuple[Network, ...] = LOOPBACK
    """Peers whose `CF-Connecting-IP` is believed (AXI_TRUSTED_PROXIES): the tunnel's
    cloudflared, seen from Axi (loopback; in Docker, the bridge's gateway)."""


def error(status: int, code: str, message: str, *,
          headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as every endpoint answers it: a code for programs, French for people."""
    return JSONResponse({"error": code, "message": message}, status_code=status,
                        headers=headers)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return address


def client_ip(scope: Scope | Request, trusted: tuple[Network, ...] = LOOPBACK) -> str:
    """The client's IP: the peer's, or, when the peer is a trusted proxy (the Cloudflare
    tunnel: on the same host every request comes from 127.0.0.1; in Docker, from the
    bridge's gateway), the address Cloudflare puts in `CF-Connecting-IP` (a valid IP only;
    a forged one from elsewhere is ignored, since such a peer is not trusted)."""
    if isinstance(scope, Request):
        scope = scope.scope
    peer = (scope.get("client") or ("", 0))[0] or ""
    address = _address(peer)
    if address is not None and any(address in network for network in trusted):
        for name, value in scope.get("headers") or ():
            if name == b"cf-connecting-ip":
                forwarded = _address(value.decode("latin-1"))
                if forwarded is not None:
                    return str(forwarded)
                break
    return peer or "inconnu"


PROXY_HEADERS = (b"cf-connecting-ip", b"cf-ray", b"x-forwarded-for", b"forwarded",
                 b"x-real-ip")
"""Headers a proxy adds (cloudflared adds the first three): a request carrying one came
through a proxy, whatever its TCP peer."""


def local_client(scope: Scope | Request) -> bool:
    """Whether the request comes from the server itself: its TCP peer is a loopback
    address AND it carries no proxy header. Through the Cloudflare tunnel the peer is
    loopback too (cloudflared runs on the same host) but Cloudflare's headers are there:
    such a request is the public's, never local, even when `CF-Connecting-IP` is
    missing, invalid or claims 127.0.0.1."""
    if isinstance(scope, Request):
        scope = scope.scope
    peer = _address((scope.get("client") or ("", 0))[0] or "")
    if peer is None or not peer.is_loopback:
        return False
    return not any(name in PROXY_HEADERS for name, _ in scope.get("headers") or ())


def rate_key(ip: str) -> str:
    """What per-IP limits count: an IPv4 address as is, an IPv6 address's /64 network (a
    home or a phone gets a whole /64 and picks any address in it: counting addresses, one
    visitor would be thousands)."""
    address = _address(ip)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address) if address is not None else ip


class RateLimiter:
    """A sliding window of `per_minute` requests per key (a token, an IP). Keeps at most
    `max_keys` keys (the least recently seen go first), so a flood of addresses cannot
    grow it without bound."""

    def __init__(self, per_minute: int, *, window_s: float = 60.0, max_keys: int = 20_000,
                 clock: Callable[[], float] = time.monotonic):
        self.limit = max(1, per_minute)
        self.window_s = window_s
        self.max_keys = max_keys
        self.clock = clock
        self._hits: OrderedDict[str, list[float]] = OrderedDict()

    def waiting(self, key: str) -> float | None:
        """Seconds `key` must wait (None: it may go), without counting a request."""
        now = self.clock()
        hits = [t for t in self._hits.get(key, ()) if t > now - self.window_s]
        return max(0.0, hits[0] + self.window_s - now) if len(hits) >= self.limit else None

    def check(self, key: str) -> float | None:
        """Count a request for `key`: None when allowed, else seconds to wait."""
        now = self.clock()
        hits = [t for t in self._hits.pop(key, ()) if t > now - self.window_s]
        if len(hits) >= self.limit:
            self._hits[key] = hits
            return max(0.0, hits[0] + self.window_s - now)
        hits.append(now)
        self._hits[key] = hits
        while len(self._hits) > self.max_keys:
            self._hits.popitem(last=False)
        return None


def too_many(retry_after: float) -> JSONResponse:
    seconds = max(1, math.ceil(retry_after))
    return error(429, "trop_de_requetes",
                 f"Trop de demandes : réessayez dans {seconds} seconde(s).",
                 headers={"Retry-After": str(seconds)})


def bearer(request: Request) -> str | None:
    value = request.headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _refused(request: Request, status: int, why: str) -> None:
    """Every request refused for its credentials leaves a line for Anthony (never the
    token itself): an attack on the tokens is visible in the logs."""
    peer = request.client.host if request.client else "?"
    seen = request.headers.get("cf-connecting-ip")
    log.info("HTTP %d refused: %s %s (%s) from %s%s", status, request.method,
             request.url.path[:100], why, peer, f" (CF-Connecting-IP {seen[:60]})" if seen else "")


def guess_key(scope: Scope | Request, trusted: tuple[Network, ...] = LOOPBACK) -> str:
    """What counts a client's refused tokens: its IP (an IPv6 address's /64)."""
    return f"jeton-refuse:{rate_key(client_ip(scope, trusted))}"


async def authorize(request: Request, services: ChannelServices, scopes: frozenset[str],
                    limiter: RateLimiter | None = None, *,
                    guesses: RateLimiter | None = None,
                    trusted: tuple[Network, ...] = LOOPBACK) -> TokenGrant | JSONResponse:
    """The token's grant, or the error to answer: 401 without a valid token, 403 for a
    token of another scope, 429 over the token's rate — or, with `guesses`, once the
    client's IP showed too many refused tokens (then without a lookup: guessing tokens
    is bounded). The secret is compared by its hash in the database
    (bot/web_access.py), never character by character here."""
    secret = bearer(request)
    unauthorized = {"WWW-Authenticate": 'Bearer realm="axi"'}
    if secret is None:
        _refused(request, 401, "no token")
        return error(401, "jeton_manquant",
                     "Un jeton est nécessaire (en-tête Authorization: Bearer …).",
                     headers=unauthorized)
    key = guess_key(request, trusted) if guesses is not None else ""
    if guesses is not None and (wait := guesses.waiting(key)) is not None:
        return too_many(wait)
    grant = await services.web.authenticate(secret) if services.web is not None else None
    if grant is None or grant.scope not in scopes:
        if guesses is not None:
            guesses.check(key)
    if grant is None:
        _refused(request, 401, "unknown, revoked or expired token")
        return error(401, "jeton_invalide", "Ce jeton n'est pas valable (inconnu, révoqué ou "
                     "expiré).", headers=unauthorized)
    if grant.scope not in scopes:
        _refused(request, 403, f"token {grant.token_id} of scope {grant.scope}")
        return error(403, "portee_insuffisante",
                     f"Ce jeton ne permet pas cela (portée « {grant.scope} »).")
    if limiter is not None and (wait := limiter.check(f"jeton:{grant.token_id}")) is not None:
        return too_many(wait)
    return grant


class BodyLimit:
    """ASGI middleware: a request body larger than `max_bytes` gets 413 (declared by
    Content-Length, or found while reading a chunked body) before any endpoint reads it.
    Paths in `exempt` (e.g. the Telegram webhook, with its own limit) pass untouched."""

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: tuple[str, ...] = (),
                 read_timeout_s: float = 30.0):
        self.app, self.max_bytes, self.exempt = app, max_bytes, exempt
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
        # read the whole body first (it is small: the limit is kilobytes), so an excess
        # found in a chunked body is refused before any endpoint has answered
        # within a time limit: a client trickling its body holds no request for ever
        chunks, seen, more = [], 0, True
        try:
            async with asyncio.timeout(self.read_timeout_s):
                while more:
                    message = await receive()
                    if message["type"] != "http.request":  # the client left
                        return
                    chunks.append(message.get("body", b""))
                    seen += len(chunks[-1])
                    if seen > self.max_bytes:
                        await self._refuse(scope, receive, send)
                        return
                    more = message.get("more_body", False)
        except TimeoutError:
            await error(408, "delai_depasse", "La requête a mis trop de temps à arriver ; "
                        "réessayez.")(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()  # then: the disconnect, when it comes

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        kb = self.max_bytes // 1024
        response = error(413, "trop_volumineux",
                         f"Requête trop volumineuse (au plus {kb} Ko).")
        await response(scope, receive, send)


class CorsFallback:
    """ASGI middleware: on the site's paths, an answer that did not come from the site's
    own handler (413 from the body limit, 405, 404) still carries the CORS headers for an
    allowed origin, so the site's page can read the French error instead of a CORS one."""

    def __init__(self, app: ASGIApp, paths: tuple[str, ...], origins: tuple[str, ...]):
        self.app, self.paths, self.origins = app, paths, frozenset(origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        origin = next((v.decode("latin-1") for k, v in scope.get("headers") or ()
                       if k == b"origin"), None)
        if origin is None or origin.rstrip("/") not in self.origins:
            await self.app(scope, receive, send)
            return

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                if not any(k.lower() == b"access-control-allow-origin" for k, _ in headers):
                    headers += [(b"access-control-allow-origin", origin.encode("latin-1")),
                                (b"vary", b"Origin")]
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_cors)


async def json_body(request: Request) -> dict[str, Any] | JSONResponse:
    """The request's JSON object, or a 400/415 in French."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower() and "text/plain" not in ctype.lower():
        return error(415, "type_non_pris_en_charge", "Envoyez du JSON (application/json).")
    raw = await request.body()
    try:
        value = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        return error(400, "json_invalide", "Le corps de la requête n'est pas du JSON valide.")
    except RecursionError:  # {"a":{"a":…}} thousands deep: no request needs that
        return error(400, "json_invalide", "Le corps de la requête est imbriqué trop "
                     "profondément.")
    if not isinstance(value, dict):
        return error(400, "json_invalide", "Le corps de la requête doit être un objet JSON.")
    return value


@dataclass
class WebPart:
    """What one area of the HTTP channel adds to the app: its routes, the async contexts
    that must run while the server runs (e.g. MCP's session manager), and an ASGI app
    mounted at the root after every route (MCP routes `/mcp` itself)."""

    routes: list[Any]
    lifespans: list[Any] | None = None
    root_app: Any = None
    public_paths: tuple[str, ...] = ()
    """Paths this part serves with CORS of its own (the site's), for documentation."""
