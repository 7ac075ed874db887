"""What the Axis channel (MCP at /mcp, OAuth for Claude.ai's connector, the earlier
`GET /briefing` and `GET/POST /memory`) gets from the core: part of the channel contract,
implemented by bot/axis_access.py (and bot/axis_connect.py for OAuth). Plain dataclasses
and protocols, no I/O.

Everything Axis reads leaves the server for Anthropic's cloud: the core gives it only
what the Claude fallback may see (never local-only content). The texts returned are what
Axis reads, in French.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bot.web_contract import TokenGrant

if TYPE_CHECKING:  # bot.channel imports this module
    from bot.channel import Delivery


@dataclass(frozen=True)
class AxisToken:
    """A live bearer token as MCP's verifier needs it: the grant, the OAuth client it was
    issued to (None for a token made with `axi tokens create`) and its expiry."""

    grant: TokenGrant
    client_id: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class IssuedTokens:
    """What /token answers: a new access token (an `axis` jeton) and its refresh token."""

    access_token: str
    expires_in: int
    refresh_token: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class Grant:
    """A stored authorization code or refresh token: whose client, for what. `params`
    holds the authorization request (redirect URI, PKCE challenge, resource)."""

    client_id: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    person_id: int | None
    params: dict[str, Any]


ApprovalState = Literal["en_attente", "approuvee", "refusee", "expiree", "utilisee"]


@dataclass(frozen=True)
class Approval:
    """A connection waiting for Ludo's accord (the /authorize step of OAuth). `code`: the
    short code the waiting page shows and Ludo's question repeats, so he approves only the
    request on his own screen; `replaced`: ended by a newer request."""

    state: ApprovalState
    client_id: str
    params: dict[str, Any]
    code: str = ""
    replaced: bool = False


@dataclass(frozen=True)
class MemoryUpdate:
    """What became of `POST /memory`: replaced at once (Ludo's own request), or asked of
    Ludo (`confirmation_id`)."""

    replaced: bool
    count: int
    message: str
    confirmation_id: int | None = None


class AxisRefused(Exception):
    """A request the core will not carry out; the message (French) says why."""


class AxisOAuth(Protocol):
    """The authorization server's state: clients, approvals, codes, tokens. Codes and
    tokens are stored hashed; a code and a refresh token serve once."""

    async def register_client(self, client_id: str, info: dict[str, Any]) -> None:
        """Keep a client registered (RFC 7591). Raises AxisRefused for a redirect URI
        that is neither https nor http on loopback."""
        ...

    async def get_client(self, client_id: str) -> dict[str, Any] | None: ...

    async def request_approval(self, client_id: str, client_name: str | None,
                               redirect_uri: str, params: dict[str, Any], *,
                               client_ip: str | None = None,
                               ip_group: str | None = None) -> str:
        """Store a pending approval, ask Ludo (a confirmation), return its id (the secret
        part of the waiting page's URL). `client_ip` is shown to Ludo; `ip_group` (the
        address, or its /64 for IPv6) has one pending approval at most, and the newest
        request ends the oldest pending one when too many wait. Raises AxisRefused (a
        redirect URI not allowed, nobody to ask)."""
        ...

    async def approval(self, approval_id: str) -> Approval | None: ...

    async def issue_code(self, approval_id: str) -> tuple[str, Approval] | None:
        """An authorization code for an approved request, once (None otherwise)."""
        ...

    async def discard_approval(self, approval_id: str) -> None: ...

    async def load_code(self, client_id: str, code: str) -> Grant | None: ...

    async def exchange_code(self, client_id: str, code: str) -> IssuedTokens | None: ...

    async def load_refresh(self, client_id: str, refresh_token: str) -> Grant | None: ...

    async def exchange_refresh(self, client_id: str, refresh_token: str,
                               scopes: Sequence[str]) -> IssuedTokens | None: ...

    async def access_token(self, secret: str) -> AxisToken | None: ...

    async def revoke(self, *, token_id: int | None = None,
                     refresh_token: str | None = None) -> None: ...


class AxisAccess(Protocol):
    @property
    def oauth(self) -> AxisOAuth:
        """The authorization server's state, for Claude.ai's connector."""
        ...

    async def briefing(self) -> str:
        """Consignes, recent events, open items, status, the mailbox count (French)."""
        ...

    async def consignes_markdown(self) -> str:
        """The active consignes, one `- ` bullet each."""
        ...

    async def replace_consignes(self, caller: TokenGrant, markdown: str) -> MemoryUpdate:
        """Replace the consignes by a Markdown list: at once for Ludo himself, else
        asked of him. Raises AxisRefused (French) for a malformed list or past limits."""
        ...

    async def talk(self, caller: TokenGrant, message: str, timeout_s: float) -> str:
        """Send `message` through the pipeline as the caller; Axi's reply, or where it
        will be when it is not ready within `timeout_s`."""
        ...

    async def search(self, query: str, limit: int) -> str: ...

    async def facts(self, subject: str) -> str: ...

    async def add_consigne(self, caller: TokenGrant, text: str) -> str: ...

    async def add_note(self, caller: TokenGrant, text: str) -> str: ...

    async def read_mailbox(self, unread_only: bool) -> str: ...

    async def acknowledge(self, ids: Sequence[int]) -> str: ...

    async def deliver(self, delivery: Delivery) -> str:
        """The Axis channel's send: what the outbox has for Axis goes to the mailbox
        (unless a tool call returned it already); returns the channel's id for it."""
        ...
