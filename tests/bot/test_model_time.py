"""The gate wired into Axi (issue: one CPU, one model): who gets which priority, a message
accepted preempts background extraction at once, and the preempted item is not lost nor
counted as a failure: it stays queued and is done later."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from sqlalchemy import text

from bot.app import Axi
from bot.policy import OPERATOR, interlocutor, model_priority
from llm.gate import Preempted, Priority
from memory.records import PersonRecord
from tests.bot.conftest import say
from tests.bot.test_pipeline import telegram
from tests.fakes.ollama_server import FakeOllama


async def _queued(axi: Axi) -> list[tuple[int, dict[str, Any]]]:
    """The souvenirs queued for extraction (id, metadata)."""
    async with axi.store.db.sessions() as session:
        rows = (await session.execute(text(
            "SELECT id, metadata FROM souvenirs WHERE metadata->>'extraction' = 'a_faire' "
            "ORDER BY id"))).all()
    return [(r.id, r.metadata) for r in rows]


def _person(relation: str) -> PersonRecord:
    return PersonRecord(id=7, personne="X", relation=relation, comment_interagir=None,
                        details={}, cree_le=None, bloque=False,  # type: ignore[arg-type]
                        jamais_hors_serveur=False)


def test_who_gets_the_model_first() -> None:
    def of(person: PersonRecord | None, channel: str) -> Priority:
        return model_priority(interlocutor(person, channel=channel, address="a",
                                           verified=True))
    assert of(_person("créateur"), "telegram") == Priority.INNER_LIVE
    assert of(_person("équipe"), "web") == Priority.INNER_LIVE
    assert of(OPERATOR, "console") == Priority.INNER_LIVE
    assert of(_person("client"), "telegram") == Priority.CLIENT_LIVE
    assert of(None, "site") == Priority.CLIENT_LIVE
    assert of(_person("créateur"), "email") == Priority.EMAIL
    assert of(_person("client"), "email") == Priority.EMAIL


async def test_a_message_accepted_preempts_extraction_and_nothing_is_lost(
        axi: Axi, ollama_server: FakeOllama) -> None:
    await say(axi, "1001", "Retiens que j'habite à Peyrebrune.")
    [(queued, _)] = await _queued(axi)
    ollama_server.delay_s = 5.0  # the extraction is slow on the CPU
    extraction = asyncio.create_task(axi.extractor.extract_one())
    await asyncio.sleep(0.3)
    assert axi.gate.snapshot()["held"] == ["background"]
    started = time.monotonic()
    await axi.pipeline.accept(telegram("2002", "Bonjour, la longère est-elle libre ?"))
    with pytest.raises(Preempted):
        await extraction
    assert time.monotonic() - started < 1.0
    [(still, meta)] = await _queued(axi)
    assert still == queued
    assert "extraction_essais" not in meta  # not a failure: not counted
    ollama_server.delay_s = 0.0
    while await axi.extractor.extract_one():
        pass
    assert await _queued(axi) == []  # done, once quiet again
