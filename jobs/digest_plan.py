"""Who gets which items of a veille's digest (pure).

Why: an item is reported once every configured recipient has it queued. A recipient that
cannot be reached (a misspelt name, a person who left) must not make the others receive
the same items again on every run, and must not lose them either: each item remembers the
recipients that have it (`elements_veille.envoye_a`), and each run sends every recipient
only what it misses — recipients missing the same items share one rendered digest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROLES = ("courriel", "resume")


@dataclass(frozen=True)
class Recipient:
    role: str
    """`courriel` (the whole email) or `resume` (the short summary)."""
    who: str
    """As configured: 'agence', 'créateur', a person's name or an address."""

    @property
    def tag(self) -> str:
        """The short hash that ends its notify key (unchanged since the first digests)."""
        return hashlib.sha256(self.who.encode()).hexdigest()[:12]

    @property
    def ident(self) -> str:
        """How an item remembers this recipient has it."""
        return f"{self.role}:{self.tag}"


def recipients_of(destinataires: Mapping[str, Any]) -> list[Recipient]:
    out: list[Recipient] = []
    for role in ROLES:
        for who in destinataires.get(role) or []:
            recipient = Recipient(role, str(who))
            if recipient not in out:
                out.append(recipient)
    return out


@dataclass(frozen=True)
class Share:
    """Recipients that miss exactly the same items (all recipients and no item: the
    digest of nothing, e.g. a daily "RAS")."""

    recipients: tuple[Recipient, ...]
    item_ids: tuple[int, ...]


def plan(pending: Sequence[tuple[int, Iterable[str]]], recipients: Sequence[Recipient]
         ) -> list[Share]:
    """`pending`: (item id, the idents that already have it). One share per distinct set
    of missing items, in the recipients' order; a recipient missing nothing is left out."""
    if not pending:
        return [Share(tuple(recipients), ())] if recipients else []
    had = [(item_id, set(idents)) for item_id, idents in pending]
    shares: dict[tuple[int, ...], list[Recipient]] = {}
    for recipient in recipients:
        missing = tuple(i for i, idents in had if recipient.ident not in idents)
        if missing:
            shares.setdefault(missing, []).append(recipient)
    return [Share(tuple(r), ids) for ids, r in shares.items()]


def delivered(pending: Sequence[tuple[int, Iterable[str]]],
              recipients: Sequence[Recipient]) -> list[int]:
    """The items every recipient has (none when there is no recipient at all)."""
    if not recipients:
        return []
    wanted = {r.ident for r in recipients}
    return [item_id for item_id, idents in pending if wanted <= set(idents)]
