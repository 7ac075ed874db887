"""PostgreSQL advisory locks: "only one process does this" across every `axi` process on
the same database (one Telegram poller per bot, one run of a veille at a time).

`advisory_lock(name)` tries the session-level lock on a connection of its own, held for
the block: True when this process got it, False when another holds it. The connection
going away (the process dies) releases the lock, so a crash never leaves it taken.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text


class LocksMixin:
    db: Any

    @asynccontextmanager
    async def advisory_lock(self, name: str) -> AsyncIterator[bool]:
        async with self.db.engine.connect() as conn:
            got = bool(await conn.scalar(text(
                "SELECT pg_try_advisory_lock(hashtextextended(:n, 0))"), {"n": name}))
            await conn.commit()
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text(
                        "SELECT pg_advisory_unlock(hashtextextended(:n, 0))"), {"n": name})
                    await conn.commit()
