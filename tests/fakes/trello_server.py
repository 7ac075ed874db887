"""A loopback Trello REST API (the two calls the DPE veille's sink makes):

    GET  /lists/{idList}/cards?key=&token=&fields=name,desc,shortUrl   → [card, …]
    POST /cards?key=&token=&idList=&name=&desc=&pos=top                → card

A wrong key or token gets 401 ("invalid key"), an unknown list 404, like Trello.
`fail_status` breaks every call; `cards` holds what was posted.
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer, loopback_fixtures

KEY, TOKEN, LIST_ID = "k" * 32, "t" * 64, "5f0c1d2e3a4b5c6d7e8f9a0b"


class FakeTrello:
    def __init__(self) -> None:
        self.server = LoopbackServer(self._app())
        self.reset()

    def reset(self) -> None:
        self.cards: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str]] = []
        self.fail_status: int | None = None

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def _refuse(self, request: Request) -> Response | None:
        self.requests.append((request.method, request.url.path))
        if self.fail_status:
            return PlainTextResponse("error", status_code=self.fail_status)
        q = request.query_params
        if q.get("key") != KEY or q.get("token") != TOKEN:
            return PlainTextResponse("invalid key", status_code=401)
        return None

    async def list_cards(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if request.path_params["list_id"] != LIST_ID:
            return PlainTextResponse("model not found", status_code=404)
        return JSONResponse([{k: c[k] for k in ("id", "name", "desc", "shortUrl")}
                             for c in self.cards])

    async def create_card(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        q = request.query_params
        if q.get("idList") != LIST_ID:
            return PlainTextResponse("invalid value for idList", status_code=400)
        card_id = f"{len(self.cards) + 1:024x}"
        card = {"id": card_id, "name": q.get("name", ""), "desc": q.get("desc", ""),
                "idList": LIST_ID, "pos": q.get("pos"),
                "shortUrl": f"https://trello.com/c/{card_id[-8:]}"}
        self.cards.append(card)
        return JSONResponse(card)

    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/lists/{list_id}/cards", self.list_cards, methods=["GET"]),
            Route("/cards", self.create_card, methods=["POST"]),
        ])


trello_server_session, trello_server = loopback_fixtures(FakeTrello, "trello_server")
