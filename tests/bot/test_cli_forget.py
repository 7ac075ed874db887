"""`axi people forget` and `axi people purge-visitors`: the real command on the test
database. On a terminal it says what will go and erases only after `yes` is typed; a
script passes --yes; without either nothing is erased."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from memory.database import Database
from memory.store import MemoryStore
from tests.bot.test_cli_errors import one_line
from tests.memory.test_forget import JULIE_ERASED, TABLES, age, build_world, snapshot, turn

Run = Callable[..., subprocess.CompletedProcess]
HERE = Path(__file__).parent  # no .env from the project root


@pytest.fixture
def axi(cli_env: dict[str, str]) -> Run:
    """`axi ARGS…`; with `typed`, standard input is a terminal on which that is typed."""
    def run(*args: str, typed: str | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "bot.cli", *args]
        if typed is None:
            return subprocess.run(command, capture_output=True, text=True, env=cli_env,
                                  timeout=120, cwd=HERE, stdin=subprocess.DEVNULL)
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(command, stdin=slave, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=cli_env, cwd=HERE)
            os.write(master, typed.encode())  # the terminal holds the line until it is read
            out, err = proc.communicate(timeout=120)
        finally:
            os.close(slave)
            os.close(master)
        return subprocess.CompletedProcess(command, proc.returncode, out, err)
    return run


async def test_a_terminal_asks_for_yes(axi: Run, db: Database) -> None:
    store = MemoryStore(db)
    w = await build_world(store)
    everything = {t: w.before[t] | w.julie_rows[t] for t in TABLES}

    r = axi("people", "forget", "Julie", typed="non\n")
    one_line(r, 1, "cancelled; nothing was erased")  # the prompt has no newline
    assert "This erases Julie (#3; telegram:3003, email:julie@example.fr" in r.stderr
    assert "for good: 7 souvenirs, 3 facts, 9 messages" in r.stderr
    assert "Type yes to continue" in r.stderr
    assert await snapshot(store) == everything

    r = axi("people", "forget", "julie", typed="yes\n")
    assert r.returncode == 0, r.stderr
    assert "Erased Julie (#3" in r.stdout and "1 contact request, 1 person." in r.stdout
    assert await snapshot(store) == w.before


async def test_scripts_pass_yes_and_nothing_happens_without(axi: Run, db: Database) -> None:
    store = MemoryStore(db)
    w = await build_world(store)
    one_line(axi("people", "forget", "Julie"), 2, "not confirmed", "--yes")
    assert (await snapshot(store))["relations"] == w.before["relations"] | {w.julie}

    r = axi("people", "forget", "email:julie@example.fr", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert done["person_id"] == w.julie and done["erased"] == JULIE_ERASED.to_json()
    assert await snapshot(store) == w.before

    r = axi("people", "forget", "telegram:3003", "--yes")  # she is gone: a raw address now
    assert r.returncode == 0 and "Nothing to erase for telegram:3003" in r.stdout
    one_line(axi("people", "forget", "pigeon:1", "--yes"), 1, "unknown channel")
    one_line(axi("people", "forget", "Personne", "--yes"), 1, "neither a known person")
    one_line(axi("people", "forget", "99999999999", "--yes"), 1, "no person #")


async def test_purge_visitors_now(axi: Run, db: Database) -> None:
    store = MemoryStore(db)
    old = await turn(store, "site", "visiteur-ab", "Bonjour", relation_id=None, verified=False)
    await turn(store, "site", "visiteur-cd", "Bonsoir", relation_id=None, verified=False)
    await age(store, [old], 40)
    one_line(axi("people", "purge-visitors", "--days", "abc", "--yes"), 1, "--days")
    one_line(axi("people", "purge-visitors", "--days", "30"), 2, "not confirmed")
    r = axi("people", "purge-visitors", "--days", "30", "--yes", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"older_than_days": 30, "erased": {
        **{k: 0 for k in JULIE_ERASED.to_json()}, "messages": 2, "souvenirs": 2}}
    assert len((await snapshot(store))["messages"]) == 2  # the recent visitor's
