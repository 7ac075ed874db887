"""What the core and a channel expect of each other, without any transport library.

A channel turns raw input into `Inbound` values and hands them to the inbox (which stores
them before the channel acknowledges its source), and sends `Delivery`s when the outbox
asks. Everything else a channel needs from the core (cursors committed with the accepted
messages, who an address belongs to, `notify`, advisory locks, awaiting the reply to a
message, HTTP routes to mount, the clock) reaches it as ONE `ChannelServices` object,
handed over by the composition root (`channels/registry.py`). Channels import only this
module, `bot.inbound` and the web contracts (`bot.web_contract`, `bot.axis_contract`,
`bot.site_contract`).

Lifecycle, driven by `bot.app.Axi`: `start(services)` (quick: set up, may fail with a
clear error, e.g. a port in use), then `run()` under supervision (the receiving loop; if
it raises, it is restarted with backoff and shows in `/health`; a passive channel returns
at once), then `stop()`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from bot.axis_contract import AxisAccess
from bot.inbound import Inbound
from bot.site_contract import SiteAccess
from bot.web_contract import WebAccess

AcceptFn = Callable[[Inbound], Awaitable[int]]
ChunkFn = Callable[[str], None]
DeliveryKind = Literal["reply", "notice", "push", "confirmation"]
KINDS: tuple[DeliveryKind, ...] = ("reply", "notice", "push", "confirmation")


class SendProgress(Protocol):
    """How far a send in parts got, told to the outbox as it goes. Parts count from 0:
    the texts, then the attachments. The first request of an attempt needs no `leaving`
    (the outbox marked the attempt begun); the last part needs no `delivered` (the
    outcome is recorded with the message)."""

    async def leaving(self, part: int) -> None:
        """Before the request of part `part`: from now on it may reach the person."""

    async def delivered(self, parts: int) -> None:
        """The first `parts` parts were delivered and no request is under way."""


@dataclass(frozen=True)
class OutgoingFile:
    """A file sent with a push (e.g. a veille digest as CSV); small enough to hold."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Delivery:
    """One outbound message handed to a channel by the outbox.

    `kind`: a `reply` to a person's message, a `notice` about it (waiting, given up; never
    part of the conversation's history), a `push` Axi sends on its own (digest, alert,
    report: email adds `Auto-Submitted: auto-generated`), or a `confirmation` asking for a
    choice among `choices` (label, button data) — Telegram shows buttons, email lists them.
    """

    message_id: int
    channel: str
    address: str
    conversation: str
    text: str
    in_reply_to: int | None
    thread_ref: str | None
    kind: DeliveryKind = "reply"
    subject: str | None = None
    html: str | None = None
    attachments: tuple[OutgoingFile, ...] = ()
    cc: tuple[str, ...] = ()
    reply_to: str | None = None
    choices: tuple[tuple[str, str], ...] = ()
    thread_meta: Mapping[str, Any] | None = None
    """The answered message's `Inbound.thread_meta` (e.g. an email's subject and
    References), for a reply or a notice."""
    resume_from: int = 0
    """For a channel that sends in parts (texts, then attachments): the parts an earlier
    attempt delivered, to skip."""
    progress: SendProgress | None = field(default=None, compare=False, repr=False)
    """For a channel that sends in parts: where it reports each part (the outbox records
    it, so that an attempt cut between two parts resumes after the delivered ones)."""

    @property
    def notice(self) -> bool:
        return self.kind == "notice"


class SendError(Exception):
    """A channel could not send. `retryable`: should the outbox try again; `retry_after`:
    seconds the transport asked us to wait (e.g. Telegram's 429), else the outbox's
    own backoff applies. `postponed`: not a failure but a pace (a rate limit): the
    message goes after `retry_after` and the attempt is not counted against it.
    `uncertain`: the request left and its answer never came (a timeout after sending):
    it may have been delivered, so the outbox's rule for an uncertain send applies
    (bot/pipeline.py: recorded, never sent again)."""

    def __init__(self, message: str, *, retryable: bool = True,
                 retry_after: float | None = None, postponed: bool = False,
                 uncertain: bool = False):
        super().__init__(message)
        self.retryable = (retryable or postponed) and not uncertain
        self.retry_after = retry_after
        self.postponed = postponed
        self.uncertain = uncertain


class ProbeFailed(Exception):
    """A channel's optional `async probe() -> str` (for `axi doctor`) could not log in:
    `problem` says what failed, `fix` what to do, in plain words (English, one line each)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class CursorUpdate:
    """A channel's position in its source (Telegram's next update offset, an IMAP
    mailbox's UIDVALIDITY and last UID), stored in `curseurs_canal` in the SAME
    transaction as the messages accepted up to it."""

    channel: str
    key: str
    value: str


@dataclass(frozen=True)
class KnownPerson:
    """Who a verified address belongs to, as a channel may need it (e.g. to greet)."""

    id: int
    name: str
    relation: str
    blocked: bool
    inner_circle: bool = False
    """Ludo, the administrator or the team (never capped, e.g. by email's hourly caps)."""


@dataclass(frozen=True)
class ReplyOutcome:
    """What became of an accepted message, for channels that answer in the request
    (web, MCP) and for `axi ask`: `reply` is Axi's answer (None when there is none yet
    or will be none); `notices` are the notices sent about it (waiting, given up);
    `state` the inbound state (en_attente, traite, ignore, erreur, abandonne), or
    `introuvable` for an id that names no inbound message."""

    message_id: int
    state: str
    reply: str | None
    reply_id: int | None
    notices: tuple[str, ...] = ()

    @property
    def answered(self) -> bool:
        return self.reply is not None


NotifyFn = Callable[..., Awaitable[list[int]]]
"""`notify(to, text, *, key, subject=None, html=None, attachments=(), cc=(), reply_to=None,
kind="push"|"notice", urgent=False)` — see bot/notify.py (questions with buttons go
through bot/confirmations.py)."""


@dataclass
class ChannelServices:
    """Everything a channel gets from the core, handed over by the composition root."""

    accept: AcceptFn
    accept_batch: Callable[[Sequence[Inbound], CursorUpdate | None],
                           Awaitable[list[int | None]]]
    """Accept several messages and move the channel's cursor, in one transaction (None
    for a message that can never be stored: skipped, logged)."""
    read_cursor: Callable[[str, str], Awaitable[str | None]]
    """(channel, key) → the stored cursor value, or None."""
    identify: Callable[[str, str], Awaitable[KnownPerson | None]]
    """(channel, verified address) → the person it belongs to, or None."""
    addresses_of: Callable[[str, frozenset[str]], Awaitable[list[str]]]
    """(channel, relations) → the addresses there of the people with those relations."""
    notify: NotifyFn
    lock: Callable[[str], AbstractAsyncContextManager[Any]]
    """A PostgreSQL advisory try-lock held for the block: truthy when this process holds
    it (e.g. the one Telegram poller), falsy when another process does; `await
    held.still_held()` says whether it still does (a dead connection loses it)."""
    wait_reply: Callable[[int, float], Awaitable[ReplyOutcome]]
    """(message id, timeout s) → the reply once committed, or the state at the timeout."""
    health: Callable[[], Awaitable[dict[str, Any]]]
    """The health report (bot/health.py): `status` ok, degraded or error (error ⇔ 503)
    and the components' details, which only a local client or an admin token may see."""
    clock: Callable[[], datetime]
    recent_inbound: Callable[[str, str | None, float], Awaitable[int]] | None = None
    """(channel, address or None for all, seconds) → messages accepted there in that
    window that were not held, the inner circle's not counted (email's caps)."""
    commands: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """The core's commands per relation: (name, French description), for channels that
    show a menu (Telegram's setMyCommands)."""
    routes: list[tuple[str, Any]] = field(default_factory=list)
    """HTTP routes channels add before the HTTP server starts: (path, ASGI app or
    route object); the web channel mounts them."""

    web: WebAccess | None = None
    """Bearer tokens and a person's history (the HTTP API and web chat)."""
    axis: AxisAccess | None = None
    """Briefing, memory, consignes and mailbox for Axis (MCP, /briefing, /memory)."""
    site: SiteAccess | None = None
    """Contact requests and visitors' memos (the agency's website)."""
    unreachable: Callable[[BaseException], bool] = lambda exc: False
    """Whether an error is the database being out of reach (an outage: answer 503 and log
    one line) rather than a fault (memory.database.lost_connection)."""
    metrics: Callable[[str], Awaitable[tuple[bytes, str]]] | None = None
    """(the request's Accept header) → the Prometheus text of /metrics and its content
    type (bot/metrics.py); None: no metrics."""

    def mount(self, path: str, app: Any) -> None:
        self.routes.append((path, app))


@dataclass
class ChannelSet:
    """What the core gets from the composition root: the channels of this process, the
    channels the settings configure (where notifications may be routed, even from a
    one-shot command), and the route of whatever must reach the operator when nobody
    else can (the console, which `axi run` writes to its log)."""

    channels: dict[str, Channel]
    configured: frozenset[str]
    fallback_route: tuple[str, str] | None
    jobs: list[Any] = field(default_factory=list)
    """The scheduler's place (veilles, backups, maintenance): built by jobs/ later."""

    @classmethod
    def of(cls, channels: Mapping[str, Channel]) -> ChannelSet:
        """A set of channels given directly (tests, benches): configured = these."""
        fallback = next(((name, str(address)) for name, ch in channels.items()
                         if (address := getattr(ch, "fallback_address", None))), None)
        return cls(dict(channels), frozenset(channels), fallback)


@runtime_checkable
class Channel(Protocol):
    name: str

    async def start(self, services: ChannelServices) -> None:
        """Set up (connect, bind). Raise a clear error when it cannot."""
        ...

    async def run(self) -> None:
        """The receiving loop, supervised; return at once if there is none."""
        ...

    async def send(self, delivery: Delivery) -> str | None:
        """Send; return the channel's id for the sent message. Raise SendError."""
        ...

    async def stop(self) -> None: ...

    def live(self, conversation: str, thread_ref: str | None = None) -> ChunkFn | None:
        """A callback showing reply chunks as they come, or None. `thread_ref`: the
        message being answered (the inbound's), for a channel that threads what it shows."""
        ...


# Optional, duck-typed: a channel on which sending the same delivery twice is harmless
# (it dedupes, like the Axis mailbox's key, or shows nothing twice, like web, or its far
# end does, like email's stable Message-ID) sets `repeatable_send = True`: the outbox
# then skips the attempt marker it commits before any other channel's send (a crash
# between send and commit must not send it again; see bot/pipeline.deliver_one).
# A channel that can tell whether a request for an outbound message is under way offers
# `request_in_flight(message_id) -> bool`: a send stopped outside SendError (the process
# stopping) with nothing in flight then drops its marker instead of counting as uncertain.
# A channel whose addresses name people directly (the console's
# `--as`) offers `person_of(address) -> int | None`; a channel that can receive what
# nobody else can (the console) offers `fallback_address`; a channel that shows activity
# while a reply is prepared offers `async settle(conversation)`, called when the worker is
# done with a message (replied, waiting, or ignored). A channel with credentials offers
# `async probe() -> str`: it logs in without starting (for `axi doctor`), returns what it
# found (e.g. the bot's name) and raises ProbeFailed with the fix.
