"""Opening Axi's database: the configured URL or the embedded server, one async engine,
and the check that the schema is migrated before anything else runs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    InvalidatePoolError,
    OperationalError,
)
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_

from memory import embedded
from memory.errors import DatabaseUnavailable

CONNECT_TIMEOUT_S = 10
ANN_EF_SEARCH = 16
"""pgvector's hnsw.ef_search on the main pool's connections: an HNSW scan returns at most
this many vectors, and its cost grows with it (768 dimensions, 100,000 vectors: 40 →
6.6 ms, 24 → 2.6 ms, 16 → 1.7 ms); a reply wants 8. Larger searches set their own in a
transaction. (Not on recall's pool: its full-text searches may turn index scans off on
the connection, which an HNSW search needs.)"""
MAIN_SETTINGS = {"hnsw.ef_search": str(ANN_EF_SEARCH)}
RECALL_SETTINGS = {"enable_seqscan": "off", "plan_cache_mode": "force_custom_plan",
                   "application_name": "axi-recall"}
"""Connection settings of recall's pool (why: memory/recall_query.py, BITMAP_ONLY_SQL)."""
PING_AFTER_IDLE_S = 1.0
"""A pooled connection of a server we do not run is checked (one empty query) before use
when it sat idle this long: a restart or an idle timeout may have ended it meanwhile."""
_IDLE_SINCE = "axi_idle_since"


def ping_after_idle(engine: AsyncEngine, idle_s: float = PING_AFTER_IDLE_S) -> None:
    """Replaces SQLAlchemy's `pool_pre_ping`, which checked EVERY checkout with three round
    trips (BEGIN, an empty query, ROLLBACK, for pgbouncer) — on a message's path a dozen
    checkouts, each paying them, on the event loop every channel shares. A connection back
    in the pool for less than `idle_s` is not checked (it just worked; a server going away
    meanwhile fails the statement, an outage like any other: `lost_connection`); an older
    one is checked by one empty query, and a dead one makes SQLAlchemy replace the pool's
    connections, as its pre-ping did."""
    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _idle(dbapi_connection: Any, record: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.pop(_IDLE_SINCE, None)
        if since is None or time.monotonic() - since < idle_s:  # new, or just used
            return
        try:
            await_(dbapi_connection.driver_connection.fetchrow(";"))
        except Exception as exc:  # gone: a new connection, and the pool's older ones too
            raise InvalidatePoolError(f"pooled connection lost: {exc}") from exc


def async_url(url: str) -> URL:
    """Turn postgresql://… (any driver) into a SQLAlchemy asyncpg URL, or raise clearly."""
    try:
        parsed = make_url(url.strip())
        parsed.port  # noqa: B018 - make_url keeps a bad port for int() to refuse here
    except (ArgumentError, ValueError):
        raise DatabaseUnavailable(
            "AXI_DATABASE_URL is not a valid URL; expected e.g. "
            "postgresql://user:password@host:5432/axi"
        ) from None
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise DatabaseUnavailable(
            f"AXI_DATABASE_URL must be a PostgreSQL URL (postgresql://…), "
            f"not {parsed.get_backend_name()!r}"
        )
    return parsed.set(drivername="postgresql+asyncpg")


@dataclass
class Database:
    engine: AsyncEngine
    sessions: async_sessionmaker
    display_url: str
    embedded_server: embedded.EmbeddedServer | None = None
    reads: async_sessionmaker | None = None
    """Autocommit sessions on the same pool, for single-statement reads on a reply's
    path: no BEGIN/ROLLBACK round trips around the one query (two fewer per read)."""
    recall_sessions: async_sessionmaker | None = None
    """Autocommit sessions on recall's own small pool (see open_database)."""

    def __post_init__(self) -> None:
        if self.reads is None:
            self.reads = async_sessionmaker(
                self.engine.execution_options(isolation_level="AUTOCOMMIT"),
                expire_on_commit=False)
        if self.recall_sessions is None:  # without its own pool: plain transactions
            self.recall_sessions = self.sessions

    @property
    def is_embedded(self) -> bool:
        return self.embedded_server is not None


def embedded_shared_buffers_mb() -> int:
    """Shared buffers for the embedded server: an eighth of the RAM, 128 MB to 1 GB.
    PostgreSQL's 128 MB default holds a tenth of a million souvenirs' search data;
    at 1M souvenirs recall p95 went from 54 ms (128 MB) to 36 ms (1 GB)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 128
    return max(128, min(1024, ram // (8 * 1024 * 1024)))


async def _tune_embedded(admin_conn: Any) -> None:
    """Ask for bigger shared buffers; PostgreSQL applies it at the server's next start
    (the embedded server restarts whenever the last `axi` process has left)."""
    want = embedded_shared_buffers_mb()
    have = await admin_conn.scalar(text(
        "SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'"))
    pending = await admin_conn.scalar(text(
        "SELECT setting FROM pg_file_settings WHERE name = 'shared_buffers' AND applied IS NOT NULL "
        "AND sourcefile LIKE '%postgresql.auto.conf'"))
    if have is not None and int(have) < want and pending is None:
        await admin_conn.execute(text(f"ALTER SYSTEM SET shared_buffers = '{want}MB'"))


async def _ensure_database(server_url: URL, name: str, *, tune: bool = False) -> None:
    admin = create_async_engine(server_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            # concurrent first starts: one creates, the others wait then see it
            await conn.execute(text("SELECT pg_advisory_lock(4242000)"))
            try:
                exists = await conn.scalar(
                    text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
                )
                if not exists:
                    await conn.execute(text(f'CREATE DATABASE "{name}"'))
                if tune:
                    await _tune_embedded(conn)
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(4242000)"))
    finally:
        await admin.dispose()


_DRIVER_DIRS = (f"{os.sep}asyncpg{os.sep}", f"{os.sep}sqlalchemy{os.sep}")
_ASYNCPG_LOST = frozenset({"ConnectionDoesNotExistError", "CannotConnectNowError",
                           "AdminShutdownError", "InterfaceError"})


def _raised_by_driver(exc: BaseException) -> bool:
    """Raised inside asyncpg or SQLAlchemy (a socket refused or gone while connecting or
    talking to PostgreSQL), not by another library or our own code."""
    tb = exc.__traceback__
    while tb is not None:
        if any(d in tb.tb_frame.f_code.co_filename for d in _DRIVER_DIRS):
            return True
        tb = tb.tb_next
    return False


def lost_connection(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is the database being out of reach — refused,
    its socket gone, the connection closed under us, the server starting or stopping —
    rather than a fault of the statement or of other code: an outage, to be logged in one
    line and retried, not a bug to be shown with its traceback. An OSError counts only
    when the database driver raised it (a file missing, or an HTTP call refused, is not
    an outage)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and (current.connection_invalidated or isinstance(
                current, OperationalError | InterfaceError)):
            return True
        if type(current).__name__ in _ASYNCPG_LOST and \
                type(current).__module__.startswith("asyncpg"):
            return True
        if isinstance(current, OSError | TimeoutError) and _raised_by_driver(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def describe_connect_error(exc: BaseException, display_url: str) -> str:
    cause = getattr(exc, "orig", None) or exc
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return (
        f"cannot connect to PostgreSQL at {display_url}: {detail}. "
        "Check AXI_DATABASE_URL (host, port, user, password, database) and that the "
        "server is running; unset it to use the embedded database."
    )


@contextlib.asynccontextmanager
async def open_database(
    database_url: str | None, data_dir: Path, *, pool_size: int = 5
) -> AsyncIterator[Database]:
    """Yield a connected Database; the embedded server is released on exit."""
    server: embedded.EmbeddedServer | None = None
    if database_url is None:
        server = await asyncio.to_thread(embedded.start, data_dir)
        url = async_url(server.url())
        display = f"embedded PostgreSQL 16 in {server.pgdata}"
        try:
            await _ensure_database(url, embedded.DATABASE_NAME, tune=True)
        except (OSError, DBAPIError) as exc:
            await asyncio.to_thread(embedded.release, server)
            raise DatabaseUnavailable(describe_connect_error(exc, display)) from None
    else:
        url = async_url(database_url)
        display = url.render_as_string(hide_password=True).replace("+asyncpg", "")
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=5,
        connect_args={"timeout": CONNECT_TIMEOUT_S, "server_settings": MAIN_SETTINGS},
    )
    # Recall's own pool: its planner settings (memory/recall_query.py) are set per connection
    # instead of per transaction, so a recall needs no BEGIN/ROLLBACK round trips; no
    # other query ever runs with them.
    recall_engine = create_async_engine(
        url,
        pool_size=max(2, pool_size // 4),
        max_overflow=5,
        isolation_level="AUTOCOMMIT",
        connect_args={"timeout": CONNECT_TIMEOUT_S, "server_settings": RECALL_SETTINGS},
    )
    if server is None:  # a local socket to our own embedded server needs no liveness check
        ping_after_idle(engine)
        ping_after_idle(recall_engine)
    try:
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (TimeoutError, OSError, OperationalError, DBAPIError) as exc:
            raise DatabaseUnavailable(describe_connect_error(exc, display)) from None
        yield Database(
            engine=engine,
            sessions=async_sessionmaker(engine, expire_on_commit=False),
            display_url=display,
            embedded_server=server,
            recall_sessions=async_sessionmaker(recall_engine, expire_on_commit=False),
        )
    finally:
        await recall_engine.dispose()
        await engine.dispose()
        if server is not None:
            await asyncio.to_thread(embedded.release, server)
