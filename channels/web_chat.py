"""The web chat for Ludo at `/`: plain HTML/CSS/JS served by Axi (issue 11, item 3)."""

from __future__ import annotations

from channels.web_guard import WebConfig, WebPart


def part(config: WebConfig) -> WebPart:
    return WebPart(routes=[])
