"""The token API (issue 11, item 2): `GET /api/me`, `POST /api/chat` (JSON, or the reply
streamed as Server-Sent Events: channels/web_sse.py), `GET /api/messages/ID`, `GET
/api/history` and the published schema `GET /openapi.json` (channels/web_openapi.py).

Every endpoint but the schema needs a `chat`-scope bearer token (401/403), and is rate
limited per client IP (counted before the token is even looked at, so guessing tokens
is limited too) and per token (429 with `Retry-After`). Sending a message counts
against `rate_per_minute`; reading (me, history, a message's outcome, which the web page
polls) against ten times that. A message goes through the same inbox → worker → outbox
as every channel: it is stored first, then awaited. Reading the body and every handler
are bounded in time; an unexpected error is logged and answered as French JSON, never
as a stack trace.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.channel import ChannelServices, ReplyOutcome
from bot.inbound import Inbound
from bot.web_contract import TokenGrant
from channels import web_openapi
from channels.web_guard import (
    RateLimiter,
    WebConfig,
    WebPart,
    authorize,
    client_ip,
    error,
    json_body,
    rate_key,
    too_many,
)
from channels.web_sse import EventStream, final_reply, reply_events, settled
from channels.web_stream import LiveStreams

log = logging.getLogger(__name__)

SCOPES = frozenset({"chat"})
MAX_MESSAGE_CHARS = 20_000
HISTORY_DEFAULT, HISTORY_MAX = 30, 100
MAX_ID = 2**63 - 1  # messages.id is a BIGSERIAL
READ_RATE_FACTOR = 10
BODY_TIMEOUT_S = 30.0
HANDLER_TIMEOUT_S = 30.0
WAIT_SLICE_S = 1.0
"""The JSON form waits in slices this long, checking between them that its client is
still there (a client gone frees the request; its message is answered anyway)."""
_DIGITS = re.compile(r"[0-9]{1,19}")

Handler = Callable[[Request], Awaitable[Response]]


def message_id_of(raw: str) -> int | None:
    """A path's message id, or None when it cannot name a message (never an error)."""
    if not _DIGITS.fullmatch(raw):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def chat_request(body: dict[str, Any]) -> tuple[str, bool] | JSONResponse:
    """(message, local_only) from the JSON body, or a 400 in French."""
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        return error(400, "message_invalide",
                     "Le champ « message » doit être un texte non vide.")
    if len(message) > MAX_MESSAGE_CHARS:
        return error(400, "message_trop_long",
                     f"Le message est trop long (au plus {MAX_MESSAGE_CHARS} caractères).")
    local_only = body.get("local_only", False)
    if not isinstance(local_only, bool):
        return error(400, "local_only_invalide",
                     "Le champ « local_only » doit valoir true ou false.")
    return message, local_only


def history_query(params: Any) -> tuple[int | None, int] | JSONResponse:
    """(before, limit) from the query string, or a 400 in French."""
    before: int | None = None
    raw_before = params.get("before")
    if raw_before not in (None, ""):
        before = message_id_of(raw_before.strip())
        if before is None:
            return error(400, "before_invalide",
                         "« before » doit être un identifiant de message (entier positif).")
    limit = HISTORY_DEFAULT
    raw_limit = params.get("limit")
    if raw_limit not in (None, ""):
        text = raw_limit.strip()
        if not (text.isascii() and text.isdigit() and len(text) <= 3
                and 1 <= int(text) <= HISTORY_MAX):
            return error(400, "limit_invalide",
                         f"« limit » doit être un entier entre 1 et {HISTORY_MAX}.")
        limit = int(text)
    return before, limit


def outcome_json(outcome: ReplyOutcome) -> dict[str, Any]:
    return {"message_id": outcome.message_id, "state": outcome.state,
            "reply": outcome.reply, "reply_id": outcome.reply_id,
            "notices": list(outcome.notices)}


def wants_stream(request: Request) -> bool:
    return "text/event-stream" in request.headers.get("accept", "").lower()


OUTAGE_RETRY_S = 30  # seconds a client waits before asking again during an outage


def guarded(handler: Handler,
            unreachable: Callable[[BaseException], bool] = lambda exc: False) -> Handler:
    """No stack trace ever reaches a client: an unexpected error is logged and answered
    in French; the database out of reach is an outage (503, Retry-After, one log line)."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:
            if unreachable(exc):
                log.warning("%s %s not served: the database is out of reach (%s: %s)",
                            request.method, request.url.path, type(exc).__name__, exc)
                return error(503, "indisponible", "Le service est momentanément "
                             "indisponible ; réessayez dans une minute.",
                             headers={"Retry-After": str(OUTAGE_RETRY_S)})
            log.exception("%s %s failed", request.method, request.url.path)
            return error(500, "erreur_interne",
                         "Une erreur interne est survenue ; réessayez dans un moment.")

    return run


def bounded(handler: Handler, timeout_s: float = HANDLER_TIMEOUT_S) -> Handler:
    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        try:
            return await asyncio.wait_for(handler(request), timeout_s)
        except TimeoutError:
            return error(503, "delai_depasse",
                         "Axi met trop de temps à répondre ; réessayez dans un moment.")

    return run


class TokenApi:
    """The endpoints, with their rate limiters (one per key kind and per cost)."""

    def __init__(self, services: ChannelServices, config: WebConfig, streams: LiveStreams):
        self.services, self.config, self.streams = services, config, streams
        rate = config.rate_per_minute
        self.send_per_token = RateLimiter(rate)
        self.send_per_ip = RateLimiter(rate)
        self.read_per_token = RateLimiter(rate * READ_RATE_FACTOR)
        self.read_per_ip = RateLimiter(rate * READ_RATE_FACTOR)
        self.schema = web_openapi.schema(config)

    async def grant(self, request: Request, *, sending: bool) -> TokenGrant | JSONResponse:
        per_ip = self.send_per_ip if sending else self.read_per_ip
        ip = rate_key(client_ip(request, self.config.trusted_proxies))  # IPv6: its /64
        if (wait := per_ip.check(f"ip:{ip}")) is not None:
            return too_many(wait)
        return await authorize(request, self.services, SCOPES,
                               self.send_per_token if sending else self.read_per_token)

    # ------------------------------------------------------------------ endpoints
    async def me(self, request: Request) -> Response:
        grant = await self.grant(request, sending=False)
        if isinstance(grant, Response):
            return grant
        return JSONResponse({"name": grant.person_name, "relation": grant.relation,
                             "scope": grant.scope})

    async def chat(self, request: Request) -> Response:
        grant = await self.grant(request, sending=True)
        if isinstance(grant, Response):
            return grant
        try:
            body = await asyncio.wait_for(json_body(request), BODY_TIMEOUT_S)
        except TimeoutError:
            return error(408, "delai_depasse", "La requête a mis trop de temps à arriver.")
        if isinstance(body, Response):
            return body
        parsed = chat_request(body)
        if isinstance(parsed, Response):
            return parsed
        message, local_only = parsed
        ref = f"web-{uuid.uuid4()}"
        inbound = Inbound(channel=grant.channel, sender=grant.address, verified=True,
                          text=message, external_id=ref, thread_ref=ref,
                          local_only=local_only, received_at=datetime.now(UTC))
        stream = wants_stream(request)
        listener = self.streams.listen(ref) if stream else None  # before any chunk can come
        handed_over = False
        try:
            try:
                message_id = await self.services.accept(inbound)
            except ValueError:  # nothing storable left (only control characters…)
                return error(400, "message_invalide",
                             "Le champ « message » doit être un texte non vide.")
            if listener is not None:
                events = reply_events(self.services.wait_reply, listener, message_id,
                                      timeout_s=self.config.reply_timeout_s,
                                      keepalive_s=self.config.keepalive_s)
                handed_over = True
                return EventStream(events, functools.partial(self.streams.release, listener))
        finally:
            if listener is not None and not handed_over:
                self.streams.release(listener)
        outcome = await self.wait(request, message_id)
        if settled(outcome):
            return JSONResponse(final_reply(outcome))
        # relative to this request's URL (/api/chat → /api/messages/ID), whatever host
        # or prefix the client reached Axi by
        status = f"messages/{message_id}"
        return JSONResponse({"message_id": message_id, "state": outcome.state,
                             "notices": list(outcome.notices), "status_url": status},
                            status_code=202, headers={"Location": status})

    async def wait(self, request: Request, message_id: int) -> ReplyOutcome:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.reply_timeout_s
        while True:
            left = deadline - loop.time()
            outcome = await self.services.wait_reply(message_id,
                                                     max(0.0, min(WAIT_SLICE_S, left)))
            if settled(outcome) or left <= WAIT_SLICE_S or await request.is_disconnected():
                return outcome

    async def message(self, request: Request) -> Response:
        grant = await self.grant(request, sending=False)
        if isinstance(grant, Response):
            return grant
        message_id = message_id_of(request.path_params.get("message_id", ""))
        web = self.services.web
        if message_id is None or web is None or not await web.owns_message(grant, message_id):
            return error(404, "introuvable", "Aucun message de votre part ne porte ce numéro.")
        outcome = await self.services.wait_reply(message_id, 0.0)
        return JSONResponse(outcome_json(outcome))

    async def history(self, request: Request) -> Response:
        grant = await self.grant(request, sending=False)
        if isinstance(grant, Response):
            return grant
        query = history_query(request.query_params)
        if isinstance(query, Response):
            return query
        before, limit = query
        web = self.services.web
        items = await web.history(grant, before=before, limit=limit + 1) if web else []
        more = len(items) > limit
        items = items[:limit]
        return JSONResponse({
            "messages": [{"id": i.id, "direction": i.direction, "text": i.text,
                          "at": i.at.isoformat(), "in_reply_to": i.in_reply_to,
                          "kind": "notice" if i.kind == "notice" else "message"}
                         for i in items],
            "next_before": items[-1].id if more and items else None})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(self.schema)


def part(services: ChannelServices, config: WebConfig, streams: LiveStreams) -> WebPart:
    api = TokenApi(services, config, streams)

    def safe(handler: Handler) -> Handler:
        return guarded(handler, services.unreachable)

    return WebPart(routes=[
        Route("/api/me", safe(bounded(api.me)), methods=["GET"]),
        # waits up to reply_timeout_s by design (a stream then runs on and ends itself
        # at that timeout: this bounds what comes before it)
        Route("/api/chat", safe(bounded(api.chat, config.reply_timeout_s
                                        + HANDLER_TIMEOUT_S)), methods=["POST"]),
        Route("/api/messages/{message_id:path}", safe(bounded(api.message)),
              methods=["GET"]),
        Route("/api/history", safe(bounded(api.history)), methods=["GET"]),
        Route("/openapi.json", safe(api.openapi), methods=["GET"]),
    ])
