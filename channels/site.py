"""The agency's website, unchanged: the earlier Axi's `POST /chat-proxy` and
`POST /contact` (issue 11, item 4), same paths and shapes, now through Axi's pipeline.

`/chat-proxy` `{"system", "messages": [{"role", "content"}…], "site_id"}` → 200
`{"content": [{"type": "text", "text": …}]}` (the Anthropic-like shape the site's widget
reads, even for a refusal or a timeout: the widget shows whatever text it gets; errors
also carry `error`/`message`). The visitor is a stranger on channel `site` (vouvoyé, no
private memory), stored under a key derived from the site, the client IP and the first
message; the site's `system` text is ignored (Axi's persona applies); Axi answers the
last user message, the turns before it (as the visitor's page sends them) being the
prompt's history — never what is stored under the key, which two visitors behind one IP
share when both open with « Bonjour ». A `#memo …` is never sent to the model: it becomes
a question for Ludo (bot/site_access.py).

`/contact` `{"name", "email", "phone", "message", "bien"}` → 200 `{"ok": true,
"success": true, "message": "Merci, …"}` (a site that checks only the status works too);
400 `{"error", "message", "champs"}` with French messages; a filled honeypot field
(`website`, `hp`, `_gotcha`) gets the same 200 and nothing is stored or sent. The request
is stored first, then relayed; stored requests never relayed (a crash in between) are
relayed when the server starts, and every few minutes after.

Both: CORS for AXI_SITE_ORIGINS only (another Origin gets 403 and no CORS headers; no
Origin, a server, is allowed), rate limits per client IP — an IPv6 address counts as its
/64 (channels/web_guard.rate_key) — with 429 and Retry-After, a cap of contact requests
per IP per hour and one for the whole site per day (memos: bot/site_access.py). A request
with a valid `site`-scope bearer token comes from the agency's own server, on behalf of
all its visitors from one IP: the per-IP limits do not apply to it (the site-wide caps
do); any other token there is ignored (the endpoints are public).

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
from dataclasses import dataclass
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
    plain,
    preflight_headers,
    site_of_origin,
    validate_contact,
    visitor_key,
)
from channels.web_guard import (
    RateLimiter,
    WebConfig,
    WebPart,
    bearer,
    client_ip,
    error,
    json_body,
    rate_key,
)

log = logging.getLogger(__name__)

CHANNEL = "site"
SERVER_SCOPE = "site"
"""A bearer token of this scope marks the agency's own server (no per-IP limits)."""
CONTACTS_PER_IP_HOUR = 5
CONTACTS_PER_DAY = 200
"""Contact requests the whole site may send per day: past it, a polite 429 (never a
request silently dropped), so a flood from many addresses cannot bury the agency."""
HOUR_S = 3600.0
DAY_S = 24 * HOUR_S
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
    "full": ("L'agence a reçu beaucoup de mémos aujourd'hui : réessayez demain, ou "
             "écrivez-lui par le formulaire de contact."),
    "unavailable": "Je ne peux pas transmettre votre mémo pour le moment : réessayez plus tard.",
}
MEMO_EMPTY = ("Écrivez votre mémo après #memo, par exemple : « #memo les visites sont "
              "possibles le samedi ».")
MEMO_TOO_LONG = f"Votre mémo est trop long ({MEMO_MAX} caractères au plus)."
CONTACT_OK = "Merci, votre demande a bien été transmise à l'agence."
CONTACT_INVALID = "Votre demande contient un texte illisible : vérifiez-la et renvoyez-la."


@dataclass(frozen=True)
class Caller:
    """Who sends a request: the client's IP, what per-IP limits count for it (an IPv6
    address's /64), and whether it is the agency's own server (a valid `site` token)."""

    ip: str
    key: str
    server: bool = False


Handler = Callable[[Request, Caller], Awaitable[Response]]


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
    repeatable_send = True  # nothing is pushed: the visitor reads it in the request

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
                log.warning("relaying stored contact requests failed: %s (retried in %d s)",
                            type(exc).__name__, self.every_s)
            await asyncio.sleep(self.every_s)


class SiteEndpoints:
    def __init__(self, services: ChannelServices, config: WebConfig):
        self.services, self.config = services, config
        self.chat_limiter = RateLimiter(config.rate_per_minute)
        self.contact_limiter = RateLimiter(config.rate_per_minute)
        self.wrong_tokens = RateLimiter(config.rate_per_minute)
        """Per IP, tokens looked up in vain: past the rate, a token is not even looked up."""

    # ------------------------------------------------------------------ the guard
    async def _guarded(self, request: Request, limiter: RateLimiter, handler: Handler, *,
                       chat: bool) -> Response:
        """CORS (preflight, allowed origins, 403 for another), then the IP's rate (not
        for the agency's own server)."""
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
        ip = client_ip(request, self.config.trusted_proxies)
        caller = Caller(ip=ip, key=rate_key(ip))
        if await self._agency_server(request, caller.key):
            caller = Caller(ip=ip, key=caller.key, server=True)
        wait = None if caller.server else limiter.check(f"ip:{caller.key}")
        if wait is not None:
            limited = _too_many(wait, f"Trop de demandes : réessayez dans "
                                      f"{max(1, math.ceil(wait))} seconde(s).")
            response: Response = _as_chat(limited) if chat else limited
        else:
            response = await handler(request, caller)
        response.headers.update(cors)
        return response

    async def _agency_server(self, request: Request, key: str) -> bool:
        """A valid `site`-scope bearer token: the agency's own server. Any other token
        (another scope, unknown, revoked) is ignored — the endpoints are public — and
        counted against the IP, so guessing tokens here is bounded too."""
        secret = bearer(request)
        if secret is None or self.services.web is None:
            return False
        if self.wrong_tokens.waiting(f"ip:{key}") is not None:
            return False
        try:
            grant = await self.services.web.authenticate(secret)
        except Exception as exc:  # the public endpoint still answers, as for anyone
            log.warning("site token lookup failed: %s", type(exc).__name__)
            return False
        if grant is not None and grant.scope == SERVER_SCOPE:
            return True
        self.wrong_tokens.check(f"ip:{key}")
        return False

    async def chat_proxy(self, request: Request) -> Response:
        return await self._guarded(request, self.chat_limiter, self._chat, chat=True)

    async def contact(self, request: Request) -> Response:
        return await self._guarded(request, self.contact_limiter, self._contact, chat=False)

    # ------------------------------------------------------------------ chat
    async def _chat(self, request: Request, caller: Caller) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return _as_chat(body)
        try:
            asked = parse_chat(body)  # the site's `system` is never read
        except Invalid as exc:
            return chat_reply(exc.message, status=400,
                              extra={"error": "requete_invalide", "message": exc.message})
        visitor = visitor_key(asked.site_id, caller.ip, asked.first_user)
        memo = memo_text(asked.last_user)
        try:
            if memo is not None:
                return chat_reply(await self._memo(asked.site_id, memo, caller, visitor))
            message_id = await self.services.accept(Inbound(
                channel=CHANNEL, sender=visitor, verified=False, text=asked.last_user,
                external_id=f"site-{uuid4().hex}", received_at=self.services.clock(),
                thread_meta={"site": asked.site_id},
                # the visitor's own conversation, as the page holds it: the key above may
                # be shared (one IP, the same « Bonjour »), so what is stored under it
                # never reaches this visitor's prompt
                supplied_history=asked.earlier))
            outcome = await self.services.wait_reply(message_id, self.config.reply_timeout_s)
        except Exception as exc:  # never a 5xx to the site: the widget shows a sentence
            # the type only: a database error's text quotes the visitor's words
            log.warning("chat-proxy failed: %s", type(exc).__name__)
            return chat_reply(UNAVAILABLE_TEXT)
        if outcome.reply is not None:
            return chat_reply(outcome.reply)
        if outcome.notices:
            return chat_reply("\n\n".join(outcome.notices))
        return chat_reply(WAIT_TEXT)

    async def _memo(self, site_id: str, memo: str, caller: Caller, visitor: str) -> str:
        if not memo:
            return MEMO_EMPTY
        if len(memo) > MEMO_MAX:
            return MEMO_TOO_LONG
        if self.services.site is None:
            return MEMO_TEXTS["unavailable"]
        outcome = await self.services.site.propose_memo(
            site_id, memo, ip=None if caller.server else caller.key, visitor=visitor)
        return MEMO_TEXTS[outcome]

    # ------------------------------------------------------------------ contact
    async def _contact(self, request: Request, caller: Caller) -> Response:
        body = await json_body(request)
        if isinstance(body, JSONResponse):
            return body
        ok = JSONResponse({"ok": True, "success": True, "message": CONTACT_OK})
        if is_robot(body):
            log.info("contact form with its honeypot filled, from %s: ignored", caller.ip)
            return ok
        try:
            form = validate_contact(body)
        except Invalid as exc:
            return JSONResponse({"error": "champ_invalide", "message": exc.message,
                                 "champs": exc.fields}, status_code=400)
        site = self.services.site
        if site is None:
            return error(503, "indisponible", "Le formulaire est indisponible pour le moment.")
        try:
            everyone = await site.recent_contacts(None, DAY_S)
            if everyone.count >= CONTACTS_PER_DAY:
                log.warning("contact request refused: %d today from the site, the cap",
                            everyone.count)
                return _too_many(everyone.retry_after_s, (
                    "L'agence reçoit exceptionnellement beaucoup de demandes : réessayez "
                    f"dans {_in_minutes(everyone.retry_after_s)}, ou appelez l'agence."))
            recent = (None if caller.server
                      else await site.recent_contacts(caller.key, HOUR_S))
            if recent is not None and recent.count >= CONTACTS_PER_IP_HOUR:
                return _too_many(recent.retry_after_s, (
                    "Vous avez déjà envoyé plusieurs demandes : réessayez dans "
                    f"{_in_minutes(recent.retry_after_s)}, ou appelez l'agence."))
            named = body.get("site_id", body.get("site"))
            contact_id = await site.submit_contact(ContactRequest(
                name=form.name, email=form.email, message=form.message, phone=form.phone,
                bien=form.bien, ip=caller.key,
                site=plain(site_of_origin(request.headers.get("origin")) or "") or
                (clean_site_id(named) if isinstance(named, str) else None)))
        except ValueError as exc:  # text the database cannot hold, past the checks above
            log.info("contact request refused: %s", type(exc).__name__)
            return JSONResponse({"error": "champ_invalide", "message": CONTACT_INVALID,
                                 "champs": {}}, status_code=400)
        except Exception as exc:  # not stored: the visitor must know, and may retry
            # the type only: a database error's text quotes the visitor's name and words
            log.warning("contact request not stored: %s", type(exc).__name__)
            return error(503, "indisponible", "Votre demande n'a pas pu être enregistrée : "
                         "réessayez dans un instant.", headers={"Retry-After": "30"})
        log.info("contact request #%s stored", contact_id)
        return ok


def part(services: ChannelServices, config: WebConfig) -> WebPart:
    endpoints = SiteEndpoints(services, config)
    return WebPart(
        routes=[Route("/chat-proxy", endpoints.chat_proxy, methods=["POST", "OPTIONS"]),
                Route("/contact", endpoints.contact, methods=["POST", "OPTIONS"])],
        lifespans=[ContactRelayer(services)],
        public_paths=("/chat-proxy", "/contact"))
