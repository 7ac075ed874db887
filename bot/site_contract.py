"""What the agency's website endpoints (the earlier Axi's `POST /chat-proxy` and
`POST /contact`) get from the core: part of the channel contract, implemented by
bot/site_access.py. Plain dataclasses and protocols, no I/O.
"""

from __future__ import annotations

from typing import Protocol


class SiteAccess(Protocol):
    """Filled in by the site work (issue 11, item 4)."""
