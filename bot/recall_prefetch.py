"""Recall for the reply path, started early: when a message is accepted, its recall
begins while a worker wakes up, claims it and identifies the sender (recall is the
longest read of a reply's context).

The speculation starts with the sender's privacy filter as last identified; the worker
uses its result only if the filter it computes is the same (else it recalls again), so a
stale guess costs time, never privacy. At most MAX_SPECULATING run at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.embedder import QueryVectors
from bot.policy import Interlocutor, recall_privacy
from memory.messages import StoredMessage
from memory.records import Recalled
from memory.store import MemoryStore
from memory.text import query_terms

log = logging.getLogger(__name__)

MAX_PREFETCHED = 256
MAX_SPECULATING = 2
MAX_KNOWN_SENDERS = 10_000

Privacy = tuple[bool, int | None]
Identify = Callable[[StoredMessage], Awaitable[Interlocutor]]


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # consumed here; the worker recalls again if it failed


class Recaller:
    def __init__(self, store: MemoryStore, *, limit: int, vectors: QueryVectors | None = None,
                 check_prefetch: bool = True):
        self.store = store
        self.limit = limit
        self.vectors = vectors
        """Hybrid recall (full text + embeddings) once the memory holds vectors; None:
        full text only (AXI_EMBED_MODEL off)."""
        self.check_prefetch = check_prefetch
        """The worker's re-check of a speculative recall's privacy filter (always on;
        a switch only so a test can prove this layer matters)."""
        self._prefetched: dict[int, asyncio.Task[tuple[Privacy, list[Recalled]]]] = {}
        self._known_privacy: dict[tuple[str, str, bool, str | None], Privacy] = {}
        """Each sender's privacy filter as last identified: a speculative recall starts
        with it instead of identifying first."""

    def identified(self, msg: StoredMessage, who: Interlocutor) -> None:
        if len(self._known_privacy) >= MAX_KNOWN_SENDERS:
            self._known_privacy.clear()
        self._known_privacy[(msg.canal, msg.adresse, msg.verifie, msg.room)] = recall_privacy(who)

    async def recall_with(self, msg: StoredMessage, privacy: Privacy) -> list[Recalled]:
        private_ok, _ = privacy  # who asks widens nothing: only public souvenirs reach non-inner
        if (self.vectors is None or not query_terms(msg.texte)
                or not await self.vectors.ready()):
            return await self.store.recall(msg.texte, limit=self.limit, private_ok=private_ok,
                                           informative_only=True)
        # as many full-text candidates as without vectors (searched while the message is
        # embedded), fused (RRF) with as many nearest souvenirs; no neighbour spreading:
        # it seldom changes the few data items a prompt holds, and costs one more query
        return await self.store.recall_hybrid(
            msg.texte, self.vectors.vector(msg.texte), model=self.vectors.model,
            limit=self.limit, candidates=self.limit,
            private_ok=private_ok, informative_only=True,
            neighbours=0.0, min_similarity=self.vectors.min_similarity)

    def prefetch(self, msg: StoredMessage, identify: Identify) -> None:
        """Start recall for a just-accepted message (see the module docstring)."""
        async def speculate() -> tuple[Privacy, list[Recalled]]:
            privacy = self._known_privacy.get((msg.canal, msg.adresse, msg.verifie, msg.room))
            if privacy is None:  # a sender not seen yet: identify first
                privacy = recall_privacy(await identify(msg))
            return privacy, await self.recall_with(msg, privacy)

        if sum(not t.done() for t in self._prefetched.values()) >= MAX_SPECULATING:
            return  # a burst: the workers are busy anyway, and accepting must stay fast
        while len(self._prefetched) >= MAX_PREFETCHED:  # claimed elsewhere: forget the oldest
            self._prefetched.pop(next(iter(self._prefetched))).cancel()
        task = asyncio.get_running_loop().create_task(speculate(), name=f"recall-{msg.id}")
        task.add_done_callback(_retrieve_exception)
        self._prefetched[msg.id] = task

    async def recall_for(self, msg: StoredMessage, who: Interlocutor) -> list[Recalled]:
        """The souvenirs for this message and sender: the speculative result when its
        privacy filter is the sender's, else a fresh recall."""
        wanted = recall_privacy(who)
        task = self._prefetched.pop(msg.id, None)
        if task is not None:
            try:
                privacy, recalled = await task
                if privacy == wanted or not self.check_prefetch:
                    return recalled
            except Exception as exc:  # the speculation failed: recall now
                log.debug("prefetched recall of #%s failed: %s", msg.id, exc)
        return await self.recall_with(msg, wanted)

    async def close(self) -> None:
        """Cancel the recalls started for messages no worker here claimed."""
        tasks = list(self._prefetched.values())
        self._prefetched.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
