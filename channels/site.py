"""The agency's website, unchanged: the earlier Axi's `POST /chat-proxy` and
`POST /contact` (issue 11, item 4), same paths and shapes, now through Axi's pipeline.

`/chat-proxy` `{"system", "messages": [{"role", "content"}…], "site_id"}` → 200
`{"content": [{"type": "text", "text": …}]}` (the Anthropic-like shape the site's widget
reads, even for a refusal or a timeout: the widget shows whatever text it gets; errors
also carry `error`/`message`). The visitor is a stranger on channel `site` (vouvoyé, no
private memory), stored under a key derived from the site, the client IP and the first
message; the site's `system` text is ignored (Axi's persona applies); Axi answers the
last user message. A `#memo …` is never sent to the model: it becomes a question for
Ludo (bot/site_access.py).

`/contact` `{"name", "email", "phone", "message", "bien"}` → 200 `{"ok": true,
"success": true, "message": "Merci, …"}` (a site that checks only the status works too);
400 `{"error", "message", "champs"}` with French messages; a filled honeypot field
(`website`, `hp`, `_gotcha`) gets the same 200 and nothing is stored or sent. The request
is stored first, then relayed; stored requests never relayed (a crash in between) are
relayed when the server starts, and every few minutes after.

Both: CORS for AXI_SITE_ORIGINS only (another Origin gets 403 and no CORS headers; no
Origin, a server, is allowed), rate limits per client IP (429 with Retry-After), and a
cap of contact requests per IP per hour.

`SiteChannel` is the outbox's end of channel `site`: the visitor reads the reply in the
HTTP response, so "sending" only records it as delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any
from uuid import uuid4

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.channel import ChannelServices, ChunkFn, Delivery
from bot.inbound import Inbound
from bot.site_contract import ContactRequest
from channels.site_rules import (
    MEMO_MAX,
    Invalid,
    clean_site_id,
    cors_headers,
    cors_verdict,
    is_robot,
    memo_text,
    parse_chat,
    preflight_headers,
    site_of_origin,
    validate_contact,
    visitor_key,
)
from channels.web_guard import RateLimiter, WebConfig, WebPart, client_ip, error, json_body

log = logging.getLogger(__name__)

CHANNEL = "site"
CONTACTS_PER_IP_HOUR = 5
HOUR_S = 3600.0
RELAY_EVERY_S = 300.0

WAIT_TEXT = ("Je prends un peu plus de temps que prévu pour vous répondre. Renvoyez votre "
             "message dans un instant, ou laissez vos coordonnées dans le formulaire de "
             "contact : l'agence vous recontactera.")
UNAVAILABLE_TEXT = ("Je ne peux pas vous répondre pour le moment. Réessayez dans un instant, "
                    "ou laissez vos coordonnées dans le formulaire de contact.")
MEMO_TEXTS = {
    "asked": "Merci, votre mémo a été transmis à l'agence.",
    "limited": ("Vous avez déjà proposé plusieurs mémos aujourd'hui : réessayez demain, ou "
                "écrivez à l'agence par le formulaire de contact."),
    "unavailable": "Je ne peux pas transmettre votre mémo pour le moment : réessayez plus tard.",
}
MEMO_EMPTY = ("Écrivez votre mémo après #memo, par exemple : « #memo les visites sont "
              "possibles le samedi ».")
MEMO_TOO_LONG = f"Votre mémo est trop long ({MEMO_MAX} caractères au plus)."
CONTACT_OK = "Merci, votre demande a bien été transmise à l'agence."

Handler = Callable[[Request], Awaitable[Response]]


def chat_reply(text: str, *, status: int = 200, extra: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
    """The shape the site's widget reads: `content[0].text`."""
    return JSONResponse({**(extra or {}), "content": [{"type": "text", "text": text}]},
                        status_code=status, headers=headers)


def _as_chat(response: JSONResponse) -> JSONResponse:
    """An error of web_guard's (`{"error", "message"}`) with the text the widget shows."""
    body = json.loads(bytes(response.body))
    headers = {k: v for k, v in response.headers.items()
               if k.lower() not in ("content-length", "content-type")}
    return chat_reply(str(body.get("message", UNAVAILABLE_TEXT)), status=response.status_code,
                      extra=body, headers=headers)


def _too_many(wait: float, message: str) -> JSONResponse:
    seconds = max(1, math.ceil(wait))
    return error(429, "trop_de_requetes", message, headers={"Retry-After": str(seconds)})


def _in_minutes(seconds: float) -> str:
    minutes = max(1, math.ceil(seconds / 60))
    return f"{minutes} minute{'s' if minutes > 1 else ''}"


class SiteChannel:
    """Channel `site` for the outbox: the reply already reached the visitor in the HTTP
    response (`wait_reply`), so sending records it as delivered. Passive: no loop."""

    name = CHANNEL

    async def start(self, services: ChannelServices) -> None:
        return None

    async def run(self) -> None:
        return None

    async def send(self, delivery: Delivery) -> str | None:
        return f"site-{delivery.message_id}"

    async def stop(self) -> None:
        return None

    def live(self, conversation: str, thread_ref: str | None = None) -> ChunkFn | None:
        return None


class ContactRelayer:
    """While the server runs: relay the stored contact requests whose relay was never
    queued (at start, then every `every_s`); `notify`'s key keeps each exactly once."""

    def __init__(self, services: ChannelServices, every_s: float = RELAY_EVERY_S):
        self.services, self.every_s = services, every_s
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ContactRelayer:
        if self.services.site is not None:
            self._task = asyncio.create_task(self._run(), name="site-contact-relay")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        assert self.services.site is not None
        while True:
            try:
                await self.services.site.relay_pending()
            except Exception as exc:  # the database may be back next time
                log.warning("relaying stored contact requests failed: %s: %s",
                            type(exc).__name__, exc)
            await asyncio.sleep(self.every_s)


class SiteEndpoints:
    def __init__(self, services: ChannelServices, config: WebConfig):
        self.services, self.config = services, config
        self.chat_limiter = RateLimiter(config.rate_per_minute)
        self.contact_limiter = RateLimiter(config.rate_per_minute)

    # ------------------------------------------------------------------ the guard
    async def _guarded(self, request: Request, limiter: RateLimiter, handler: Handler, *,
                       chat: bool) -> Response:
        """CORS (preflight, allowed origins, 403 for another), then the IP's rate."""
        origin = request.headers.get("origin")
        verdict = cors_verdict(origin, self.config.site_origins)
        if verdict is False:
            log.info("%s refused for origin %r", request.url.path, (origin or "")[:100])
            refused = error(403, "origine_refusee",
                            "Ce site n'est pas autorisé à utiliser ce service.")
            return _as_chat(refused) if chat else refused
        cors = cors_headers(origin) if verdict and origin else {}
        if request.method == "OPTIONS":
            if not (verdict and origin):
                return Response(status_code=204, headers={"Allow": "POST, OPTIONS"})
            return Response(status_code=204, headers=preflight_headers(origin))
        wait = limiter.check(f"ip:{client_ip(request)}")
        if wait is not None:
            limited = _too_many(wait, f"Trop de demandes : réessayez dans "
                                      f"{max(1, math.ceil(wait))} seconde(s).")
            response: Response = _as_chat(limited) if chat else limited
        else:
            response = await handler(request)
        response.headers.update(cors)
        return response

    async def chat_proxy(self, request: Request) -> Response:
        return await self._guarded(request, self.chat_limiter, self._chat, chat=True)

    async def contact(self, request: Request) -> Response:
        return await self._guarded(request, self.contact_limiter, self._contact, chat=False)

    # ------------------------------------------------------------------ chat
    async def _chat(self, request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return _as_chat(body)
        try:
            asked = parse_chat(body)  # the site's `system` is never read
        except Invalid as exc:
            return chat_reply(exc.message, status=400,
                              extra={"error": "requete_invalide", "message": exc.message})
        ip = client_ip(request)
        visitor = visitor_key(asked.site_id, ip, asked.first_user)
        memo = memo_text(asked.last_user)
        try:
            if memo is not None:
                return chat_reply(await self._memo(asked.site_id, memo, ip, visitor))
            message_id = await self.services.accept(Inbound(
                channel=CHANNEL, sender=visitor, verified=False, text=asked.last_user,
                external_id=f"site-{uuid4().hex}", received_at=self.services.clock(),
                thread_meta={"site": asked.site_id}))
            outcome = await self.services.wait_reply(message_id, self.config.reply_timeout_s)
        except Exception as exc:  # never a 5xx to the site: the widget shows a sentence
            log.warning("chat-proxy failed: %s: %s", type(exc).__name__, exc)
            return chat_reply(UNAVAILABLE_TEXT)
        if outcome.reply is not None:
            return chat_reply(outcome.reply)
        if outcome.notices:
            return chat_reply("\n\n".join(outcome.notices))
        return chat_reply(WAIT_TEXT)

    async def _memo(self, site_id: str, memo: str, ip: str, visitor: str) -> str:
        if not memo:
            return MEMO_EMPTY
        if len(memo) > MEMO_MAX:
            return MEMO_TOO_LONG
        if self.services.site is None:
            return MEMO_TEXTS["unavailable"]
        outcome = await self.services.site.propose_memo(site_id, memo, ip=ip, visitor=visitor)
        return MEMO_TEXTS[outcome]

    # ------------------------------------------------------------------ contact
    async def _contact(self, request: Request) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        ok = JSONResponse({"ok": True, "success": True, "message": CONTACT_OK})
        if is_robot(body):
            log.info("contact form with its honeypot filled, from %s: ignored",
                     client_ip(request))
            return ok
        try:
            form = validate_contact(body)
        except Invalid as exc:
            return JSONResponse({"error": "champ_invalide", "message": exc.message,
                                 "champs": exc.fields}, status_code=400)
        site = self.services.site
        if site is None:
            return error(503, "indisponible", "Le formulaire est indisponible pour le moment.")
        ip = client_ip(request)
        try:
            recent = await site.recent_contacts(ip, HOUR_S)
            if recent.count >= CONTACTS_PER_IP_HOUR:
                return _too_many(recent.retry_after_s, (
                    "Vous avez déjà envoyé plusieurs demandes : réessayez dans "
                    f"{_in_minutes(recent.retry_after_s)}, ou appelez l'agence."))
            named = body.get("site_id", body.get("site"))
            await site.submit_contact(ContactRequest(
                name=form.name, email=form.email, message=form.message, phone=form.phone,
                bien=form.bien, ip=ip,
                site=site_of_origin(request.headers.get("origin"))
                or (clean_site_id(named) if isinstance(named, str) else None)))
        except Exception as exc:  # not stored: the visitor must know, and may retry
            log.warning("contact request not stored: %s: %s", type(exc).__name__, exc)
            return error(503, "indisponible", "Votre demande n'a pas pu être enregistrée : "
                         "réessayez dans un instant.", headers={"Retry-After": "30"})
        return ok


def part(services: ChannelServices, config: WebConfig) -> WebPart:
    endpoints = SiteEndpoints(services, config)
    return WebPart(
        routes=[Route("/chat-proxy", endpoints.chat_proxy, methods=["POST", "OPTIONS"]),
                Route("/contact", endpoints.contact, methods=["POST", "OPTIONS"])],
        lifespans=[ContactRelayer(services)],
        public_paths=("/chat-proxy", "/contact"))
