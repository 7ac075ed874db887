"""The one way a background loop sleeps: until it is woken, stopped, or a timeout.

Loops (worker lanes, outbox, extractor, embedder, maintenance, channel supervision) wait
for work with an event that says "there may be work" and the stop event of `axi run`;
the timeout is the poll that covers work created by other processes.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_for_event_or_stop(event: asyncio.Event | None, stop: asyncio.Event,
                                  seconds: float | None) -> bool:
    """Wait until `event` is set, `stop` is set, or `seconds` pass; clear
    `event`. Returns True when woken by the event (False: stop or timeout)."""
    waiters = [asyncio.ensure_future(stop.wait())]
    if event is not None:
        waiters.append(asyncio.ensure_future(event.wait()))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
    woken = event is not None and event.is_set()
    if event is not None:
        event.clear()
    return woken
