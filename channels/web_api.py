"""The token API: `POST /api/chat`, `GET /api/messages/ID`, `GET /api/history`, the
OpenAPI schema (issue 11, item 2)."""

from __future__ import annotations

from bot.channel import ChannelServices
from channels.web_guard import WebConfig, WebPart
from channels.web_stream import LiveStreams


def part(services: ChannelServices, config: WebConfig, streams: LiveStreams) -> WebPart:
    return WebPart(routes=[])
