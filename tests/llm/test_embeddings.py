"""OllamaEmbedder against the loopback Ollama server's real /api/embed."""

from __future__ import annotations

import pytest

from bot.config import Settings
from llm.embeddings import Embedder, OllamaEmbedder, make_embedder
from llm.errors import LLMUnavailable, ModelNotFound
from tests.fakes.ollama_server import FakeOllama


def _settings(ollama: FakeOllama, **overrides) -> Settings:
    values = {"OLLAMA_HOST": ollama.url, "AXI_LOCAL_TIMEOUT": 2.0, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def test_embed_batches_and_dimension(ollama_server: FakeOllama) -> None:
    settings = _settings(ollama_server, AXI_EMBED_MODEL="nomic-embed-text:latest")
    async with OllamaEmbedder(settings) as embedder:
        assert isinstance(embedder, Embedder)
        assert embedder.dim is None
        texts = [f"souvenir numéro {i}" for i in range(70)]  # more than one batch
        vectors = await embedder.embed(texts)
        assert len(vectors) == 70 and all(len(v) == 8 for v in vectors)
        assert embedder.dim == 8
        assert await embedder.embed([]) == []
    bodies = [r.body for r in ollama_server.requests if r.path == "/api/embed"]
    assert [len(b["input"]) for b in bodies] == [64, 6]
    assert {b["model"] for b in bodies} == {"nomic-embed-text:latest"}
    assert bodies[0]["keep_alive"] == settings.local_keep_alive


async def test_off_by_default_and_chosen_model(ollama_server: FakeOllama) -> None:
    assert _settings(ollama_server).embed_model is None
    assert make_embedder(_settings(ollama_server)) is None
    embedder = make_embedder(_settings(ollama_server, AXI_EMBED_MODEL="nomic-embed-text"))
    assert embedder is not None and embedder.model == "nomic-embed-text"
    await embedder.aclose()
    assert make_embedder(_settings(ollama_server, AXI_EMBED_MODEL="off")) is None
    assert make_embedder(_settings(ollama_server, AXI_EMBED_MODEL="")) is None


async def test_errors_are_translated(ollama_server: FakeOllama) -> None:
    settings = _settings(ollama_server, AXI_EMBED_MODEL="absent-model")
    async with OllamaEmbedder(settings) as embedder:
        with pytest.raises(ModelNotFound):
            await embedder.embed(["x"])
        ollama_server.models.append("absent-model")
        ollama_server.fail_status = 500
        with pytest.raises(LLMUnavailable):
            await embedder.embed(["x"])
        ollama_server.fail_status = None
        ollama_server.stop()
        with pytest.raises(LLMUnavailable):
            await embedder.embed(["x"])
