"""The agency's website, unchanged: the earlier Axi's `POST /chat-proxy` and
`POST /contact` (issue 11, item 4)."""

from __future__ import annotations

from bot.channel import ChannelServices
from channels.web_guard import WebConfig, WebPart


def part(services: ChannelServices, config: WebConfig) -> WebPart:
    return WebPart(routes=[])
