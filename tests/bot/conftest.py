"""Fixtures shared by the core's tests: `axi`, a whole assistant on the test database with
a recording Telegram stand-in, Ludo (créateur, 1001) and Mme Durand (client, 2002)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import Axi
from memory.database import Database
from tests.bot.test_pipeline import RecordingChannel, make_settings, scripted_reply
from tests.conftest import empty_tables
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama


@pytest.fixture
async def axi(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> AsyncIterator[Axi]:
    await empty_tables(db)
    ollama_server.reply = scripted_reply
    cfg = make_settings(ollama_server, anthropic_server, database_url, test_data_dir)
    async with Axi(cfg, {"telegram": RecordingChannel("telegram")}) as app:
        await app.store.add_person("Ludo", relation="créateur", comment_interagir="tutoie",
                                   identities=[("telegram", "1001")])
        await app.store.add_person("Mme Durand", relation="client",
                                   identities=[("telegram", "2002")])
        await app.store.add_fact("Ludo", "habite à", "Peyrebrune", relation_id=1)
        await app.store.add_fact("Ludo", "envisage de vendre", "sa maison de Vergt",
                                 relation_id=1)
        yield app


@pytest.fixture
async def cli_env(db: Database, database_url: str | None, test_data_dir: Path,
                  ollama_server: FakeOllama) -> dict[str, str]:
    await empty_tables(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC", "OLLAMA"))}
    env.update({"OLLAMA_HOST": ollama_server.url, "AXI_LOCAL_TIMEOUT": "60",
                "AXI_LOCAL_NUM_CTX": "4096"})
    if database_url:
        env["AXI_DATABASE_URL"] = database_url
    else:
        env["AXI_DATA_DIR"] = str(test_data_dir)
    return env
