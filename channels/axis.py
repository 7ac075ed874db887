"""Axis ↔ Axi: MCP at /mcp with OAuth for Claude.ai's connector, and the earlier
`GET /briefing` and `GET/POST /memory` (issue 11, item 5).

The part the HTTP channel composes: the plain endpoints and the approval page as routes,
the MCP app (which routes `/mcp` and the OAuth endpoints itself) as the root app mounted
after every other route, and its session manager as a lifespan entered inside Axi's own
lifecycle. MCP answers only hosts named by AXI_PUBLIC_HOST, or loopback (local use).

Mounted at the root, that app receives every request no other route took: a path of the
MCP app goes on to it; anything else gets a French JSON 404, or a French 405 with `Allow`
for a known path asked with a wrong method (`GET /chat-proxy`), never MCP's English
"Not Found".
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.axis_contract import AxisAccess, AxisRefused
from bot.channel import ChannelServices
from channels import axis_mcp, axis_oauth
from channels.web_guard import Network, RateLimiter, WebConfig, WebPart, authorize, error

NOT_FOUND = ("introuvable", "Cette adresse n'existe pas.")

SCOPES = frozenset({"axis"})
_NO_STORE = {"Cache-Control": "no-store"}


def transport_security(config: WebConfig) -> TransportSecuritySettings:
    host = config.public_host
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[host, f"{host}:*", "127.0.0.1", "127.0.0.1:*", "localhost",
                       "localhost:*", "[::1]", "[::1]:*"],
        allowed_origins=[f"https://{host}", "https://claude.ai", "https://claude.com",
                         "http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])


def part(services: ChannelServices, config: WebConfig) -> WebPart:
    axis = services.axis
    if axis is None:
        return WebPart(routes=[])
    issuer = f"https://{config.public_host}"
    resource_url = f"{issuer}/mcp"
    provider = axis_oauth.AxisProvider(axis.oauth, issuer=issuer, resource_url=resource_url)
    server = axis_mcp.build_server(axis, config, provider, issuer=issuer,
                                   resource_url=resource_url)
    mcp_app = server.streamable_http_app(transport_security=transport_security(config))
    limiter = RateLimiter(config.rate_per_minute)
    # per IP, refused tokens: past the rate, 429 without a lookup (also for /mcp)
    guesses = RateLimiter(config.rate_per_minute)
    guard = Guard(guesses, config.trusted_proxies)
    routes = [
        Route("/briefing", _briefing(services, axis, limiter, guard), methods=["GET"]),
        Route("/memory", _memory(services, axis, limiter, guard), methods=["GET", "POST"]),
        Route(f"{axis_oauth.PAGE_PATH}/{{approval_id}}",
              axis_oauth.waiting_page(axis.oauth, issuer), methods=["GET"]),
    ]
    throttled = axis_oauth.Throttled(mcp_app, RateLimiter(config.rate_per_minute),
                                     config.trusted_proxies, oauth=axis.oauth,
                                     guesses=guesses)
    return WebPart(routes=routes, lifespans=[server.session_manager.run()],
                   root_app=McpOnly(throttled, list(mcp_app.routes)))


class McpOnly:
    """ASGI, the root app: only the MCP app's own paths (`/mcp`, the OAuth endpoints and
    their metadata) reach it. Any other request — mounted at the root, this app gets all
    that no route before it took — is answered in French: 405 with `Allow` when a route
    (of MCP's, or of the app this is mounted in) has the path but not the method, else
    404."""

    def __init__(self, app: ASGIApp, routes: list[Any]):
        self.app, self.routes = app, routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        allowed: set[str] = set()
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL or (match is Match.NONE and self._slash(scope, route)):
                await self.app(scope, receive, send)  # (MCP redirects /mcp/ to /mcp)
                return
            if match is Match.PARTIAL:
                allowed |= set(getattr(route, "methods", None) or ())
        outer = scope.get("router")  # the app this is mounted in: its other routes
        for route in getattr(outer, "routes", ()):
            if isinstance(route, Mount) and route.app is self:
                continue
            if route.matches(scope)[0] is Match.PARTIAL:
                allowed |= set(getattr(route, "methods", None) or ())
        if allowed:
            response = error(405, "methode_non_autorisee",
                             f"Cette adresse n'accepte pas la méthode {scope.get('method')} "
                             f"(seulement : {', '.join(sorted(allowed))}).",
                             headers={"Allow": ", ".join(sorted(allowed))})
        else:
            response = error(404, *NOT_FOUND)
        await response(scope, receive, send)

    @staticmethod
    def _slash(scope: Scope, route: Any) -> bool:
        path = scope["path"]
        if len(path) < 2 or not path.endswith("/"):
            return False
        return bool(route.matches({**scope, "path": path.rstrip("/")})[0] is not Match.NONE)


Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Guard:
    """Refused tokens per client IP (web_guard.authorize's `guesses`)."""

    guesses: RateLimiter
    trusted: tuple[Network, ...]


def _briefing(services: ChannelServices, axis: AxisAccess, limiter: RateLimiter,
              guard: Guard) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        grant = await authorize(request, services, SCOPES, limiter, guesses=guard.guesses,
                                trusted=guard.trusted)
        if isinstance(grant, Response):
            return grant
        return PlainTextResponse(await axis.briefing(), headers=_NO_STORE)

    return endpoint


def _memory(services: ChannelServices, axis: AxisAccess, limiter: RateLimiter,
            guard: Guard) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        grant = await authorize(request, services, SCOPES, limiter, guesses=guard.guesses,
                                trusted=guard.trusted)
        if isinstance(grant, Response):
            return grant
        if request.method == "GET":
            return PlainTextResponse(await axis.consignes_markdown(), headers=_NO_STORE,
                                     media_type="text/markdown; charset=utf-8")
        markdown = _markdown(await request.body(), request.headers.get("content-type", ""))
        if isinstance(markdown, Response):
            return markdown
        try:
            update = await axis.replace_consignes(grant, markdown)
        except AxisRefused as exc:
            return error(400, "consignes_invalides", str(exc))
        body = {"etat": "remplacees" if update.replaced else "demande_envoyee",
                "consignes": update.count, "message": update.message}
        if update.confirmation_id is not None:
            body["confirmation"] = update.confirmation_id
        return JSONResponse(body, status_code=200 if update.replaced else 202)

    return endpoint


def _markdown(raw: bytes, content_type: str) -> str | Response:
    """The Markdown of a POST /memory: the body itself, or the `markdown` (or `contenu`,
    `content`) string of a JSON object."""
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return error(400, "encodage_invalide", "Le texte doit être en UTF-8.")
    if "json" not in content_type.lower():
        return body
    try:
        value = json.loads(body or "null")
    except (ValueError, RecursionError):  # nested too deep is bad input, not a crash
        return error(400, "json_invalide", "Le corps de la requête n'est pas du JSON valide.")
    text = next((value[k] for k in ("markdown", "contenu", "content")
                 if isinstance(value, dict) and isinstance(value.get(k), str)), None)
    if text is None:
        return error(400, "json_invalide", "Envoyez le Markdown dans le champ « markdown ».")
    return text
