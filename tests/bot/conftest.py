"""Fixtures shared by the core's tests: `axi`, a whole assistant on the test database with
a recording Telegram stand-in, Ludo (créateur, 1001) and Mme Durand (client, 2002)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.app import Axi
from memory.database import Database
from tests.bot.test_pipeline import RecordingChannel, make_settings, scripted_reply
from tests.conftest import empty_tables
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama


@asynccontextmanager
async def assistant(db: Database, database_url: str | None, data_dir: Path,
                    ollama: FakeOllama, anthropic: FakeAnthropic | None, *,
                    reply: Any = scripted_reply, fallback_reply: str | None = None,
                    embedding: Any = None, **settings: str) -> AsyncIterator[Axi]:
    """A whole Axi on empty tables with a recording Telegram stand-in, Ludo (créateur,
    telegram 1001, tutoyé) and Mme Durand (client, telegram 2002); `settings` are extra
    AXI_* variables, `embedding` the loopback Ollama's toy embedding model."""
    await empty_tables(db)
    ollama.reply = reply
    if embedding is not None:
        ollama.embedding = embedding
    if anthropic is not None and fallback_reply is not None:
        anthropic.reply = fallback_reply
    cfg = make_settings(ollama, anthropic, database_url, data_dir, **settings)
    async with Axi(cfg, {"telegram": RecordingChannel("telegram")}) as app:
        await app.store.add_person("Ludo", relation="créateur", comment_interagir="tutoie",
                                   identities=[("telegram", "1001")])
        await app.store.add_person("Mme Durand", relation="client",
                                   identities=[("telegram", "2002")])
        yield app


@pytest.fixture
async def axi(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> AsyncIterator[Axi]:
    async with assistant(db, database_url, test_data_dir, ollama_server,
                         anthropic_server) as app:
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


async def say(app: Axi, sender: str, message: str, *, verified: bool = True) -> int:
    """A Telegram message from `sender`, answered and delivered; its inbound id."""
    from tests.bot.test_pipeline import run_all, telegram

    message_id = await app.pipeline.accept(telegram(sender, message, verified=verified))
    await run_all(app)
    return message_id


async def extract_all(app: Axi) -> None:
    while await app.extractor.extract_one():
        pass
