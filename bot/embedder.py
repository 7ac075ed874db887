"""Embeddings for hybrid recall: souvenirs are embedded in the background, the message
is embedded on the reply's path.

Background (`SouvenirEmbedder`): while `axi run` runs, souvenirs without a vector of the
configured model (AXI_EMBED_MODEL, through Ollama's /api/embed) are embedded in small
batches, newest first, only while every worker lane is idle: on a CPU-only server the
embedding model must not slow a reply down. The first vectors of a model create its HNSW
index (pgvector). When Ollama is down or the model is not pulled, it says so once and
tries again later.

Reply path (`QueryVectors`): the message is embedded with a short timeout, and only once
the memory holds vectors of the model (otherwise recall is full text alone, as before).
A failed embedding turns vectors off for a while, so a dead embedder is not waited on at
every message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bot.waiting import wait_for_event_or_stop
from llm.errors import LLMError, ModelNotFound
from llm.gate import LocalGate, Preempted, Priority
from memory.errors import NotFound
from memory.store import MemoryStore

log = logging.getLogger(__name__)

EMBED_BATCH = 16
EMBED_CHARS = 2000
"""A souvenir is embedded by its first EMBED_CHARS characters (about 500 tokens)."""
RETRY_AFTER_S = 300.0
IDLE_POLL_S = 30.0
QUERY_TIMEOUT_S = 2.0
QUERY_PAUSE_AFTER_FAILURE_S = 60.0
READY_TTL_S = 60.0
EXACT_SEARCH_MAX = 3_000
"""Without pgvector's HNSW index, vectors are compared by an exact scan (plain SQL on a
server without pgvector: 112 ms for 2,000 vectors of 768 dimensions, measured on PostgreSQL
15 here): past this many vectors recall stays full text."""


class Embedder(Protocol):
    model: str

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class SouvenirEmbedder:
    def __init__(self, store: MemoryStore, embedder: Embedder, *,
                 idle: Callable[[], bool] = lambda: True, gate: LocalGate | None = None):
        self.store = store
        self.embedder = embedder
        self.idle = idle
        self.gate = gate
        """The local model's gate: embedding souvenirs is background work (llm/gate.py)."""
        self.wake = asyncio.Event()
        self.last_error: str | None = None

    async def embed_batch(self, size: int = EMBED_BATCH) -> int:
        """Embed the newest souvenirs that have no vector of the model; how many."""
        model = self.embedder.model
        todo = await self.store.missing_embeddings(size, model=model)
        if not todo:
            return 0
        texts = [s.contenu[:EMBED_CHARS] for s in todo]
        if self.gate is not None:
            vectors = await self.gate.run(Priority.BACKGROUND,
                                          lambda: self.embedder.embed(texts))
        else:
            vectors = await self.embedder.embed(texts)
        try:
            await self.store.store_embeddings(
                [(s.id, v) for s, v in zip(todo, vectors, strict=True)], model)
        except NotFound:  # a souvenir was deleted meanwhile: the next batch skips it
            return 0
        await self.store.ensure_vector_index(model, len(vectors[0]))
        return len(todo)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            pause = 0.0
            if not self.idle():
                pause = 1.0
            else:
                try:
                    if self.gate is not None:
                        await self.gate.until_quiet()
                    pause = 0.0 if await self.embed_batch() else IDLE_POLL_S
                    if self.last_error is not None:
                        log.info("embeddings (%s) work again", self.embedder.model)
                        self.last_error = None
                except Preempted:  # a person needed the model: the batch waits for quiet
                    pause = 0.0
                except LLMError as exc:
                    pause = RETRY_AFTER_S
                    if self.last_error != str(exc):
                        self.last_error = str(exc)
                        hint = (f" — ollama pull {self.embedder.model}"
                                if isinstance(exc, ModelNotFound) else "")
                        log.warning("Plongements indisponibles / embeddings unavailable "
                                    "(%s)%s: le rappel reste en texte intégral / recall "
                                    "stays full text", exc, hint)
                except Exception as exc:  # a database hiccup: try again later
                    pause = IDLE_POLL_S
                    log.warning("embedding souvenirs failed: %s", exc)
            if pause:
                self.wake.clear()
                await wait_for_event_or_stop(self.wake, stop, pause)


class QueryVectors:
    """The vector of a message for hybrid recall, or None when recall should stay full
    text (no vectors stored yet, too many for an exact scan, embedder failing)."""

    def __init__(self, store: MemoryStore, embedder: Embedder, *, min_similarity: float = 0.5,
                 timeout_s: float = QUERY_TIMEOUT_S, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.embedder = embedder
        self.model = embedder.model
        self.min_similarity = min_similarity
        self.timeout_s = timeout_s
        self.clock = clock
        self._ready_until = 0.0
        self._ready = False
        self._paused_until = 0.0

    async def ready(self) -> bool:
        """Vectors of the model exist and can be searched fast enough (cached)."""
        now = self.clock()
        if now < self._ready_until:
            return self._ready
        count = await self.store.count_embeddings(self.model)
        self._ready = count > 0 and (count <= EXACT_SEARCH_MAX or await self.store.has_hnsw())
        self._ready_until = now + READY_TTL_S
        return self._ready

    async def vector(self, text_: str) -> list[float] | None:
        if self.clock() < self._paused_until or not await self.ready():
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                (vec,) = await self.embedder.embed([text_[:EMBED_CHARS]])
            return vec
        except (LLMError, TimeoutError, ValueError) as exc:
            self._paused_until = self.clock() + QUERY_PAUSE_AFTER_FAILURE_S
            log.warning("embedding a message failed (%s): full-text recall for %.0f s",
                        exc, QUERY_PAUSE_AFTER_FAILURE_S)
            return None
