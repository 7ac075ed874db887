"""OAuth 2.1 for Claude.ai's custom connector: the `mcp` SDK's authorization-server routes
(metadata, dynamic registration `/register`, `/authorize`, `/token`, `/revoke`) backed by
the core's state (bot/axis_connect.py through `services.axis.oauth`), and the page the
browser waits on while Ludo approves the connection.

Why a waiting page: `/authorize` cannot answer at once — Ludo must say oui on Telegram
first (a confirmation). The browser is sent to `/axis/connexion/<id>`, which says so in
French and refreshes itself, with the short code Ludo's question repeats (he approves only
the request whose code he sees here); once Ludo said oui it redirects to Claude.ai with
the authorization code, after non, expiry or a newer request with `access_denied`. Access
tokens are `axis` jetons; any live token is recognised here, and its scope (`chat`,
`axis`, `site`) decides: /mcp requires `axis`.
"""

from __future__ import annotations

import html
import logging
from contextvars import ContextVar
from typing import Any

from mcp.server.auth.provider import (
    AccessToken,
    AuthorizationCode,
    AuthorizationParams,
    AuthorizeError,
    IdentityAssertionParams,
    RefreshToken,
    RegistrationError,
    TokenError,
    construct_redirect_uri,
)
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.axis_contract import AxisOAuth, AxisRefused, Grant, IssuedTokens
from bot.web_contract import TokenGrant
from channels.web_guard import (
    LOOPBACK,
    Network,
    RateLimiter,
    client_ip,
    error,
    guess_key,
    rate_key,
    too_many,
)

log = logging.getLogger(__name__)

PAGE_PATH = "/axis/connexion"
THROTTLED = ("/register", "/authorize", "/token", "/revoke")
QUESTIONS_PER_ADDRESS = 5
QUESTIONS_WINDOW_S = 15 * 60.0
"""Connection requests (each a question on Ludo's Telegram) per address, or IPv6 /64,
within the window: a stranger cannot flood him, and his own retries still get through."""
_CLIENT_IP: ContextVar[str | None] = ContextVar("axis_oauth_client_ip", default=None)
_CHECKED: ContextVar[tuple[str, Any] | None] = ContextVar("axis_oauth_checked", default=None)
"""An MCP request's bearer token and what the store said of it, read once by Throttled
(which can still answer 503) and handed to the SDK's bearer check."""
UNAVAILABLE = ("indisponible", "Axi est momentanément indisponible (sa base de données ne "
               "répond pas) : réessaie dans un instant.")
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
             "X-Frame-Options": "DENY"}


class AxisAccessToken(AccessToken):
    """A live token as MCP's middleware carries it, with whose it is (the tools need it)."""

    token_id: int
    person_id: int
    person_name: str
    relation: str
    channel: str
    address: str
    inner_circle: bool

    def grant(self) -> TokenGrant:
        return TokenGrant(token_id=self.token_id, person_id=self.person_id,
                          person_name=self.person_name, relation=self.relation,
                          scope=self.scopes[0] if self.scopes else "", channel=self.channel,
                          address=self.address, inner_circle=self.inner_circle)


def _same_resource(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def _token(issued: IssuedTokens) -> OAuthToken:
    return OAuthToken(access_token=issued.access_token, token_type="Bearer",
                      expires_in=issued.expires_in, refresh_token=issued.refresh_token,
                      scope=" ".join(issued.scopes))


def ip_group(ip: str) -> str:
    """Who counts as one requester: the same key as every per-IP limit (an IPv4 address,
    an IPv6 address's /64)."""
    return rate_key(ip)


class AxisProvider:
    """The SDK's OAuthAuthorizationServerProvider over the core's OAuth state."""

    def __init__(self, oauth: AxisOAuth, *, issuer: str, resource_url: str,
                 questions: RateLimiter | None = None):
        self.oauth, self.issuer, self.resource_url = oauth, issuer, resource_url
        self.questions = questions or RateLimiter(QUESTIONS_PER_ADDRESS,
                                                  window_s=QUESTIONS_WINDOW_S)

    async def get_client(self, client_id: str) -> OAuthClientInformationFull | None:
        info = await self.oauth.get_client(client_id)
        return OAuthClientInformationFull.model_validate(info) if info else None

    async def register_client(self, client_info: OAuthClientInformationFull) -> None:
        assert client_info.client_id is not None
        try:
            await self.oauth.register_client(
                client_info.client_id, client_info.model_dump(mode="json", exclude_none=True))
        except AxisRefused as exc:  # the only refusal: a redirect URI we would not go to
            raise RegistrationError("invalid_redirect_uri", str(exc)) from None

    async def authorize(self, client: OAuthClientInformationFull,
                        params: AuthorizationParams) -> str:
        if params.resource and not _same_resource(params.resource, self.resource_url):
            raise AuthorizeError("invalid_target", "Ce serveur n'est que " + self.resource_url)
        assert client.client_id is not None
        ip = _CLIENT_IP.get() or "inconnue"
        group = ip_group(ip)
        wait = self.questions.check(f"question:{group}")
        if wait is not None:
            minutes = max(1, round(wait / 60))
            raise AuthorizeError("temporarily_unavailable",
                                 "Trop de demandes de connexion depuis cette adresse : "
                                 f"réessayez dans {minutes} minute(s).")
        try:
            approval_id = await self.oauth.request_approval(
                client.client_id, client.client_name, str(params.redirect_uri),
                params.model_dump(mode="json"), client_ip=ip, ip_group=group)
        except AxisRefused as exc:
            raise AuthorizeError("temporarily_unavailable", str(exc)) from None
        return f"{PAGE_PATH}/{approval_id}"  # relative: never assume how we are reached

    async def load_authorization_code(self, client: OAuthClientInformationFull,
                                      authorization_code: str) -> AuthorizationCode | None:
        assert client.client_id is not None
        grant = await self.oauth.load_code(client.client_id, authorization_code)
        if grant is None or grant.expires_at is None:
            return None
        p = grant.params
        return AuthorizationCode(
            code=authorization_code, scopes=list(grant.scopes), client_id=grant.client_id,
            expires_at=grant.expires_at.timestamp(), code_challenge=p["code_challenge"],
            redirect_uri=p["redirect_uri"],
            redirect_uri_provided_explicitly=bool(p.get("redirect_uri_provided_explicitly")),
            resource=p.get("resource"), subject=_subject(grant))

    async def exchange_authorization_code(self, client: OAuthClientInformationFull,
                                          authorization_code: AuthorizationCode) -> OAuthToken:
        assert client.client_id is not None
        issued = await self.oauth.exchange_code(client.client_id, authorization_code.code)
        if issued is None:
            raise TokenError("invalid_grant", "authorization code already used or expired")
        return _token(issued)

    async def load_refresh_token(self, client: OAuthClientInformationFull,
                                 refresh_token: str) -> RefreshToken | None:
        assert client.client_id is not None
        grant = await self.oauth.load_refresh(client.client_id, refresh_token)
        if grant is None:
            return None
        return RefreshToken(
            token=refresh_token, client_id=grant.client_id, scopes=list(grant.scopes),
            expires_at=int(grant.expires_at.timestamp()) if grant.expires_at else None,
            resource=grant.params.get("resource"), subject=_subject(grant))

    async def exchange_refresh_token(self, client: OAuthClientInformationFull,
                                     refresh_token: RefreshToken,
                                     scopes: list[str]) -> OAuthToken:
        assert client.client_id is not None
        issued = await self.oauth.exchange_refresh(client.client_id, refresh_token.token, scopes)
        if issued is None:
            raise TokenError("invalid_grant", "refresh token already used, revoked or expired")
        return _token(issued)

    async def load_access_token(self, token: str) -> AxisAccessToken | None:
        checked = _CHECKED.get()
        found = (checked[1] if checked is not None and checked[0] == token
                 else await self.oauth.access_token(token))
        if found is None:
            log.info("MCP bearer refused: unknown, revoked or expired token")
            return None
        g = found.grant
        return AxisAccessToken(
            token=token, client_id=found.client_id or f"jeton-{g.token_id}", scopes=[g.scope],
            expires_at=int(found.expires_at.timestamp()) if found.expires_at else None,
            resource=self.resource_url, subject=str(g.person_id), token_id=g.token_id,
            person_id=g.person_id, person_name=g.person_name, relation=g.relation,
            channel=g.channel, address=g.address, inner_circle=g.inner_circle)

    async def exchange_identity_assertion(self, client: OAuthClientInformationFull,
                                          params: IdentityAssertionParams) -> OAuthToken:
        raise TokenError("unsupported_grant_type", "not supported by this server")

    async def revoke_token(self, token: AccessToken | RefreshToken) -> None:
        if isinstance(token, AxisAccessToken):
            await self.oauth.revoke(token_id=token.token_id)
        elif isinstance(token, RefreshToken):
            await self.oauth.revoke(refresh_token=token.token)


def _subject(grant: Grant) -> str | None:
    return str(grant.person_id) if grant.person_id is not None else None


# ------------------------------------------------------------------ the waiting page
_PAGE = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}<title>Axi — connexion d'Axis</title>
<style>body{{font:1.15rem/1.5 system-ui,sans-serif;margin:0;padding:2rem 1.2rem;
background:#fff;color:#111;max-width:36rem}}h1{{font-size:1.4rem}}
p.note{{color:#333;font-size:1rem}}</style></head>
p.code{{font-size:1rem}}p.code strong{{font:700 2.4rem/1.2 ui-monospace,monospace;
letter-spacing:.3em;display:block;margin:.3rem 0}}</style></head>
<body><h1>{title}</h1><p>{text}</p>{code}<p class="note">{note}</p></body></html>
"""
_CODE = ('<p class="code">Code de cette demande :<strong>{code}</strong>La question d\'Axi '
         'sur Telegram affiche le même code : ne validez que s\'il est identique ; sinon '
         'répondez Non, cette demande n\'est pas la vôtre.</p>')


def page(title: str, text: str, note: str = "", *, status: int = 200,
         refresh_s: int | None = None, code: str = "") -> HTMLResponse:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">\n' if refresh_s else ""
    body = _PAGE.format(refresh=refresh, title=html.escape(title), text=html.escape(text),
                        note=html.escape(note),
                        code=_CODE.format(code=html.escape(code)) if code else "")
    return HTMLResponse(body, status_code=status, headers=_NO_STORE)


def waiting_page(oauth: AxisOAuth, issuer: str, refresh_s: int = 3) -> Any:
    """GET /axis/connexion/<id>: wait, then go on to Claude.ai with the code (or refusal)."""

    async def endpoint(request: Request) -> Response:
        approval_id = str(request.path_params.get("approval_id", ""))
        approval = await oauth.approval(approval_id) if 20 <= len(approval_id) <= 100 else None
        if approval is None:
            return page("Demande inconnue ou expirée",
                        "Recommencez la connexion depuis Claude.ai.", status=404)
        redirect = str(approval.params.get("redirect_uri", ""))
        state = approval.params.get("state")
        if approval.state == "approuvee":
            issued = await oauth.issue_code(approval_id)
            if issued is not None:
                code, _ = issued
                return RedirectResponse(construct_redirect_uri(redirect, code=code, state=state,
                                                               iss=issuer),
                                        status_code=302, headers=_NO_STORE)
            approval = await oauth.approval(approval_id) or approval
        if approval.state in ("refusee", "expiree"):
            await oauth.discard_approval(approval_id)
            why = ("Ludo n'a pas autorisé la connexion." if approval.state == "refusee"
                   else "Une demande de connexion plus récente a remplacé celle-ci."
                   if approval.replaced else "La demande a expiré sans réponse de Ludo.")
            return RedirectResponse(construct_redirect_uri(
                redirect, error="access_denied", error_description=why, state=state, iss=issuer),
                status_code=302, headers=_NO_STORE)
        if approval.state == "utilisee":
            return page("Demande déjà utilisée",
                        "Cette connexion a déjà été accordée. Recommencez depuis Claude.ai si "
                        "besoin.", status=410)
        return page("Demande envoyée à Ludo",
                    "Demande envoyée à Ludo : validez sur Telegram, puis revenez ici.",
                    "Cette page se met à jour toute seule ; la connexion continue dès que "
                    "Ludo a répondu.", refresh_s=refresh_s, code=approval.code)

    return endpoint


class Throttled:
    """ASGI wrapper: the open OAuth endpoints (registration and authorization are open to
    anyone on the Internet) are rate-limited per client IP, and the provider learns that
    IP (the SDK does not hand it the request)."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter,
                 trusted: tuple[Network, ...] = LOOPBACK, oauth: AxisOAuth | None = None,
                 guesses: RateLimiter | None = None):
        self.app, self.limiter, self.trusted = app, limiter, trusted
        self.guesses = guesses
        """Per IP, MCP bearer tokens refused: past its rate, 429 without a lookup."""
        self.oauth = oauth
        """With it, an MCP request's bearer token is read here first: if the store cannot
        answer (a database outage), the request gets a 503 in JSON and the log one line
        — deep in the SDK's bearer middleware it was a 500 and a traceback."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ip = client_ip(scope, self.trusted)
        if scope["path"] in THROTTLED and scope.get("method") != "OPTIONS":
            wait = self.limiter.check(f"oauth:{rate_key(ip)}")
            if wait is not None:
                await too_many(wait)(scope, receive, send)
                return
        token = _bearer(scope) if self.oauth is not None else None
        checked = None
        if token is not None and self.oauth is not None:
            key = guess_key(scope, self.trusted)
            if self.guesses is not None and (wait := self.guesses.waiting(key)) is not None:
                await too_many(wait)(scope, receive, send)
                return
            try:
                found = await self.oauth.access_token(token)
                if found is None and self.guesses is not None:
                    self.guesses.check(key)
                checked = _CHECKED.set((token, found))
            except Exception as exc:  # the database is down: Axis tries again later
                log.warning("MCP request not served: the token store is unavailable (%s: %s)",
                            type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc)
                            else "")
                await error(503, *UNAVAILABLE, headers={"Retry-After": "10"})(
                    scope, receive, send)
                return
        reset = _CLIENT_IP.set(ip)  # for /authorize: who asks, shown to Ludo
        try:
            await self.app(scope, receive, send)
        finally:
            _CLIENT_IP.reset(reset)
            if checked is not None:
                _CHECKED.reset(checked)


def _bearer(scope: Scope) -> str | None:
    """The bearer token of a request to /mcp, if any."""
    if scope["path"].rstrip("/") != "/mcp":
        return None
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() or None if kind.lower() == "bearer" else None
    return None
