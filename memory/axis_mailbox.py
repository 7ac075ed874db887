"""The Axis mailbox (`boite_axis`): what Axi has for Axis, read and acknowledged over MCP;
filled in by issue 11, item 5.
"""

from __future__ import annotations

from typing import Any


class AxisMailboxMixin:
    db: Any
