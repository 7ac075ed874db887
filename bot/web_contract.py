"""What the HTTP channels (the API and web chat, the agency's site, Axis over MCP) get
from the core beyond `bot.channel`: who a bearer token belongs to, a person's history,
and the Axis and site services. Plain dataclasses and protocols, no I/O, no transport
library: part of the channel contract (channels import it; the core implements it in
bot/web_access.py, bot/axis_access.py and bot/site_access.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

Scope = Literal["chat", "axis", "site", "admin"]


@dataclass(frozen=True)
class TokenGrant:
    """A live bearer token: whose it is, its scope, and the verified address its
    messages carry (`channel`, `address`: one conversation per person)."""

    token_id: int
    person_id: int
    person_name: str
    relation: str
    scope: str
    channel: str
    address: str
    inner_circle: bool


@dataclass(frozen=True)
class HistoryItem:
    """One message of a person's conversation, as the web shows it."""

    id: int
    direction: Literal["in", "out"]
    text: str
    at: datetime
    in_reply_to: int | None
    kind: str = "message"
    """`message`, or `notice` (Axi saying it waits, or gave up: not part of the talk)."""


class WebAccess(Protocol):
    async def authenticate(self, secret: str) -> TokenGrant | None:
        """The live token with this secret, or None (unknown, revoked, expired)."""
        ...

    async def history(self, grant: TokenGrant, *, before: int | None = None,
                      limit: int = 50) -> list[HistoryItem]:
        """The person's conversation on the grant's channel, newest first, older than
        message `before` when given."""
        ...

    async def owns_message(self, grant: TokenGrant, message_id: int) -> bool:
        """Whether inbound message `message_id` was sent with this person's address on
        this channel (no one reads another's replies)."""
        ...
