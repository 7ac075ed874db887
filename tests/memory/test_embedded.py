"""The embedded PostgreSQL 16: persistent, shared by concurrent processes, stopped when
the last one leaves, and clear errors on a damaged data directory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from memory import embedded
from memory.database import open_database
from memory.errors import DatabaseUnavailable, EmbeddedDatabaseError
from tests.waiting import until_sync

WORKERS = ("a", "b", "c")
WORKER = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from sqlalchemy import text
    from memory.database import open_database

    async def main():
        async with open_database(None, Path(sys.argv[1])) as db:
            async with db.engine.begin() as conn:  # CREATE IF NOT EXISTS races without it
                await conn.execute(text("SELECT pg_advisory_xact_lock(1)"))
                await conn.execute(text("CREATE TABLE IF NOT EXISTS t (who text)"))
                await conn.execute(text("INSERT INTO t VALUES (:w)"), {"w": sys.argv[2]})
            # stay connected until every worker has written: all of them at once on one server
            deadline = time.monotonic() + 60
            async with db.engine.connect() as conn:
                while await conn.scalar(text("SELECT count(*) FROM t")) < int(sys.argv[3]):
                    assert time.monotonic() < deadline, "the other workers never showed up"
                    await asyncio.sleep(0.05)
                print(await conn.scalar(text("SELECT version()")))

    asyncio.run(main())
""")


def _postmaster_running(pgdata: Path) -> bool:
    pid_file = pgdata / "postmaster.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text().splitlines()[0])
    return embedded._alive(pid)


def test_concurrent_processes_share_then_stop(tmp_path: Path) -> None:
    data = tmp_path / "axi"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(data), name, str(len(WORKERS))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name in WORKERS
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert "PostgreSQL 16" in out
    until_sync(lambda: not _postmaster_running(data / "pgdata"), 15,
               message="server left running after last exit")
    # the data persisted: a new process sees all three rows
    check = subprocess.run(
        [sys.executable, "-c", textwrap.dedent("""
            import asyncio, sys
            from pathlib import Path
            from sqlalchemy import text
            from memory.database import open_database
            async def main():
                async with open_database(None, Path(sys.argv[1])) as db:
                    async with db.engine.connect() as c:
                        print(sorted((await c.execute(text("SELECT who FROM t"))).scalars()))
            asyncio.run(main())
        """), str(data)], capture_output=True, text=True, timeout=120)
    assert check.stdout.strip() == "['a', 'b', 'c']", check.stderr


def test_wrong_version_data_dir(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("13\n")
    with pytest.raises(EmbeddedDatabaseError, match="PostgreSQL '13'"):
        embedded.start(tmp_path)


def test_corrupt_data_dir(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "base").mkdir()
    (pgdata / "garbage").write_text("x")
    with pytest.raises(EmbeddedDatabaseError, match="corrupt"):
        embedded.start(tmp_path)


def test_damaged_cluster_reports_log(tmp_path: Path) -> None:
    pgdata = tmp_path / "pgdata"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("16\n")
    (pgdata / "postgresql.conf").write_text("this is = not valid ==\n")
    with pytest.raises(EmbeddedDatabaseError, match="did not start"):
        embedded.start(tmp_path)


def test_unwritable_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(EmbeddedDatabaseError, match="cannot create"):
        embedded.start(blocker / "sub")


async def test_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatabaseUnavailable, match="cannot connect"):
        async with open_database("postgresql://axi@127.0.0.1:1/axi", tmp_path):
            pass
    with pytest.raises(DatabaseUnavailable, match="PostgreSQL URL"):
        async with open_database("sqlite:///x.db", tmp_path):
            pass
    with pytest.raises(DatabaseUnavailable, match="not a valid URL"):
        async with open_database("::::", tmp_path):
            pass


async def test_embedded_server_gets_bigger_shared_buffers_at_next_start(tmp_path: Path) -> None:
    from sqlalchemy import text

    from memory.database import embedded_shared_buffers_mb

    seen = []
    for _ in range(2):
        async with open_database(None, tmp_path / "axi") as db:
            async with db.engine.connect() as conn:
                seen.append(await conn.scalar(text(
                    "SELECT setting::bigint * 8 / 1024 FROM pg_settings "
                    "WHERE name = 'shared_buffers'")))
    assert seen == [128, embedded_shared_buffers_mb()]
