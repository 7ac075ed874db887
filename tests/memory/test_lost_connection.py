"""`lost_connection` tells an outage from a bug, on the errors the real drivers raise: the
worker logs a message that failed because the database went away in one line (it is
retried), and a statement's own fault with its traceback (found by the soak: 29
tracebacks in the log of one PostgreSQL restart)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from memory.database import PING_AFTER_IDLE_S, Database, lost_connection, open_database


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_server_nobody_listens_on_is_an_outage() -> None:
    engine = create_async_engine(
        f"postgresql+asyncpg://axi@127.0.0.1:{_closed_port()}/axi")
    try:
        with pytest.raises(Exception) as caught:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert lost_connection(caught.value)


async def test_a_connection_ended_by_the_server_is_an_outage(db: Database) -> None:
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        async with db.engine.connect() as other:
            pid = await conn.scalar(text("SELECT pg_backend_pid()"))
            await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
        with pytest.raises(Exception) as caught:
            await conn.execute(text("SELECT 1"))
        await conn.invalidate()
    assert lost_connection(caught.value)


async def test_a_statements_own_fault_is_not(db: Database) -> None:
    for bad in ("SELEC 1", "SELECT 1/0", "SELECT * FROM no_such_table"):
        async with db.engine.connect() as conn:
            with pytest.raises(Exception) as caught:
                await conn.execute(text(bad))
        assert not lost_connection(caught.value), bad
    assert not lost_connection(ValueError("x"))


async def test_an_oserror_outside_the_database_driver_is_not(tmp_path: Path) -> None:
    """A file missing in a handler, or an HTTP service refusing, is a fault to show with
    its traceback, not "the database is out of reach" (a review found both hidden)."""
    with pytest.raises(OSError) as missing:
        (tmp_path / "absent.txt").read_text()
    assert not lost_connection(missing.value)
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError) as refused:
            await client.get(f"http://127.0.0.1:{_closed_port()}/")
    assert not lost_connection(refused.value)
    try:
        try:
            (tmp_path / "absent.txt").read_text()
        except OSError:
            raise RuntimeError("while handling a missing file") from None
    except RuntimeError as exc:
        assert not lost_connection(exc)


async def test_a_pooled_connection_is_checked_only_after_sitting_idle(
        db: Database, database_url: str | None, test_data_dir: Path) -> None:
    """A server we do not run: a connection just given back to the pool is used as it is
    (SQLAlchemy's pre-ping cost three round trips, BEGIN, an empty query and ROLLBACK, at
    every checkout: a dozen times on a message's path), so one the server ends right then
    fails its next statement, an outage like any other, and the pool opens a new one; a
    connection idle for PING_AFTER_IDLE_S is checked first, and replaced unseen."""
    if database_url is None:
        pytest.skip("the embedded server is ours: its connections are never checked")

    async def pid(mine: Database) -> int:
        async with mine.reads() as session:  # type: ignore[misc]
            return int(await session.scalar(text("SELECT pg_backend_pid()")))

    async def end(backend: int) -> None:
        async with db.engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend})
        await asyncio.sleep(0.1)  # the driver reads the server's goodbye

    async with open_database(database_url, test_data_dir, pool_size=1) as mine:
        first = await pid(mine)
        await end(first)  # just given back: not checked, so the statement meets the end
        with pytest.raises(Exception) as caught:
            await pid(mine)
        assert lost_connection(caught.value)
        second = await pid(mine)  # the pool opened a new connection
        assert second != first
        await asyncio.sleep(PING_AFTER_IDLE_S + 0.1)
        await end(second)  # idle a while: checked before use, replaced, nothing seen
        assert await pid(mine) not in (first, second)
