"""The two values that cross the line between channels and the core (DESIGN step 1 and 4).

A channel turns whatever it received (a Telegram update, an IMAP message, an HTTP request)
into an `Inbound`; the core answers with an `Outbound` that the outbox hands back to the
channel. Both are frozen and pure so the core never imports a transport library and tests
build them directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


def _require(value: str, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message. `ref` is where the channel keeps it (e.g. a
    Telegram file id or a stored path); `data` is set only for small inline content."""

    filename: str | None
    content_type: str = "application/octet-stream"
    size: int = 0
    ref: str | None = None
    data: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Inbound:
    """One message received by a channel, before anything else happens to it.

    `verified` is True only when the transport proved the address (Telegram numeric user
    id, an email with our server's `dmarc=pass`, an API token); a display name is never an
    identity. `(channel, external_id)` is unique: a redelivery is the same message.
    """

    channel: str
    sender: str
    verified: bool
    text: str
    external_id: str
    received_at: datetime
    attachments: tuple[Attachment, ...] = ()
    thread_ref: str | None = None
    local_only: bool = False
    """The sender asked that this message never leave the server: no Claude fallback for
    it (it waits for the local model), whatever the person's own setting."""

    def __post_init__(self) -> None:
        _require(self.channel, "channel")
        _require(self.sender, "sender")
        _require(self.external_id, "external_id")
        if not isinstance(self.text, str):
            raise ValueError("text must be a string")
        if self.received_at.tzinfo is None or self.received_at.utcoffset() is None:
            raise ValueError("received_at must be timezone-aware")
        if not isinstance(self.attachments, tuple):
            object.__setattr__(self, "attachments", tuple(self.attachments))

    @property
    def empty(self) -> bool:
        """No text and no attachment: nothing to answer."""
        return not self.text.strip() and not self.attachments


@dataclass(frozen=True)
class Outbound:
    """A reply (or a push, e.g. a veille digest) for one address on one channel.

    `in_reply_to` is the id of our stored inbound message, when this answers one;
    `thread_ref` lets the channel keep the conversation threaded (email References,
    Telegram reply-to).
    """

    channel: str
    address: str
    text: str
    in_reply_to: int | None = None
    thread_ref: str | None = None

    def __post_init__(self) -> None:
        _require(self.channel, "channel")
        _require(self.address, "address")
        _require(self.text, "text")
