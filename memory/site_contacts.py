"""The site's contact requests (`demandes_contact`), stored before they are relayed to the
agency; filled in by issue 11, item 4.
"""

from __future__ import annotations

from typing import Any


class SiteContactsMixin:
    db: Any
