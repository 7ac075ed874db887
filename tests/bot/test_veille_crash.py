"""A veille killed at the worst moments, as `axi veille run` really dies (the process
exits at once, nothing cleaned up): after its items are stored but before anything is
sent, and after its digest is queued but before its items are marked reported. The
rerun loses nothing and queues nothing twice; the killed run is recorded as failed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from memory.database import Database
from tests.fakes.ademe_server import FakeAdeme, dpe_row

ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"dataset": "dpe03existant", "codes_postaux": ["24260", "24510"],
          "prix_m2": {"24260": 1800, "24510": 1600}, "fourchette": 0.15,
          "recouvrement_jours": 60, "ras": False, "taille_page": 2}


@pytest.fixture
def ademe() -> Iterator[FakeAdeme]:
    fake = FakeAdeme([dpe_row(f"2624E00000{i:02d}", date(2026, 11, 20 + i % 8), "24260",
                              classe="FG"[i % 2]) for i in range(5)]
                     + [dpe_row("2624E0000100", date(2026, 11, 25), "24510", classe="C")])
    fake.start()
    yield fake
    fake.stop()


def axi(env: dict[str, str], cwd: Path, *args: str, crash: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    run_env = {**env, "PYTHONPATH": str(ROOT)}
    if crash:
        run_env["AXI_TEST_CRASH_AT"] = crash
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                          text=True, env=run_env, timeout=180, cwd=cwd)


async def counts(db: Database) -> tuple[int, int, int]:
    async with db.engine.connect() as conn:
        items = await conn.scalar(text("SELECT count(*) FROM elements_veille"))
        marked = await conn.scalar(text(
            "SELECT count(*) FROM elements_veille WHERE signale_le IS NOT NULL"))
        digests = await conn.scalar(text(
            "SELECT count(*) FROM messages WHERE sens = 'sortant' "
            "AND metadata->>'sujet' LIKE 'Veille DPE%'"))
    return int(items or 0), int(marked or 0), int(digests or 0)


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["veille:after_store", "veille:after_send"])
async def test_a_veille_killed_at_the_worst_moment_loses_and_doubles_nothing(
        moment: str, cli_env: dict[str, str], db: Database, ademe: FakeAdeme,
        tmp_path: Path) -> None:
    env = {**cli_env, "AXI_ADEME_API_URL": ademe.url, "AXI_GEO_API_URL": "http://127.0.0.1:9",
           "AXI_ANNUAIRE_API_URL": "http://127.0.0.1:9",
           "AXI_AGENCY_EMAIL": "agence@example.fr", "AXI_EMAIL_ADDRESS": "axi@example.fr",
           "AXI_SMTP_HOST": "127.0.0.1", "AXI_SMTP_PORT": "9", "AXI_SMTP_TLS": "none"}
    # (email configured: the digest is queued in the outbox; nothing sends it here)
    assert axi(env, tmp_path, "db", "upgrade").returncode == 0
    async with db.engine.begin() as conn:  # the seeded row, as the migration made it
        await conn.execute(text("DELETE FROM veilles WHERE nom = 'dpe'"))
    added = axi(env, tmp_path, "veille", "add", "dpe", "--type", "dpe", "--schedule",
                "0 8 * * *", "--config", json.dumps(CONFIG), "--recipients",
                json.dumps({"courriel": ["agence"], "resume": []}))
    assert added.returncode == 0, added.stderr

    killed = await asyncio.to_thread(axi, env, tmp_path, "veille", "run", "dpe", crash=moment)
    assert killed.returncode == 137, (killed.returncode, killed.stderr[-2000:])
    items, marked, digests = await counts(db)
    assert (items, marked) == (6, 0)  # stored before the kill, none reported yet
    assert digests == (1 if moment == "veille:after_send" else 0)

    again = await asyncio.to_thread(axi, env, tmp_path, "veille", "run", "dpe")
    assert again.returncode == 0, again.stderr[-2000:]
    assert await counts(db) == (6, 6, 1)  # nothing lost, one digest in all
    history = await asyncio.to_thread(axi, env, tmp_path, "veille", "history", "dpe",
                                      "--json")
    states = [run["state"] for run in json.loads(history.stdout)]
    assert states == ["ok", "echec"], states  # newest first: the killed run is not hidden
