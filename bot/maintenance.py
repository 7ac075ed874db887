"""Background upkeep while `axi run` runs.

The lexicon of word frequencies (memory/lexicon.py) is brought up to date every
LEXICON_REFRESH_S seconds, so recall's word weights and search sizing follow the memory
as it grows, without ever counting words on a reply's path. The first pass builds the
lexicon when there is none (about 10 s for a million souvenirs, in the background), then
warms PostgreSQL's cache with recall's working set (memory/warmup.py) so that the first
replies after a restart are as fast as later ones.

With `visitor_retention_days`, what the site's visitors left (chats, contact requests)
past that many days is deleted once every VISITOR_PURGE_S (RGPD; memory/forget.py), the
first time at startup, and what went is logged.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.waiting import wait_for_event_or_stop
from memory.store import MemoryStore

log = logging.getLogger(__name__)

LEXICON_REFRESH_S = 300.0
VISITOR_PURGE_S = 24 * 3600.0


async def purge_visitors(store: MemoryStore, retention_days: int) -> None:
    """One purge of the visitors' data past the retention; logged, never raised."""
    try:
        erased = await store.purge_visitor_data(retention_days)
    except Exception as exc:  # a database hiccup: try again next round
        log.warning("purging visitors' data failed: %s", exc)
        return
    if erased.total:
        log.info("visitors' data older than %d days deleted: %s", retention_days,
                 erased.in_words())


async def run_maintenance(store: MemoryStore, stop: asyncio.Event, *,
                          every_s: float = LEXICON_REFRESH_S, warm: bool = True,
                          visitor_retention_days: int | None = None,
                          purge_every_s: float = VISITOR_PURGE_S) -> None:
    first = True
    purged_at: float | None = None
    while not stop.is_set():
        if visitor_retention_days is not None and (
                purged_at is None or time.monotonic() - purged_at >= purge_every_s):
            purged_at = time.monotonic()
            await purge_visitors(store, visitor_retention_days)
        try:
            done = await store.refresh_lexicon()
            if done.full or done.souvenirs_counted:
                log.info("lexicon %s: %d souvenirs counted, %d lexemes, %.1f s",
                         "rebuilt" if done.full else "updated", done.souvenirs_counted,
                         done.lexemes, done.seconds)
        except Exception as exc:  # a database hiccup: try again next round
            log.warning("lexicon refresh failed: %s", exc)
        if first and warm:
            first = False
            try:
                done_warm = await store.warm_cache()
                log.info("memory warmed: %d souvenirs (%.0f MB) in %.1f s",
                         done_warm.souvenirs, done_warm.heap_mb, done_warm.seconds)
            except Exception as exc:
                log.warning("warming the memory cache failed: %s", exc)
        await wait_for_event_or_stop(None, stop, every_s)
