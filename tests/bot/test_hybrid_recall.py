"""Hybrid recall on the reply's path: souvenirs embedded in the background through the
real ollama client and a loopback /api/embed, the message embedded when it is answered,
and a souvenir found by meaning (no shared word) in the prompt's data."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.app import Axi
from bot.embedder import SouvenirEmbedder
from memory.database import Database
from memory.embeddings import vector_index_name
from tests.bot.test_pipeline import RecordingChannel, make_settings, run_all, scripted_reply, telegram
from tests.conftest import empty_tables
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

ROOF = [1.0, 0.0, 0.0, 0.0]
GARDEN = [0.0, 1.0, 0.0, 0.0]
OTHER = [0.0, 0.0, 0.3, 1.0]


def meaning(text_: str) -> list[float]:
    """A toy embedding model: roofs and gardens, whatever the words."""
    low = text_.lower()
    if any(w in low for w in ("toit", "couverture", "tuiles", "ardoise")):
        return ROOF
    if any(w in low for w in ("jardin", "potager", "pelouse")):
        return GARDEN
    return OTHER


@pytest.fixture
async def axi(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> AsyncIterator[Axi]:
    await empty_tables(db)
    ollama_server.reply = scripted_reply
    ollama_server.embedding = meaning
    cfg = make_settings(ollama_server, None, database_url, test_data_dir,
                        AXI_EMBED_MODEL="nomic-embed-text")
    async with Axi(cfg, {"telegram": RecordingChannel("telegram")}) as app:
        await app.store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
        yield app


def data_of(ollama_server: FakeOllama) -> str:
    talk = [b for b in ollama_server.chat_bodies if not b.get("format")]
    return json.dumps(talk[-1]["messages"][-1], ensure_ascii=False)


class _Failures:
    n = 0


def count_failures(embedder: SouvenirEmbedder) -> _Failures:
    """Count the embedder's failed embed calls. The failure reaches the embedder's loop,
    which logs it or not, before its next await: once the count moves, that is decided."""
    failures = _Failures()
    embed = embedder.embedder.embed

    async def counted(texts: list[str]) -> list[list[float]]:
        try:
            return await embed(texts)
        except Exception:
            failures.n += 1
            raise

    embedder.embedder.embed = counted  # type: ignore[method-assign]
    return failures


async def embed_all(app: Axi) -> int:
    assert app.embedder is not None
    done = 0
    while n := await app.embedder.embed_batch():
        done += n
    return done


async def test_a_souvenir_found_by_meaning_reaches_the_prompt(
    axi: Axi, ollama_server: FakeOllama
) -> None:
    await axi.store.remember("Le couvreur change les ardoises de la grange de Sarlat lundi")
    await axi.store.remember("Vente conclue pour la maison de Vergt")
    question = "Où en est la toiture ?"
    # full text alone cannot find it: no word in common
    assert await axi.store.recall(question, limit=8) == []
    # before any vector is stored, replies use full text and embed nothing
    await axi.pipeline.accept(telegram("1001", question))
    await run_all(axi)
    assert "ardoises" not in data_of(ollama_server)
    assert [r for r in ollama_server.requests if r.path == "/api/embed"] == []

    assert await embed_all(axi) == 4  # two notes + the turn's two souvenirs
    assert await axi.store.count_embeddings("nomic-embed-text") == 4
    if await axi.store.has_pgvector():
        async with axi.db.engine.connect() as conn:
            found = await conn.scalar(text("SELECT count(*) FROM pg_indexes WHERE indexname = :n"),
                                      {"n": vector_index_name("nomic-embed-text", 4)})
        assert found == 1
    assert axi.pipeline.responder.recaller.vectors is not None
    axi.pipeline.responder.recaller.vectors._ready_until = 0.0  # the cached "no vectors yet" expires
    await axi.pipeline.accept(telegram("1001", "Et pour le toit, du nouveau ?"))
    await run_all(axi)
    assert "ardoises de la grange de Sarlat" in data_of(ollama_server)
    assert "maison de Vergt" not in data_of(ollama_server)  # not similar enough
    embeds = [r.body for r in ollama_server.requests if r.path == "/api/embed"]
    assert embeds[-1]["input"] == ["Et pour le toit, du nouveau ?"]


async def test_embedding_trouble_never_blocks_a_reply(
    axi: Axi, ollama_server: FakeOllama
) -> None:
    await axi.store.remember("Le couvreur change les ardoises de la grange de Sarlat lundi")
    await embed_all(axi)
    vectors = axi.pipeline.responder.recaller.vectors
    assert vectors is not None and await vectors.ready()
    ollama_server.models.remove("nomic-embed-text:latest")  # the model was removed
    await axi.pipeline.accept(telegram("1001", "Et la toiture de Sarlat ?"))
    await run_all(axi)
    assert len([b for b in ollama_server.chat_bodies if not b.get("format")]) == 1
    assert await vectors.vector("toiture") is None  # paused: not asked again at once
    before = len(ollama_server.requests)
    assert await vectors.vector("toiture") is None and len(ollama_server.requests) == before


async def test_background_embedder_says_once_when_the_model_is_missing(
    axi: Axi, ollama_server: FakeOllama, caplog: pytest.LogCaptureFixture
) -> None:
    await axi.store.remember("Une note")
    ollama_server.models.remove("nomic-embed-text:latest")
    assert axi.embedder is not None
    axi.embedder.idle = lambda: True  # no worker runs here (axi run's lanes would be idle)
    failures = count_failures(axi.embedder)
    stop = asyncio.Event()
    with caplog.at_level("WARNING"):
        task = asyncio.create_task(axi.embedder.run(stop))
        await until(lambda: failures.n == 1, 10, message="the embedder never tried")
        axi.embedder.wake.set()  # a wake-up does not repeat the warning
        await until(lambda: failures.n == 2, 10, message="the wake-up was not handled")
        stop.set()
        await asyncio.wait_for(task, 5)
    warnings = [r.getMessage() for r in caplog.records if "embeddings unavailable" in r.getMessage()]
    assert len(warnings) == 1 and "ollama pull nomic-embed-text" in warnings[0]
    assert await axi.store.count_embeddings("nomic-embed-text") == 0


async def test_small_talk_recalls_nothing_even_with_vectors(
    axi: Axi, ollama_server: FakeOllama
) -> None:
    await axi.store.remember_many([])  # nothing
    from memory.store import NewSouvenir
    await axi.store.remember_many([NewSouvenir(f"merci pour la visite numéro {i}")
                                   for i in range(60)])
    await embed_all(axi)
    assert not await axi.store.query_informative("Merci !")
    assert not await axi.store.query_informative("Et toi ?")  # stop words only
    assert await axi.store.query_informative("pigeonnier")  # unknown to memory: maybe
    found = await axi.store.recall_hybrid("Merci !", OTHER, model="nomic-embed-text",
                                          limit=8, informative_only=True)
    assert found == []


async def test_background_embedding_waits_for_idle_workers(
    axi: Axi, ollama_server: FakeOllama
) -> None:
    await axi.store.remember("Le potager de Vergt")
    assert axi.embedder is not None
    busy = True
    asked = 0

    def idle() -> bool:
        nonlocal asked
        asked += 1
        return not busy

    axi.embedder.idle = idle
    stop = asyncio.Event()
    task = asyncio.create_task(axi.embedder.run(stop))
    # the embedder found the workers busy: it went back to waiting without embedding
    # (what it does after idle() returns runs before its next await, so it is done by now)
    await until(lambda: asked >= 1, 10, message="the embedder never checked the workers")
    assert [r for r in ollama_server.requests if r.path == "/api/embed"] == []
    busy = False
    await until(lambda: axi.store.count_embeddings("nomic-embed-text"), 10,
                message="nothing embedded once the workers were idle")
    stop.set()
    await asyncio.wait_for(task, 5)
    assert await axi.store.count_embeddings("nomic-embed-text") == 1
