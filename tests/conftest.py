"""Shared fixtures: a real PostgreSQL for the whole session.

With AXI_TEST_DATABASE_URL set (e.g. postgresql://postgres@127.0.0.1:5432/test), a fresh
database is created on that server for the run and dropped afterwards; otherwise the
embedded PostgreSQL 16 starts in a temporary data dir. Either way the schema is
migrated once and every test starts from empty tables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from memory import migrate
from memory.database import Database, async_url, open_database
from memory.store import MemoryStore
from tests.fakes import anthropic_server as _fake_anthropic
from tests.fakes import cpu_ollama as _fake_cpu
from tests.fakes import ollama_server as _fake_ollama
from tests.fakes import telegram_server as _fake_telegram
from tests.leftover_databases import drop_leftovers

# The loopback Ollama and Anthropic servers, for every test package.
ollama_server_session = _fake_ollama.ollama_server_session
ollama_server = _fake_ollama.ollama_server
anthropic_server_session = _fake_anthropic.anthropic_server_session
anthropic_server = _fake_anthropic.anthropic_server
telegram_server_session = _fake_telegram.telegram_server_session
telegram_server = _fake_telegram.telegram_server
cpu_servers = _fake_cpu.cpu_servers  # simulated CPU Ollama servers, started on demand

TEST_URL_ENV = "AXI_TEST_DATABASE_URL"
# The fixtures that reach the database under test. A test using none of them, directly or
# through another fixture, is marked `nodb` and runs in deploy/local.py's first pass only.
DATABASE_FIXTURES = frozenset({"database_url", "db", "store"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Classify every test by the fixtures it uses: `item.fixturenames` is the transitive
    closure, so a test whose fixture needs `database_url` (e.g. the CLI's subprocess env)
    counts as a database test, and a new test needs no marker to be classified."""
    for item in items:
        if DATABASE_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.nodb)


def pytest_report_collectionfinish(items: list[pytest.Item]) -> str:
    nodb = sum(1 for item in items if item.get_closest_marker("nodb"))
    return f"[axi] selected: {len(items) - nodb} database tests, {nodb} nodb tests"


@pytest.fixture(scope="session")
def test_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("axi-data")


@pytest.fixture(scope="session")
async def database_url(test_data_dir: Path) -> AsyncIterator[str | None]:
    """A URL of a fresh database on the server under test, or None for embedded."""
    base = os.environ.get(TEST_URL_ENV)
    if not base:
        yield None
        return
    name = f"axi_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_async_engine(async_url(base), isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await drop_leftovers(conn, async_url(base))
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = async_url(base).set(database=name)
    try:
        yield url.render_as_string(hide_password=False).replace("+asyncpg", "")
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(scope="session")
async def db(database_url: str | None, test_data_dir: Path) -> AsyncIterator[Database]:
    async with open_database(database_url, test_data_dir) as database:
        await migrate.upgrade(database.engine)
        yield database


TABLES_TO_EMPTY_SQL = """
SELECT string_agg(format('%I', tablename), ', ')
FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'
"""


async def empty_tables(database: Database) -> None:
    async with database.engine.begin() as conn:
        tables = await conn.scalar(text(TABLES_TO_EMPTY_SQL))
        if tables:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def store(db: Database) -> MemoryStore:
    await empty_tables(db)
    return MemoryStore(db)
