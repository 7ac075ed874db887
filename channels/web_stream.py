"""Live replies for the web: the worker shows a reply's chunks as the model writes them
(`Channel.live`), and the request that sent the message streams them to its client
(Server-Sent Events in channels/web_api.py). Keyed by the inbound message's thread
reference, which the web API makes unique per request."""

from __future__ import annotations

from bot.channel import ChunkFn


class LiveStreams:
    """Filled in by the web API work (issue 11, item 2)."""

    def live(self, conversation: str, thread_ref: str | None) -> ChunkFn | None:
        return None
