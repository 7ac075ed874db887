"""What the Axis channel (MCP at /mcp, OAuth for Claude.ai's connector, the earlier
`GET /briefing` and `GET/POST /memory`) gets from the core: part of the channel contract,
implemented by bot/axis_access.py. Plain dataclasses and protocols, no I/O.

Everything Axis reads leaves the server for Anthropic's cloud: the core gives it only
what the Claude fallback may see (never local-only content).
"""

from __future__ import annotations

from typing import Protocol


class AxisAccess(Protocol):
    """Filled in by the Axis work (issue 11, item 5)."""
