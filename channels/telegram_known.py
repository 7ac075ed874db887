"""Whether a Telegram sender is a known, unblocked person, for the channel's niceties only
(the "…" placeholder, fetching files): the worker identifies every message itself.

Asked on the poller's path, between a `getUpdates` and the next: while it waits, updates
that arrive wait too. So a cached answer is given at once, without a turn of the event
loop (`now`), and refreshed behind it past `ttl_s`; only a sender never seen waits for
the database, once per batch however many of their messages it holds. Files are the
exception (`__call__`): past `ttl_s` their sender is looked up again before the download.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

KNOWN_TTL_S = 30.0
MAX_CACHED = 10_000


class KnownSenders:
    def __init__(self, identify: Callable[[str], Awaitable[Any]], *,
                 ttl_s: float = KNOWN_TTL_S, background: set[asyncio.Task[Any]] | None = None):
        self._identify = identify
        """sender → the person (with `.blocked`) or None: ChannelServices.identify."""
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[bool, float]] = {}
        self._looking_up: set[str] = set()
        self._background = background if background is not None else set()
        """Where refreshes are kept while they run (the channel cancels them on stop)."""

    def now(self, sender: str) -> bool | None:
        """The cached answer (a refresh started behind it once stale), None if never seen."""
        cached = self._cache.get(sender)
        if cached is None:
            return None
        if time.monotonic() - cached[1] > self.ttl_s and sender not in self._looking_up:
            self._looking_up.add(sender)
            task = asyncio.ensure_future(self.look_up(sender))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return cached[0]

    def cached(self, sender: str) -> bool | None:
        """The cached answer, stale or not, None if never seen; starts nothing (safe from
        the poller's thread, whose loop cannot reach the database)."""
        cached = self._cache.get(sender)
        return None if cached is None else cached[0]

    async def __call__(self, sender: str) -> bool:
        """Known and unblocked? False when it cannot be told. Asked before fetching a
        sender's files (a download follows: one query more is nothing to it), so a stale
        answer is looked up again first, not served: a stranger paired since gets their
        files kept, a person blocked since does not fill the disk."""
        cached = self._cache.get(sender)
        if cached is not None and time.monotonic() - cached[1] <= self.ttl_s:
            return cached[0]
        return await self.look_up(sender)

    async def of(self, senders: Iterable[str]) -> dict[str, bool]:
        """Several senders at once: the database is asked (concurrently) only about those
        never seen, each once."""
        known: dict[str, bool | None] = {s: self.now(s) for s in senders}
        missing = [s for s, k in known.items() if k is None]
        if missing:
            found = await asyncio.gather(*(self.look_up(s) for s in missing))
            known.update(zip(missing, found, strict=True))
        return {s: bool(k) for s, k in known.items()}

    async def look_up(self, sender: str) -> bool:
        try:
            person = await self._identify(sender)
        except Exception as exc:  # a nicety: never in the way of storing the batch
            log.debug("cannot tell whether %s is known: %s", sender, exc)
            return False
        finally:
            self._looking_up.discard(sender)
        if len(self._cache) > MAX_CACHED:
            self._cache.clear()
        known = person is not None and not person.blocked
        self._cache[sender] = (known, time.monotonic())
        return known
