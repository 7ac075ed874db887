"""PostgreSQL advisory locks: "only one process does this" across every `axi` process on
the same database (one Telegram poller per bot, one run of a veille at a time).

`advisory_lock(name)` tries the session-level lock on a connection of its own, held for
the block; it yields a `HeldLock`, true when this process got it. The connection going
away (the process dies, the database restarts, an idle connection is killed) releases
the lock — so whoever holds it must ask `still_held()` now and then, and stop doing the
one-process work when it is no longer true.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text


class HeldLock:
    def __init__(self, conn: Any, got: bool):
        self._conn = conn
        self.got = got

    def __bool__(self) -> bool:
        return self.got

    async def still_held(self) -> bool:
        """True while this process still holds the lock (its connection alive)."""
        if not self.got:
            return False
        try:
            held = bool(await self._conn.scalar(text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid() AND granted)")))
            await self._conn.commit()
        except Exception:  # the connection is gone: so is the lock
            self.got = False
            return False
        self.got = held
        return held


class LocksMixin:
    db: Any

    @asynccontextmanager
    async def advisory_lock(self, name: str) -> AsyncIterator[HeldLock]:
        async with self.db.engine.connect() as conn:
            got = bool(await conn.scalar(text(
                "SELECT pg_try_advisory_lock(hashtextextended(:n, 0))"), {"n": name}))
            await conn.commit()
            held = HeldLock(conn, got)
            try:
                yield held
            finally:
                if held.got:
                    try:
                        await conn.execute(text(
                            "SELECT pg_advisory_unlock(hashtextextended(:n, 0))"), {"n": name})
                        await conn.commit()
                    except Exception:  # the connection died: the lock went with it
                        pass
