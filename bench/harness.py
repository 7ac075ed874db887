"""What several bench/ scripts share: their own database on a PostgreSQL server (created
if missing, emptied between phases), the process's peak RSS, the server's CPU time.

Why: each script had its own copy of these few lines, and the copies had begun to differ.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from memory.database import async_url

PUBLIC_TABLES_SQL = """
SELECT string_agg(format('%I', tablename), ', ')
FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'
"""
"""Every table of the schema but Alembic's, quoted, comma-separated (NULL: none)."""


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (a high-water mark), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


async def ensure_database(server_url: str, name: str, *, admin_database: str | None = None
                          ) -> str:
    """The database `name` on the server of `server_url`, created if missing (asked
    through `admin_database`, default the URL's own); its URL (postgresql://…)."""
    server = async_url(server_url)
    admin_url = server if admin_database is None else server.set(database=admin_database)
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            exists = await conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                       {"n": name})
            if not exists:
                await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    return server.set(database=name).render_as_string(
        hide_password=False).replace("+asyncpg", "")


async def empty_tables(engine: Any) -> None:
    """Every table emptied (the schema stays), identities restarted."""
    async with engine.begin() as conn:
        tables = await conn.scalar(text(PUBLIC_TABLES_SQL))
        if tables:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


async def backend_cpu(engine: Any) -> dict[int, float] | None:
    """CPU seconds (user + system) used so far by each server process connected to the
    engine's database, from /proc: None when the server is not on this machine (or its
    processes cannot be read). Unlike wall time, the same whatever else the machine runs."""
    async with engine.connect() as conn:
        pids = list((await conn.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"))).scalars())
    return _proc_cpu(pids)


def _proc_cpu(pids: list[int]) -> dict[int, float] | None:
    out = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        out[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return out


def cpu_used(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """Server CPU seconds between two `backend_cpu` readings (a process that started in
    between counts from zero)."""
    if before is None or after is None:
        return None
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
