"""OllamaEmbedder against the loopback Ollama server's real /api/embed."""

from __future__ import annotations

import pytest

from llm.config import EmbedConfig
from llm.embeddings import Embedder, OllamaEmbedder
from llm.errors import LLMUnavailable, ModelNotFound
from tests.fakes.ollama_server import FakeOllama


def _config(ollama: FakeOllama, model: str) -> EmbedConfig:
    return EmbedConfig(host=ollama.url, model=model, timeout_s=2.0, keep_alive="45m")


async def test_embed_batches_and_dimension(ollama_server: FakeOllama) -> None:
    async with OllamaEmbedder(_config(ollama_server, "nomic-embed-text:latest")) as embedder:
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
    assert bodies[0]["keep_alive"] == "45m"


def test_a_model_is_required() -> None:
    with pytest.raises(ValueError, match="AXI_EMBED_MODEL"):
        OllamaEmbedder(EmbedConfig(model=""))


async def test_errors_are_translated(ollama_server: FakeOllama) -> None:
    async with OllamaEmbedder(_config(ollama_server, "absent-model")) as embedder:
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
