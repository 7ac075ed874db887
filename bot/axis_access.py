"""The core's side of the Axis channel (bot/axis_contract.AxisAccess)."""

from __future__ import annotations

from typing import Any


class AxisAccessService:
    def __init__(self, store: Any, confirmations: Any, notifier: Any, pipeline: Any,
                 settings: Any):
        self.store, self.confirmations, self.notifier = store, confirmations, notifier
        self.pipeline, self.settings = pipeline, settings
