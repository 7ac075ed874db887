"""`axi backup …` as Anthony uses it (docs/exploitation.md, « Sauvegardes »): real
subprocesses, real restic with a repository in a temp directory, the test database (the
embedded PostgreSQL 16 or the PostgreSQL 15 server). The restore below follows the
runbook's procedure. Every failure is one line on stderr and a non-zero exit."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from jobs import pg_tools
from jobs.backup_rules import libpq_target
from memory.database import Database
from memory.store import MemoryStore
from tests.conftest import empty_tables

ROOT = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]


def _url(db: Database, name: str | None = None) -> str:
    url = db.engine.url if name is None else db.engine.url.set(database=name)
    return url.render_as_string(hide_password=False).replace("+asyncpg", "")


@pytest.fixture
async def axi(db: Database, tmp_path: Path) -> Run:
    """`axi ARGS…` on the test database (given by URL, embedded server included), with a
    local repository in tmp_path and restic's password."""
    await empty_tables(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC",
                                                                      "RESTIC_", "PG"))}
    env.update({"PYTHONPATH": str(ROOT), "AXI_DATABASE_URL": _url(db),
                "AXI_DATA_DIR": str(tmp_path / "data"),
                "AXI_BACKUP_REPOSITORY": str(tmp_path / "depot"),
                "RESTIC_PASSWORD": secrets.token_hex(12),
                "RESTIC_CACHE_DIR": str(tmp_path / "cache")})

    def run(*args: str, extra_env: dict[str, str | None] | None = None
            ) -> subprocess.CompletedProcess[str]:
        full = {**env, **(extra_env or {})}
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300, cwd=tmp_path,
                              env={k: v for k, v in full.items() if v is not None})

    return run


@pytest.fixture
async def other_db(db: Database) -> AsyncIterator[str]:
    """A second database on the same server: Axi's database on a new machine."""
    name = f"axi_neuve_{secrets.token_hex(4)}"
    live = libpq_target(_url(db))
    conn = await pg_tools.connect(live)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    try:
        yield _url(db, name)
    finally:
        conn = await pg_tools.connect(live)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"{r.args[3:]}: exit {r.returncode}\n{r.stderr}"
    assert "Traceback" not in r.stderr
    return r.stdout


def one_line(r: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    where = f"{r.args[3:]!r}: exit {r.returncode}, stderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr, where
    assert r.returncode == code, where
    assert len(r.stderr.strip().splitlines()) == 1, where
    for needle in needles:
        assert needle in r.stderr, where
    return r.stderr.strip()


async def test_run_list_verify_then_restore_as_the_runbook_says(
        axi: Run, store: MemoryStore, other_db: str) -> None:
    for i in range(12):
        await store.remember(f"Compromis signé pour la maison n°{i} à Vergt")
    first = ok(axi("backup", "run"))
    assert "new restic repository initialised" in first and "Backup local: ok" in first
    listed = json.loads(ok(axi("backup", "list", "--json")))
    [snapshot] = listed["repositories"]["local"]
    assert [(o["type"], o["state"]) for o in listed["operations"]] == [("sauvegarde", "ok")]
    assert "identical to the backup" in ok(axi("backup", "verify"))
    assert "local: successfully removed locks" in ok(axi("backup", "unlock"))

    # the runbook: on the new machine Axi is installed and its database migrated…
    new_machine = {"AXI_DATABASE_URL": other_db}
    ok(axi("db", "upgrade", extra_env=new_machine))
    # …so it is not empty: a restore must be forced, and confirmed
    one_line(axi("backup", "restore", snapshot["short_id"], extra_env=new_machine), 1,
             "is not empty", "--force")
    one_line(axi("backup", "restore", snapshot["short_id"], "--force",
                 extra_env=new_machine), 2, "not confirmed", "--yes")
    target = libpq_target(other_db)
    assert (await pg_tools.stats_of(target))["public.souvenirs"].rows == 0  # untouched
    done = ok(axi("backup", "restore", snapshot["short_id"], "--force", "--yes",
                  extra_env=new_machine))
    assert "identical to the backup" in done
    restored = await pg_tools.stats_of(target)
    live = await pg_tools.stats_of(libpq_target(_url(store.db)))
    assert restored["public.souvenirs"] == live["public.souvenirs"]  # count and checksum
    assert "Up to date" in ok(axi("db", "status", extra_env=new_machine))
    history = json.loads(ok(axi("backup", "list", "--json", extra_env=new_machine)))
    assert history["operations"][0]["type"] == "restauration"

    # into a database given by URL, empty: no --force needed
    fresh = _url(store.db, f"axi_vide_{secrets.token_hex(3)}")
    conn = await pg_tools.connect(target)
    await conn.execute(f'CREATE DATABASE "{libpq_target(fresh).database}"')
    await conn.close()
    try:
        ok(axi("backup", "restore", "latest", "--into", fresh, "--yes"))
        assert (await pg_tools.stats_of(libpq_target(fresh)))["public.souvenirs"].rows == 12
    finally:
        conn = await pg_tools.connect(target)
        await conn.execute(f'DROP DATABASE "{libpq_target(fresh).database}" WITH (FORCE)')
        await conn.close()


def test_without_a_password_or_a_repository_nothing_runs(axi: Run) -> None:
    no_password = {"RESTIC_PASSWORD": None}
    one_line(axi("backup", "run", extra_env=no_password), 2, "RESTIC_PASSWORD", "not set")
    one_line(axi("backup", "verify", extra_env=no_password), 2, "RESTIC_PASSWORD")
    one_line(axi("backup", "run", extra_env={"AXI_BACKUP_REPOSITORY": None}), 2,
             "AXI_BACKUP_REPOSITORY is not set")
    one_line(axi("backup", "restore", "latest", "--from", "nuage"), 2, "--from")
    one_line(axi("backup", "list", extra_env={"AXI_BACKUP_REPOSITORY": None}), 2,
             "AXI_BACKUP_REPOSITORY")


def test_a_wrong_password_or_database_stores_nothing(axi: Run, db: Database) -> None:
    ok(axi("backup", "run"))
    one_line(axi("backup", "run", extra_env={"RESTIC_PASSWORD": "pas-le-bon"}), 1,
             "wrong restic password")
    wrong_db = _url(db, "axi_nexiste_pas")
    one_line(axi("backup", "run", extra_env={"AXI_DATABASE_URL": wrong_db}), 1,
             "cannot connect")
    one_line(axi("backup", "restore", "0000dead", "--yes"), 1, "is not one of Axi's snapshots")
    listed = json.loads(ok(axi("backup", "list", "--json")))
    assert len(listed["repositories"]["local"]) == 1
    states = [(o["type"], o["state"]) for o in listed["operations"]]
    assert states == [("sauvegarde", "echec"), ("sauvegarde", "ok")]


def test_help_loads_none_of_the_backup_machinery() -> None:
    code = ("import sys\nfrom bot.cli import app\ntry:\n    app(['backup', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith(('jobs', 'asyncpg', "
            "'apscheduler', 'httpx'))))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60, cwd=ROOT)
    assert "LOADED []" in r.stdout, r.stdout + r.stderr


def test_a_restore_target_with_an_impossible_port_is_one_line(axi: Run, db: Database) -> None:
    """`--into …:99999/…` stopped with asyncio's OverflowError traceback."""
    ok(axi("backup", "run"))
    for port in ("99999", "0"):
        bad = (_url(db).replace(f":{db.engine.url.port}/", f":{port}/") if db.engine.url.port
               else re.sub(r"([?&])port=\d+", rf"\g<1>port={port}", _url(db)))  # embedded
        assert bad != _url(db)
        one_line(axi("backup", "restore", "latest", "--into", bad, "--yes"), 2,
                 "port must be a number from 1 to 65535")


def test_a_repository_given_as_a_relative_path_works(axi: Run, tmp_path: Path) -> None:
    """AXI_BACKUP_REPOSITORY=./sauvegardes: restic created the repository in the current
    directory, then looked for it from the work directory: every backup failed with 'no
    restic repository (is the disk mounted?)'."""
    relative = {"AXI_BACKUP_REPOSITORY": "./sauvegardes"}
    done = ok(axi("backup", "run", extra_env=relative))
    assert f"initialised at {tmp_path / 'sauvegardes'}" in done
    assert "Backup local: ok" in done
    assert "identical to the backup" in ok(axi("backup", "verify", extra_env=relative))
