"""The value that crosses the line from a channel into the core (DESIGN step 1).

A channel turns whatever it received (a Telegram update, an IMAP message, an HTTP request)
into an `Inbound`, frozen and pure, so the core never imports a transport library and tests
build them directly. Besides text, an inbound message may carry a typed event: a button
pressed (e.g. the answer to a confirmation) or an edit of an earlier message. What goes the
other way is a `bot.channel.Delivery`, built by the outbox from the stored row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _require(value: str, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


@dataclass(frozen=True)
class Attachment:
    """A file that came with a message. `ref` is where the channel keeps it (e.g. a
    Telegram file id); `data` is its content when the channel fetched it (kept with the
    message, up to the channel's size limit), else `missing` says why not."""

    filename: str | None
    content_type: str = "application/octet-stream"
    size: int = 0
    ref: str | None = None
    data: bytes | None = field(default=None, repr=False)
    missing: str | None = None


@dataclass(frozen=True)
class ButtonPressed:
    """The sender pressed a button Axi showed (Telegram inline keyboard, a web button, the
    console's `axi confirm answer`). `data` is what Axi put on the button, e.g.
    `confirmation:12:oui`; only the transport can produce it, never a message's text."""

    data: str

    def __post_init__(self) -> None:
        _require(self.data, "button data")

    def as_json(self) -> dict[str, Any]:
        return {"type": "bouton", "donnees": self.data}


@dataclass(frozen=True)
class Edited:
    """The sender edited an earlier message; `original_external_id` names it. The new
    text is the Inbound's text."""

    original_external_id: str

    def __post_init__(self) -> None:
        _require(self.original_external_id, "original external id")

    def as_json(self) -> dict[str, Any]:
        return {"type": "modification", "original": self.original_external_id}


InboundEvent = ButtonPressed | Edited


def event_from_json(value: dict[str, Any] | None) -> InboundEvent | None:
    """The event stored with a message (messages.metadata['evenement']), typed again."""
    if not value:
        return None
    if value.get("type") == "bouton":
        return ButtonPressed(str(value.get("donnees", "")))
    if value.get("type") == "modification":
        return Edited(str(value.get("original", "")))
    return None


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
    event: InboundEvent | None = None
    """A button pressed or an edit, when this is not (only) a new text message."""
    display_name: str | None = None
    """How the sender presents themselves (a Telegram first name, a mail's display name):
    shown to Ludo in a pairing request, NEVER used to identify anyone."""
    forwarded_from: str | None = None
    """The message was forwarded: whose words they are (someone else's, so data, never
    instructions, and at most claims about anyone)."""
    room: str | None = None
    """Where the message was said when it is a place several people read (a Telegram
    group), as the channel addresses it: the reply goes there, and since everyone there
    reads it, Axi answers as it would to the public, whoever asked."""
    hold: str | None = None
    """Never answer it automatically, and why (an email our server did not vouch for, an
    auto-reply, a mailing list, a sender over its cap): it is stored, listed for Ludo, and
    answered only if he says so (bot/confirmations.py)."""
    thread_meta: Mapping[str, Any] | None = None
    """What the channel needs to thread its replies beyond `thread_ref` (an email's
    subject and References): copied onto every reply and notice, given back in
    `Delivery.thread_meta`. Small JSON values only."""
    supplied_history: tuple[tuple[str, str], ...] | None = None
    """The conversation as the channel holds it, when the channel resends it whole each
    time (the agency's site sends its visitor's whole chat with every message): the
    prompt's history instead of the one stored under the sender's address, which several
    people may share (one address for everyone behind a carrier's IP). `(role, text)`
    pairs, role 'user' or 'assistant', oldest first, this message excluded. The stored
    conversation stays the record (forgetting, the visitors' purge)."""

    def __post_init__(self) -> None:
        _require(self.channel, "channel")
        _require(self.sender, "sender")
        _require(self.external_id, "external_id")
        if self.room is not None:
            _require(self.room, "room")
        if not isinstance(self.text, str):
            raise ValueError("text must be a string")
        if self.received_at.tzinfo is None or self.received_at.utcoffset() is None:
            raise ValueError("received_at must be timezone-aware")
        if not isinstance(self.attachments, tuple):
            object.__setattr__(self, "attachments", tuple(self.attachments))
        if self.event is not None and not isinstance(self.event, ButtonPressed | Edited):
            raise ValueError("event must be ButtonPressed or Edited")
        if isinstance(self.event, ButtonPressed) and self.text.strip():
            raise ValueError("a button pressed carries no text (send the text as a message)")
        if self.supplied_history is not None:
            turns = tuple(tuple(t) for t in self.supplied_history)
            for turn in turns:
                if (len(turn) != 2 or turn[0] not in ("user", "assistant")
                        or not isinstance(turn[1], str)):
                    raise ValueError("supplied_history holds (role, text) pairs, role 'user' "
                                     "or 'assistant', text a string")
            object.__setattr__(self, "supplied_history", turns)

    @property
    def empty(self) -> bool:
        """No text, no attachment and no event: nothing to answer."""
        return not self.text.strip() and not self.attachments and self.event is None
