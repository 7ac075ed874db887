"""The HTTP channel: Axi's web server (starlette on uvicorn). For now it serves
`GET /health` (JSON; 200 when healthy, 503 otherwise); the web chat and the site widget
mount here later. The core hands it a `health` coroutine and never imports starlette."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]


def build_app(health: HealthCheck) -> Starlette:
    async def health_endpoint(request: Request) -> JSONResponse:
        try:
            report = await asyncio.wait_for(health(), timeout=5)
        except Exception as exc:  # a broken check is itself unhealthy
            report = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        return JSONResponse(report, status_code=200 if report.get("status") == "ok" else 503)

    return Starlette(routes=[Route("/health", health_endpoint, methods=["GET"])])


class WebServer:
    """uvicorn inside our own event loop, started and stopped explicitly."""

    def __init__(self, host: str, port: int, health: HealthCheck):
        config = uvicorn.Config(build_app(health), host=host, port=port, log_level="warning",
                                lifespan="off", access_log=False)
        # uvicorn captures SIGINT/SIGTERM while serving and hands them back when it
        # stops; `axi run` installs its own loop handlers after start() to stop everything.
        self.server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None
        self.host, self.port = host, port

    async def _serve(self) -> None:
        try:
            await self.server.serve()
        except SystemExit:  # uvicorn exits the process when it cannot bind; we must not
            self._failed = True

    async def start(self) -> None:
        self._failed = False
        self._task = asyncio.create_task(self._serve(), name="axi-web")
        while not self.server.started:
            if self._task.done():
                raise OSError(
                    f"cannot listen on {self.host}:{self.port} (address in use or not allowed); "
                    "set AXI_HTTP_HOST/AXI_HTTP_PORT"
                )
            await asyncio.sleep(0.02)
        sockets = [s for srv in self.server.servers for s in srv.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, SystemExit):
            await asyncio.wait_for(self._task, timeout=10)
