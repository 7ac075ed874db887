"""Text embeddings for hybrid recall: a small protocol and the production implementation.

`OllamaEmbedder` calls Ollama's /api/embed (the model chosen by AXI_EMBED_MODEL, e.g.
nomic-embed-text) through `ollama.AsyncClient`. The offline embedder the retrieval benches
use lives in `bench/minilm.py`, out of the product.

Vectors are returned as given by the model; the memory store normalises them.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import ollama

from llm import ollama_errors
from llm.config import EmbedConfig
from llm.errors import LLMError, LLMUnavailable

OLLAMA_BATCH = 64


@runtime_checkable
class Embedder(Protocol):
    model: str

    @property
    def dim(self) -> int | None: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class OllamaEmbedder:
    """Embeddings from Ollama (`/api/embed`), in batches of OLLAMA_BATCH texts."""

    def __init__(self, config: EmbedConfig, *, client: ollama.AsyncClient | None = None):
        if not config.model:
            raise ValueError("an embedding model is required (AXI_EMBED_MODEL)")
        self.config = config
        self.model: str = config.model
        self.host = config.host
        self.timeout_s = config.timeout_s
        self.keep_alive = config.keep_alive
        self._client = client or ollama.AsyncClient(host=self.host, timeout=self.timeout_s)
        self._dim: int | None = None

    @property
    def dim(self) -> int | None:
        """The vector dimension, known after the first call (None before)."""
        return self._dim

    async def __aenter__(self) -> OllamaEmbedder:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for start in range(0, len(texts), OLLAMA_BATCH):
            batch = texts[start:start + OLLAMA_BATCH]
            try:
                response = await self._client.embed(
                    model=self.model, input=batch, keep_alive=self.keep_alive
                )
            except Exception as exc:
                raise self._translate(exc) from exc
            vectors = [list(map(float, v)) for v in response.embeddings]
            if len(vectors) != len(batch):
                raise LLMUnavailable(
                    f"Ollama returned {len(vectors)} embeddings for {len(batch)} texts"
                )
            out.extend(vectors)
        if out:
            self._dim = len(out[0])
        return out

    def _translate(self, exc: Exception) -> LLMError:
        # Anything else still means "no vectors now": recall falls back to full text.
        return ollama_errors.translate(
            exc, model=self.model, host=self.host, timeout_s=self.timeout_s
        ) or LLMUnavailable(f"Ollama embed failed: {type(exc).__name__}: {exc}")
