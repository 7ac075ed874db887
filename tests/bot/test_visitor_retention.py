"""Axi's periodic maintenance deletes the site visitors' data past
AXI_VISITOR_RETENTION_DAYS: at startup, then once per purge period (not at every lexicon
round), and logs what went."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bot.maintenance import run_maintenance
from memory.store import MemoryStore
from tests.memory.test_forget import age, snapshot, turn
from tests.waiting import until


async def _visitor_messages(store: MemoryStore) -> set[int]:
    return (await snapshot(store))["messages"]


async def test_maintenance_purges_at_start_then_once_a_period(
        store: MemoryStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bot.maintenance")
    old = await turn(store, "site", "visiteur-ab", "Bonjour", relation_id=None, verified=False)
    recent = await turn(store, "site", "visiteur-cd", "Bonsoir", relation_id=None,
                        verified=False)
    await age(store, [old], 31)
    stop = asyncio.Event()
    task = asyncio.create_task(run_maintenance(store, stop, every_s=0.01, warm=False,
                                               visitor_retention_days=30))
    try:
        await until(lambda: _gone(store, old), message="the old visitor chat stays")
        assert recent in await _visitor_messages(store)
        assert "visitors' data older than 30 days deleted: 2 souvenirs, 2 messages" in caplog.text
        # made old after the purge: it waits for the next period, lexicon rounds go by
        await age(store, [recent], 31)
        await asyncio.sleep(0.2)  # some twenty rounds
        assert recent in await _visitor_messages(store)
    finally:
        stop.set()
        await task
    # a period of zero: every round purges
    stop = asyncio.Event()
    task = asyncio.create_task(run_maintenance(store, stop, every_s=0.01, warm=False,
                                               visitor_retention_days=30, purge_every_s=0))
    try:
        await until(lambda: _gone(store, recent), message="the now-old chat stays")
    finally:
        stop.set()
        await task


async def _gone(store: MemoryStore, message_id: int) -> bool:
    return message_id not in await _visitor_messages(store)


async def test_without_a_retention_nothing_is_purged(store: MemoryStore) -> None:
    old = await turn(store, "site", "visiteur-ab", "Bonjour", relation_id=None, verified=False)
    await age(store, [old], 4000)
    stop = asyncio.Event()
    task = asyncio.create_task(run_maintenance(store, stop, every_s=0.01, warm=False))
    await asyncio.sleep(0.1)
    stop.set()
    await task
    assert old in await _visitor_messages(store)
