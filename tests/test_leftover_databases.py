"""A killed run's test database is dropped by the next run; a live run's is kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from memory.database import async_url
from tests.leftover_databases import drop_leftovers, is_local


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_a_dead_runs_database_is_dropped_and_a_live_ones_kept(
        database_url: str | None) -> None:
    if database_url is None:  # the embedded server lives and dies with the run
        pytest.skip("needs AXI_TEST_DATABASE_URL's server")
    base = async_url(os.environ["AXI_TEST_DATABASE_URL"])
    dead, live = f"axi_test_{dead_pid()}_dead01", f"axi_test_{os.getpid()}_a11ce1"
    admin = create_async_engine(base, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            for name in (dead, live):
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
            dropped = await drop_leftovers(conn, base)
            left = set((await conn.execute(text(
                "SELECT datname FROM pg_database WHERE datname IN (:a, :b)"),
                {"a": dead, "b": live})).scalars())
            assert dead in dropped and live not in dropped
            assert left == {live}
            # a remote server's pids say nothing about this machine's processes
            await conn.execute(text(f'CREATE DATABASE "{dead}"'))
            assert await drop_leftovers(conn, base.set(host="db.example.org")) == []
    finally:
        async with admin.connect() as conn:
            for name in (dead, live):
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await admin.dispose()


def test_which_servers_are_this_machines() -> None:
    assert is_local(make_url("postgresql://postgres@127.0.0.1:5432/test"))
    assert is_local(make_url("postgresql://postgres@localhost/test"))
    assert is_local(make_url("postgresql://postgres@/test?host=/var/run/postgresql"))
    assert not is_local(make_url("postgresql://postgres@10.0.0.5/test"))
