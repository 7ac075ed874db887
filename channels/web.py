"""The HTTP channel: Axi's web server (starlette on uvicorn, inside Axi's event loop).

Today it serves `GET /health` (JSON; 200 when healthy, 503 otherwise) and whatever routes
other channels mounted through the services object (Telegram's webhook, later the web
chat, the site widget and MCP). Start fails with a clear error when the port cannot be
bound; `run()` is the server itself, supervised by the core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route

from bot.channel import ChannelServices, ChunkFn, Delivery

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0


class HttpStartError(OSError):
    """The HTTP server could not listen (address in use, not allowed)."""


def build_app(services: ChannelServices) -> Starlette:
    async def health_endpoint(request: Request) -> JSONResponse:
        try:
            report = await asyncio.wait_for(services.health(), timeout=HEALTH_TIMEOUT_S)
        except Exception as exc:  # a broken check is itself unhealthy
            report = {"status": "error", "error": type(exc).__name__}
        return JSONResponse(report, status_code=200 if report.get("status") == "ok" else 503)

    routes: list[BaseRoute] = [Route("/health", health_endpoint, methods=["GET"])]
    for path, app in services.routes:
        routes.append(app if isinstance(app, BaseRoute) else Mount(path, app=app))
    return Starlette(routes=routes)


class WebChannel:
    """uvicorn inside our own event loop, started and stopped explicitly."""

    name = "web"

    def __init__(self, host: str, port: int, *, start_timeout_s: float = 10.0):
        self.host, self.port = host, port
        self.start_timeout_s = start_timeout_s
        self.server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, services: ChannelServices) -> None:
        config = uvicorn.Config(build_app(services), host=self.host, port=self.port,
                                log_level="warning", lifespan="off", access_log=False)
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
        return None

    async def stop(self) -> None:
        if self._task is None or self.server is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit, TimeoutError):
            await asyncio.wait_for(self._task, timeout=10)

    def describe(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}
