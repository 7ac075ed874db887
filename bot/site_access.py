"""The core's side of the agency's website endpoints (bot/site_contract.SiteAccess)."""

from __future__ import annotations

from typing import Any


class SiteAccessService:
    def __init__(self, store: Any, confirmations: Any, notifier: Any, settings: Any):
        self.store, self.confirmations, self.notifier = store, confirmations, notifier
        self.settings = settings
