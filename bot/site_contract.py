"""What the agency's website endpoints (the earlier Axi's `POST /chat-proxy` and
`POST /contact`) get from the core: part of the channel contract, implemented by
bot/site_access.py. Plain dataclasses and protocols, no I/O.

The visitor chat itself needs nothing here: it goes through the inbox like every channel
(`ChannelServices.accept` / `wait_reply`). What the site needs beyond that is a contact
request stored and relayed to the agency, and a visitor's `#memo` turned into a question
for Ludo (a visitor can never write a note himself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

MemoOutcome = Literal["asked", "limited", "full", "unavailable"]
"""`asked`: Ludo has the question; `limited`: this IP proposed too many memos today;
`full`: the whole site did; `unavailable`: nobody to ask (no créateur yet) or the
question could not be stored."""


@dataclass(frozen=True)
class ContactRequest:
    """A validated contact form, as the visitor sent it."""

    name: str
    email: str
    message: str
    phone: str | None = None
    bien: str | None = None
    """The property the visitor asks about (its reference or title), when the page says."""
    site: str | None = None
    """The site it came from (the Origin's host), when known."""
    ip: str | None = None
    """Where it came from as per-IP limits count it (channels/web_guard.rate_key): an IPv4
    address, or an IPv6 address's /64 network — never more of the visitor than that."""


@dataclass(frozen=True)
class RecentContacts:
    """The contact requests stored from one IP (or from anyone) within a window: how many,
    and when the oldest leaves the window (so a refusal can say when to try again)."""

    count: int
    retry_after_s: float


class SiteAccess(Protocol):
    async def submit_contact(self, request: ContactRequest) -> int:
        """Store the request (first: it is never lost once this returns), then queue its
        relay to the agency (AXI_AGENCY_EMAIL, Reply-To the visitor) or, with no agency
        address, to Ludo. Returns the stored id. A relay that fails is retried by
        `relay_pending`. ValueError for text that cannot be stored (nothing left of a
        field once cleaned)."""
        ...

    async def relay_pending(self) -> int:
        """Relay every stored request whose relay was never queued (a crash between the
        two steps); each at most once. Returns how many were relayed."""
        ...

    async def recent_contacts(self, ip: str | None, window_s: float) -> RecentContacts:
        """How many requests this IP (as `ContactRequest.ip` holds it) sent within
        `window_s` — the per-IP cap — or, with None, the whole site (the site-wide cap)."""
        ...

    async def propose_memo(self, site: str, text: str, *, ip: str | None,
                           visitor: str) -> MemoOutcome:
        """A visitor's `#memo …`: ask Ludo whether it becomes a consigne for everyone
        (nothing is written before his "oui"); at most a few per IP per day (`ip` as
        `ContactRequest.ip` holds it; None: the agency's own server, for all its
        visitors, not capped per IP), and a few more for the whole site."""
        ...
