"""`notify`: the one way Axi reaches people on its own (DESIGN "Reaching people").

Veille digests, alerts, backup reports, questions for Ludo: each goes to a person (their
preferred channel in `relations.details["canal_prefere"]`, else Telegram when they have a
Telegram identity, else email, else the console log) or to a raw address (an email
address such as AXI_AGENCY_EMAIL, or `canal:adresse`), queued in the outbox like replies.
`key` is unique per notification: a rerun or a retry never sends twice. Pushes wait for
the end of quiet hours (AXI_QUIET_HOURS, default 21:00–07:30 Europe/Paris) unless urgent.
Only configured channels are used, so nothing is queued for a channel that would send it
stale whenever it is turned on.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.channel import KINDS, OutgoingFile
from bot.policy import OWNER_RELATION
from bot.quiet_hours import QuietHours
from memory.errors import InvalidInput, NotFound
from memory.notifications import Route
from memory.records import PersonRecord
from memory.rows import OutboundFile
from memory.store import MemoryStore

log = logging.getLogger(__name__)

PREFERENCE_KEY = "canal_prefere"
DEFAULT_ORDER = ("telegram", "email")
CLOUD_ONLY_ROUTES = {"axis": "axis"}
"""Channels that are the default route only for people of one relation: the Axis mailbox
is read in Anthropic's cloud, so it is Axis's own route, never a fallback for anyone
else's pushes (Ludo's alerts must not land there because he has an axis token)."""


def choose_routes(identities: Sequence[tuple[str, str]], details: dict[str, Any],
                  configured: Collection[str], relation: str | None = None
                  ) -> list[tuple[str, str]]:
    """A person's channel(s) for a push (pure). Their preference (a channel or a list of
    channels) when they have an identity on it, else their first Telegram identity,
    else their first email; only configured channels. Empty: no usable channel."""
    usable = [(c, a) for c, a in identities if c in configured]
    preferred = details.get(PREFERENCE_KEY)
    if isinstance(preferred, str):
        preferred = [preferred]
    if isinstance(preferred, list):
        picked = [(c, a) for c, a in usable if c in preferred]
        if picked:
            return picked
    order = DEFAULT_ORDER + tuple(c for c, r in CLOUD_ONLY_ROUTES.items() if r == relation)
    for channel in order:
        for c, a in usable:
            if c == channel:
                return [(c, a)]
    return []


_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")
_ADDRESS = re.compile(r"[^\s,;<>\x00-\x1f\x7f]{1,320}")


def valid_email(address: str) -> bool:
    """One plain address (no display name, no list, no line break: no header injection)."""
    return len(address) <= 254 and _EMAIL.fullmatch(address) is not None


def raw_route(address: str) -> tuple[str, str] | None:
    """'agence@x.fr' → ('email', 'agence@x.fr'); 'telegram:123' → ('telegram', '123');
    None when it is not a well-formed raw address."""
    address = address.strip()
    if ":" not in address:
        return ("email", address) if valid_email(address) else None
    channel, _, rest = address.partition(":")
    rest = rest.strip()
    if not channel.isascii() or not channel.isalpha() or _ADDRESS.fullmatch(rest) is None:
        return None
    if channel == "email" and not valid_email(rest):
        return None
    return channel.lower(), rest


Recipient = PersonRecord | int | str

OWNER = "@créateur"
"""Recipient meaning the créateur (Ludo) — the console when there is none yet."""


class Notifier:
    def __init__(self, store: MemoryStore, *, configured: Callable[[], Collection[str]],
                 fallback: tuple[str, str], quiet_hours: QuietHours | None,
                 timezone: str = "Europe/Paris",
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.store = store
        self.configured = configured
        self.fallback = fallback
        """The local console's route: where a notification goes when nobody else can
        get it (under `axi run`, the console writes it to the log)."""
        self.quiet_hours = quiet_hours
        self.tz = ZoneInfo(timezone)
        self.clock = clock

    async def routes_for(self, to: Recipient) -> tuple[str, list[Route]]:
        """(who, in words, for the record; the routes), falling back to the console."""
        if to == OWNER:
            owners = [p for p in await self.store.list_people()
                      if p.relation == OWNER_RELATION and not p.bloque]
            if not owners:
                return "créateur", [Route(*self.fallback)]
            to = owners[0]
        if isinstance(to, str):
            text_to = to
            try:  # a person's name first: names may hold "@" or ":"
                to = await self.store.get_person(text_to)
            except (NotFound, InvalidInput):
                raw = raw_route(text_to)
                if raw is None:
                    raise NotFound(f"no person or address {text_to!r}") from None
                if raw[0] not in self.configured():
                    raise InvalidInput(f"channel {raw[0]!r} is not configured here") from None
                return text_to, [Route(*raw)]
        elif isinstance(to, int):
            to = await self.store.get_person(to)
        identities, details = await self.store.routes_of(to.id)
        chosen = choose_routes(identities, details, set(self.configured()), to.relation)
        if not chosen:
            chosen = [self.fallback]
        return to.personne, [Route(c, a, to.id) for c, a in chosen]

    async def notify(
        self, to: Recipient, text: str, *, key: str, subject: str | None = None,
        html: str | None = None, attachments: Sequence[OutgoingFile] = (),
        cc: Sequence[str] = (), reply_to: str | None = None, kind: str = "push",
        urgent: bool = False,
    ) -> list[int]:
        """Queue `text` for `to`, once per `key`. Returns the outbound ids ([] when the
        key was already used). Raises NotFound for an unknown person."""
        if kind not in KINDS or kind in {"reply", "confirmation"}:
            # replies come from the worker; questions with buttons from Confirmations.ask
            raise InvalidInput(f"notify cannot send a {kind!r}")
        bad = [a for a in (*cc, *([reply_to] if reply_to else [])) if not valid_email(a)]
        if bad:
            raise InvalidInput(f"not an email address: {bad[0]!r}")
        who, routes = await self.routes_for(to)
        due = None
        if kind == "push" and not urgent and self.quiet_hours is not None:
            due = self.quiet_hours.hold_until(self.clock().astimezone(self.tz))
        queued = await self.store.queue_notification(
            cle=key, genre=kind, destinataire=who, routes=routes, texte=text, sujet=subject,
            metadata={"html": html, "cc": list(cc), "reply_to": reply_to,
                      "heures_calmes": due is not None},
            files=[OutboundFile(f.filename, f.content_type, f.data) for f in attachments],
            urgente=urgent, due_at=due)
        if queued.new:
            log.info("notification %s for %s: %d message(s)%s", key, who,
                     len(queued.message_ids), f", held until {due:%H:%M}" if due else "")
        return list(queued.message_ids)


async def notify_safely(notifier: Notifier, to: Recipient, text: str, **options: Any) -> bool:
    """notify for callers on a path that must not break (the reply path): log, never raise."""
    try:
        await notifier.notify(to, text, **options)
    except (NotFound, InvalidInput) as exc:
        log.warning("notification %s not queued: %s", options.get("key"), exc)
        return False
    except Exception as exc:
        log.warning("notification %s not queued: %s: %s", options.get("key"),
                    type(exc).__name__, exc)
        return False
    return True
