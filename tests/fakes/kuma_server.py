"""A loopback Uptime Kuma push endpoint: `GET /api/push/<token>?status=&msg=&ping=`,
answered as Uptime Kuma does (`{"ok": true}`, or 404 `{"ok": false, "msg": …}` for an
unknown or paused monitor). Records each ping; `known` says which tokens exist."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer


@dataclass
class FakeKuma:
    known: set[str] = field(default_factory=set)
    pings: list[dict[str, str]] = field(default_factory=list)

    async def push(self, request: Request) -> JSONResponse:
        token = request.path_params["token"]
        self.pings.append({"token": token, **dict(request.query_params)})
        if token not in self.known:
            return JSONResponse({"ok": False, "msg": "Monitor not found or not active."},
                                status_code=404)
        return JSONResponse({"ok": True})

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/api/push/{token}", self.push, methods=["GET"])])

    def server(self) -> Any:
        return LoopbackServer(self.app())
