"""A deadline for each request's head: uvicorn (0.54, h11) waits for a request's headers
for ever, so a client sending them a byte at a time ("slowloris") holds a connection, and
a few hundred such clients hold every file descriptor Axi has. uvicorn has no setting for
it (`timeout_keep_alive` only runs between requests, and any byte received cancels it;
`h11_max_incomplete_event_size` bounds the head's size, not its time; `limit_concurrency`
would turn the same attack into 503s for everyone), but it takes the HTTP protocol class
to use (`uvicorn.Config(http=...)`): this is its own h11 protocol, plus the deadline.

From the moment a connection opens, or the first byte of a later request on a kept-alive
connection, its whole head must arrive within `head_timeout_s`, or the connection is
closed. What the head is waiting for is h11's own state (the client's side is IDLE until
a whole request head is parsed), not a parser of ours. Once the head is in, nothing
changes: a slow body is bounded by channels/web_guard.py, a long answer (a stream) by
nobody here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class HeadDeadlineProtocol(H11Protocol):
    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _waiting_for_head(self) -> bool:
        return self.conn.their_state is h11.IDLE and not self.transport.is_closing()

    def _watch_head(self) -> None:
        if not self._waiting_for_head():
            self._cancel_deadline()
        elif self._head_deadline is None:
            self._head_deadline = asyncio.get_running_loop().call_later(
                self.head_timeout_s, self._too_slow)

    def _cancel_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _too_slow(self) -> None:
        self._head_deadline = None
        if self._waiting_for_head():
            log.info("HTTP: request head not received within %.0f s, connection closed "
                     "(%s)", self.head_timeout_s, self.client[0] if self.client else "?")
            self.transport.close()


def head_deadline_protocol(head_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class for `uvicorn.Config(http=...)` with this deadline."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,),
                {"head_timeout_s": head_timeout_s})
