"""The HTTP channel: Axi's web server (starlette on uvicorn, inside Axi's event loop).

It composes the app from small modules: `GET /health` (200, or 503 when Axi cannot
serve people; details only for a local client or an admin token) and `GET /metrics`
(channels/web_health.py); the token API (channels/web_api.py); the web chat at `/`
(channels/web_chat.py); the agency's website endpoints (channels/site.py); Axis
(channels/axis.py: /briefing, /memory, OAuth, and MCP mounted at the root last); and
whatever other channels mounted through the services object (Telegram's webhook). Every
request body is limited (channels/web_guard.py). Start fails with a clear error when the
port cannot be bound; `run()` is the server itself, supervised by the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount

from bot.channel import ChannelServices, ChunkFn, Delivery
from channels import axis, site, web_api, web_chat, web_health
from channels.web_guard import BodyLimit, CorsFallback, WebConfig, WebPart, error
from channels.web_slow import head_deadline_protocol
from channels.web_stream import LiveStreams

log = logging.getLogger(__name__)


class HttpStartError(OSError):
    """The HTTP server could not listen (address in use, not allowed)."""


def parts(services: ChannelServices, config: WebConfig, streams: LiveStreams) -> list[WebPart]:
    return [web_api.part(services, config, streams), site.part(services, config),
            axis.part(services, config), web_chat.part(config)]


def build_app(services: ChannelServices, config: WebConfig | None = None,
              streams: LiveStreams | None = None, *,
              built: list[WebPart] | None = None) -> Starlette:
    """The whole app. `built`: the parts, when the caller runs their lifespans."""
    config = config or WebConfig()
    streams = streams or LiveStreams()
    built = built if built is not None else parts(services, config, streams)

    routes: list[BaseRoute] = list(web_health.part(services, config).routes)
    exempt = []
    for path, app in services.routes:  # other channels' (Telegram's webhook: own limit)
        routes.append(app if isinstance(app, BaseRoute) else Mount(path, app=app))
        exempt.append(path)
    for part in built:
        routes.extend(part.routes)
    for part in built:
        if part.root_app is not None:  # MCP routes /mcp itself: at the root, last (it
            routes.append(Mount("/", app=part.root_app))  # answers the rest: 404/405)
    app = Starlette(routes=routes, exception_handlers={
        404: _not_found, 405: _not_allowed, 500: _server_error})
    app.add_middleware(BodyLimit, max_bytes=config.max_request_bytes, exempt=tuple(exempt))
    site_paths = tuple(p for part in built for p in part.public_paths)
    if site_paths and config.site_origins:  # outside the body limit: its 413 gets CORS too
        app.add_middleware(CorsFallback, paths=site_paths, origins=config.site_origins)
    return app


def _not_allowed_response() -> JSONResponse:
    return error(405, "methode_non_autorisee", "Cette adresse n'accepte pas cette méthode.")


async def _not_allowed(request: Request, exc: Exception) -> JSONResponse:
    response = _not_allowed_response()
    if isinstance(exc, HTTPException) and exc.headers:
        response.headers.update(exc.headers)  # Allow
    return response


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error(404, "introuvable", "Cette adresse n'existe pas.")


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    """Whatever broke, the client reads one French line, never a stack trace; the log
    keeps the details."""
    log.error("HTTP %s %s failed: %s: %s", request.method, request.url.path,
              type(exc).__name__, exc, exc_info=exc)
    return error(500, "erreur_interne", "Une erreur interne est survenue ; réessayez plus tard.")


class WebChannel:
    """uvicorn inside our own event loop, started and stopped explicitly."""

    name = "web"
    repeatable_send = True  # nothing is pushed: the reply is read in the request

    def __init__(self, config: WebConfig | str | None = None, port: int | None = None, *,
                 start_timeout_s: float | None = None):
        if isinstance(config, str):  # WebChannel(host, port): the plain server
            config = WebConfig(host=config, port=port if port is not None else 5000)
        config = config or WebConfig()
        if start_timeout_s is not None:
            config = replace(config, start_timeout_s=start_timeout_s)
        self.config = config
        self.host, self.port = config.host, config.port
        self.start_timeout_s = config.start_timeout_s
        self.streams = LiveStreams()
        self.server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._lifespans: contextlib.AsyncExitStack | None = None

    async def start(self, services: ChannelServices) -> None:
        built = parts(services, self.config, self.streams)
        self._lifespans = stack = contextlib.AsyncExitStack()
        try:
            for part in built:
                for lifespan in part.lifespans or ():
                    await stack.enter_async_context(lifespan)
        except BaseException:
            await stack.aclose()
            raise
        app = build_app(services, self.config, self.streams, built=built)
        # log_config=None: uvicorn's records go to Axi's own handler (JSON or plain,
        # secrets redacted: bot/logs.py), not to a handler of its own
        config = uvicorn.Config(app, host=self.host, port=self.port, log_config=None,
                                log_level="warning", lifespan="off", access_log=False,
                                proxy_headers=False,
                                http=head_deadline_protocol(self.config.head_timeout_s))
        # uvicorn captures SIGINT/SIGTERM while serving and hands them back when it
        # stops; `axi run` installs its own loop handlers after start() to stop everything.
        self.server = server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._serve(server), name="axi-web")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout_s
        while not server.started:
            if self._task.done() or loop.time() > deadline:
                raise HttpStartError(
                    f"cannot listen on {self.host}:{self.port} (address in use or not "
                    "allowed); set AXI_HTTP_HOST/AXI_HTTP_PORT")
            await asyncio.sleep(0.01)  # uvicorn exposes no "started" event
        sockets = [s for srv in server.servers for s in srv.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]

    @staticmethod
    async def _serve(server: uvicorn.Server) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; we must not
            await server.serve()

    async def run(self) -> None:
        """The server; returning or raising means it died (the core restarts it)."""
        if self._task is None:
            return
        await asyncio.shield(self._task)
        if self.server is not None and not self.server.should_exit:
            raise RuntimeError("the HTTP server stopped on its own")

    async def send(self, delivery: Delivery) -> str | None:
        # nothing is pushed over HTTP: a web client reads its reply in its request
        return f"web-{delivery.message_id}"

    def live(self, conversation: str, thread_ref: str | None = None) -> ChunkFn | None:
        return self.streams.live(conversation, thread_ref)

    async def stop(self) -> None:
        if self._task is not None and self.server is not None:
            self.server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit, TimeoutError):
                await asyncio.wait_for(self._task, timeout=10)
        if self._lifespans is not None:
            stack, self._lifespans = self._lifespans, None
            with contextlib.suppress(Exception):
                await stack.aclose()

    def describe(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}
