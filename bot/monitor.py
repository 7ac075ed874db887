"""The component monitor of `axi run` (issue 13 §2): a periodic probe of the health
report; when a component of Axi breaks (the database, the local model, a channel, the
scheduler, the worker loops, a stuck message), Ludo and the administrateurs (Anthony) get
one French notice, and one more when it works again — never one per probe.

The rule "once when it breaks, once when it recovers" is the one the veilles' sources
follow (jobs/engine.py with `etat_sources`): remember the outage and whether they were
told; every notice carries a key unique to the outage (component + start) and the
person, so `notify`'s once-per-key (table `notifications`) makes a retry a no-op.
Outages of the running process live in memory: a restart during an outage tells them
again, once.

Flapping is debounced: a component counts as broken once it has failed at every probe for
at least `confirm_after` (a minute: so at least two probes), and as recovered after
`recover_probes` good probes in a row; a blip shorter than that says nothing. A component that cannot be read
(`unknown`, e.g. the queues while the database is away) neither breaks nor recovers.
While the database is away nothing can be queued (notify writes to it): the notice is
tried again at each probe, and when the database is back before it could go out, one
notice says the outage happened and ended. Only `error` components are alerted here:
`degraded` ones (a backup too old, a veille failing, the Claude budget) have their own
alerts where they happen.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from bot import alerts
from bot import health_rules as rules
from bot.channel import NotifyFn
from bot.notify import OWNER
from bot.policy import may_administer
from bot.waiting import wait_for_event_or_stop
from memory.records import PersonRecord
from memory.store import MemoryStore

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 30.0
CONFIRM_AFTER = timedelta(minutes=1)
RECOVER_PROBES = 2


# ------------------------------------------------------------------ the rule (pure)
@dataclass
class Outage:
    since: datetime
    reason: str
    oks: int = 0
    ok_since: datetime | None = None
    confirmed: bool = False
    told: bool = False


@dataclass(frozen=True)
class Event:
    kind: Literal["panne", "retour", "passee"]
    """panne: confirmed, to tell (again until told); retour: a told outage ended;
    passee: a confirmed outage ended before it could be told."""
    component: str
    since: datetime
    reason: str
    until: datetime | None = None


class OutageTracker:
    def __init__(self, *, confirm_after: timedelta = CONFIRM_AFTER,
                 recover_probes: int = RECOVER_PROBES):
        self.confirm_after = confirm_after
        self.recover_probes = max(1, recover_probes)
        self.outages: dict[str, Outage] = {}

    def observe(self, failing: Mapping[str, str], healthy: Iterable[str],
                now: datetime) -> list[Event]:
        """One probe: `failing` components (with their reason) and `healthy` ones; what
        to tell now."""
        events: list[Event] = []
        for name, reason in failing.items():
            outage = self.outages.get(name)
            if outage is None:
                outage = self.outages[name] = Outage(since=now, reason=reason)
            else:
                outage.oks, outage.ok_since, outage.reason = 0, None, reason
            if not outage.confirmed and now - outage.since >= self.confirm_after:
                outage.confirmed = True
            if outage.confirmed and not outage.told:
                events.append(Event("panne", name, outage.since, outage.reason))
        for name in set(healthy) - set(failing):
            outage = self.outages.get(name)
            if outage is None:
                continue
            outage.oks += 1
            outage.ok_since = outage.ok_since or now
            if outage.oks < self.recover_probes:
                continue
            del self.outages[name]
            if outage.told:
                events.append(Event("retour", name, outage.since, outage.reason,
                                    outage.ok_since))
            elif outage.confirmed:
                events.append(Event("passee", name, outage.since, outage.reason,
                                    outage.ok_since))
        return events

    def told(self, component: str) -> None:
        outage = self.outages.get(component)
        if outage is not None:
            outage.told = True


def classify(report: Mapping[str, Any]) -> tuple[dict[str, str], set[str]]:
    """(components in error with their reason, components readable and not in error)."""
    failing, healthy = {}, set()
    for path, leaf in rules.walk(report.get("components") or {}):
        if leaf["status"] == rules.ERROR:
            failing[path] = str(leaf.get("reason") or "en panne")
        elif leaf["status"] != rules.UNKNOWN:
            healthy.add(path)
    return failing, healthy


# ------------------------------------------------------------------ the loop
class ComponentMonitor:
    def __init__(self, *, health: Callable[[], Awaitable[dict[str, Any]]], store: MemoryStore,
                 notify: NotifyFn, clock: Callable[[], datetime], timezone: str,
                 interval_s: float = PROBE_INTERVAL_S, tracker: OutageTracker | None = None):
        self.health = health
        self.store = store
        self.notify = notify
        self.clock = clock
        self.tz = ZoneInfo(timezone)
        self.interval_s = interval_s
        self.tracker = tracker or OutageTracker()
        self.probes = 0
        """Probes done (for `axi status` and the tests)."""
        self._retry: list[Event] = []
        self._unsent: set[str] = set()  # outages whose notice failed once (logged once)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.probe()
            except Exception as exc:  # the monitor must outlive whatever it watches
                log.warning("component monitor: probe failed: %s", type(exc).__name__)
            await wait_for_event_or_stop(None, stop, self.interval_s)

    async def probe(self) -> list[Event]:
        """Read the report once and tell what changed; the events told (for tests)."""
        report = await self.health()
        failing, healthy = classify(report)
        events = self._retry + self.tracker.observe(failing, healthy, self.clock())
        self._retry = []
        told = []
        for event in events:
            if await self._tell(event):
                told.append(event)
                if event.kind == "panne":
                    self.tracker.told(event.component)
            elif event.kind != "panne":  # a panne is emitted again while untold
                self._retry.append(event)
        self.probes += 1
        return told

    async def _recipients(self) -> list[PersonRecord | str]:
        people = [p for p in await self.store.list_people()
                  if may_administer(p.relation) and not p.bloque]
        return list(people) if people else [OWNER]

    async def _tell(self, event: Event) -> bool:
        path, since = event.component, event.since
        if event.kind == "panne":
            text = alerts.outage_text(path, event.reason, since, self.tz)
        elif event.kind == "retour":
            assert event.until is not None
            text = alerts.recovery_text(path, since, event.until, self.tz)
        else:
            assert event.until is not None
            text = alerts.past_outage_text(path, event.reason, since, event.until, self.tz)
        subject = alerts.outage_subject(path, recovered=event.kind != "panne")
        notice = f"composant:{path}:{since:%Y%m%dT%H%M%S}:{event.kind}"
        try:
            for person in await self._recipients():
                who = person.id if isinstance(person, PersonRecord) else "createur"
                await self.notify(person, text, key=f"{notice}:{who}", subject=subject,
                                  kind="push", urgent=True)
        except Exception as exc:
            if notice not in self._unsent:
                self._unsent.add(notice)
                log.warning("component alert %s (%s) not queued yet (%s): tried again at "
                            "the next probe", path, event.kind, type(exc).__name__)
            return False
        self._unsent.discard(notice)
        log.warning("component %s: %s (Ludo and the administrators told)", path,
                    {"panne": "broken", "retour": "recovered",
                     "passee": "was broken, recovered"}[event.kind])
        return True
