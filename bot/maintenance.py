"""Background upkeep while `axi run` runs.

The lexicon of word frequencies (memory/lexicon.py) is brought up to date every
LEXICON_REFRESH_S seconds, so recall's word weights and search sizing follow the memory
as it grows, without ever counting words on a reply's path. The first pass builds the
lexicon when there is none (about 10 s for a million souvenirs, in the background), then
warms PostgreSQL's cache with recall's working set (memory/warmup.py) so that the first
replies after a restart are as fast as later ones.
"""

from __future__ import annotations

import asyncio
import logging

from bot.waiting import wait_for_event_or_stop
from memory.store import MemoryStore

log = logging.getLogger(__name__)

LEXICON_REFRESH_S = 300.0


async def run_maintenance(store: MemoryStore, stop: asyncio.Event, *,
                          every_s: float = LEXICON_REFRESH_S, warm: bool = True) -> None:
    first = True
    while not stop.is_set():
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
