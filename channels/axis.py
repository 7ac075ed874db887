"""Axis ↔ Axi: MCP at /mcp with OAuth for Claude.ai's connector, and the earlier
`GET /briefing` and `GET/POST /memory` (issue 11, item 5).

The part the HTTP channel composes: the plain endpoints and the approval page as routes,
the MCP app (which routes `/mcp` and the OAuth endpoints itself) as the root app mounted
after every other route, and its session manager as a lifespan entered inside Axi's own
lifecycle. MCP answers only hosts named by AXI_PUBLIC_HOST, or loopback (local use).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from bot.axis_contract import AxisAccess, AxisRefused
from bot.channel import ChannelServices
from channels import axis_mcp, axis_oauth
from channels.web_guard import RateLimiter, WebConfig, WebPart, authorize, error

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
    routes = [
        Route("/briefing", _briefing(services, axis, limiter), methods=["GET"]),
        Route("/memory", _memory(services, axis, limiter), methods=["GET", "POST"]),
        Route(f"{axis_oauth.PAGE_PATH}/{{approval_id}}",
              axis_oauth.waiting_page(axis.oauth, issuer), methods=["GET"]),
    ]
    return WebPart(routes=routes, lifespans=[server.session_manager.run()],
                   root_app=axis_oauth.Throttled(mcp_app, RateLimiter(config.rate_per_minute)))


Endpoint = Callable[[Request], Awaitable[Response]]


def _briefing(services: ChannelServices, axis: AxisAccess, limiter: RateLimiter) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        grant = await authorize(request, services, SCOPES, limiter)
        if isinstance(grant, Response):
            return grant
        return PlainTextResponse(await axis.briefing(), headers=_NO_STORE)

    return endpoint


def _memory(services: ChannelServices, axis: AxisAccess, limiter: RateLimiter) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        grant = await authorize(request, services, SCOPES, limiter)
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
    except ValueError:
        return error(400, "json_invalide", "Le corps de la requête n'est pas du JSON valide.")
    text = next((value[k] for k in ("markdown", "contenu", "content")
                 if isinstance(value, dict) and isinstance(value.get(k), str)), None)
    if text is None:
        return error(400, "json_invalide", "Envoyez le Markdown dans le champ « markdown ».")
    return text
