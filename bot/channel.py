"""What the core expects of a channel, without importing any transport library.

A channel turns raw input into `Inbound` values and hands them to the inbox (which
stores them before the channel acknowledges its source), and sends outbound messages
when the outbox asks. A channel that can show a reply while it is generated (the
terminal) offers `live(conversation)`, a callback taking text chunks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bot.inbound import Inbound

AcceptFn = Callable[[Inbound], Awaitable[int]]
ChunkFn = Callable[[str], None]


@dataclass(frozen=True)
class Delivery:
    """One outbound message handed to a channel by the outbox."""

    message_id: int
    channel: str
    address: str
    conversation: str
    text: str
    in_reply_to: int | None
    thread_ref: str | None
    notice: bool = False


class SendError(Exception):
    """A channel could not send; `retryable` says whether the outbox should try again."""

    def __init__(self, message: str, *, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


@runtime_checkable
class Channel(Protocol):
    name: str

    async def start(self, accept: AcceptFn) -> None:
        """Begin receiving; call `accept` for each inbound message (then acknowledge)."""
        ...

    async def send(self, delivery: Delivery) -> str | None:
        """Send; return the channel's id for the sent message. Raise SendError."""
        ...

    async def stop(self) -> None: ...

    def live(self, conversation: str) -> ChunkFn | None:
        """A callback showing reply chunks as they come, or None."""
        ...
