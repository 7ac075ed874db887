"""Hybrid recall: full text and nearest vectors at once, fused by reciprocal rank (RRF),
with conversation turns sharing their scores with their neighbours.

It lives apart from memory/embeddings.py (which stores vectors and finds the nearest
ones) and memory/recall_query.py (full text) because it is a third way to recall that uses
both; the reply path asks for it only when the memory holds vectors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from memory.errors import InvalidInput
from memory.neighbours import (
    NEIGHBOUR_REACH,
    NEIGHBOUR_SHARE,
    SPREAD_PER_RESULT,
    conversation_neighbours,
    spread,
)
from memory.recall_query import RecallFilter
from memory.records import Recalled, SouvenirRecord

log = logging.getLogger(__name__)

RRF_K = 10
"""Smaller than the usual 60: on LoCoMo the top ranks should count more (R@10 of plain
RRF: k=60 0.613, k=20 0.643, k=10 0.653, k=5 0.653; full text 0.605, BM25 0.566)."""
VECTOR_WEIGHT = 0.7
"""MiniLM's ranking counts a little less than full text's (LoCoMo R@10 with neighbours,
k=10: vector weight 1.0 → 0.716, 0.7 → 0.718, 0.5 → 0.710; vectors alone: 0.454)."""
MIN_CANDIDATES = 50
CANDIDATES_PER_RESULT = 5

def rrf(rankings: Sequence[Sequence[int]], *, k: int = RRF_K,
        weights: Sequence[float] | None = None) -> dict[int, float]:
    """Reciprocal Rank Fusion of ranked id lists: {id: Σ weight / (k + rank)}."""
    scores: dict[int, float] = {}
    for i, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else weights[i]
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return scores


def _discard(vector: object) -> None:
    """Close an awaitable query vector that will not be awaited (no 'never awaited')."""
    close = getattr(vector, "close", None)
    if close is not None and not isinstance(vector, Sequence):
        close()


class HybridRecallMixin:
    db: Any
    # from the sibling mixins of MemoryStore (full-text recall, vectors)
    nearest_souvenirs: Any
    recall: Any
    query_informative: Any

    async def recall_hybrid(
        self,
        query: str,
        query_vector: Sequence[float] | Awaitable[Sequence[float] | None] | None,
        *,
        model: str,
        limit: int = 10,
        relation_id: int | None = None,
        types: Sequence[str] = (),
        sources: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        private_ok: bool = True,
        language: str = "french",
        candidates: int | None = None,
        rrf_k: int = RRF_K,
        weights: tuple[float, float] = (1.0, VECTOR_WEIGHT),
        neighbours: float = NEIGHBOUR_SHARE,
        reach: int = NEIGHBOUR_REACH,
        informative_only: bool = False,
        min_similarity: float | None = None,
    ) -> list[Recalled]:
        """Full-text recall fused with vector similarity (RRF), spread to conversation
        neighbours, best first.

        `query_vector` is the embedding of `query` by `model` (None: full text only), or an
        awaitable of it: the full-text search then runs while the query is embedded.
        `neighbours` is the share of its score a conversation turn gives the turns at most
        `reach` steps around it (0: none; see memory/neighbours.py); a neighbour may so
        be recalled though neither ranking found it. `relevance` of each result is its
        full-text relevance (0 when the full text did not find it); `score` is its fused
        score. Filters and `informative_only` mean what they mean in recall(): small talk
        recalls nothing, by vectors either. `min_similarity` keeps the nearest souvenirs
        that are not at least that similar out of the vector ranking (nearest neighbours
        always exist, related or not). The vector side never fails the recall: if the
        embedding or the vector search fails, the full text answers alone.
        """
        if limit <= 0:
            _discard(query_vector)
            return []
        n = candidates or max(MIN_CANDIDATES, CANDIDATES_PER_RESULT * limit)
        filters: dict[str, Any] = dict(
            relation_id=relation_id, types=tuple(types), sources=tuple(sources),
            since=since, until=until, private_ok=private_ok,
        )
        async def nearest() -> list[tuple[SouvenirRecord, float]]:
            try:
                vector = query_vector
                if vector is not None and not isinstance(vector, Sequence):
                    vector = await vector  # the message is still being embedded
                if vector is None:
                    return []
                return await self.nearest_souvenirs(
                    vector, model=model, limit=n, flt=RecallFilter(**filters),
                    min_similarity=min_similarity)
            except (InvalidInput, DBAPIError) as exc:
                log.warning("vector search failed, full text only: %s", exc)
                return []

        # full text and (embedding →) nearest vectors at once, on their own connections
        vectors = asyncio.ensure_future(nearest())
        try:
            lexical = await self.recall(query, limit=n, language=language,
                                        informative_only=informative_only, **filters)
            semantic = await vectors
        finally:
            if not vectors.done():  # the full text failed or we were cancelled
                vectors.cancel()
                await asyncio.gather(vectors, return_exceptions=True)
                _discard(query_vector)  # if it was cancelled before it started
        if (informative_only and not lexical and semantic
                and not await self.query_informative(query, language=language)):
            return []
        records: dict[int, SouvenirRecord] = {}
        relevance: dict[int, float] = {}
        for hit in lexical:
            records[hit.souvenir.id] = hit.souvenir
            relevance[hit.souvenir.id] = hit.relevance
        for souvenir, _ in semantic:
            records.setdefault(souvenir.id, souvenir)
        fused = rrf(
            [[h.souvenir.id for h in lexical], [s.id for s, _ in semantic]],
            k=rrf_k, weights=weights,
        )
        if neighbours > 0 and reach > 0 and fused:
            ranked = sorted(fused, key=lambda sid: (-fused[sid], -sid))
            near = await conversation_neighbours(
                self.db, ranked[:SPREAD_PER_RESULT * limit], reach=reach,
                flt=RecallFilter(**filters))
            for neighbour in near:
                records.setdefault(neighbour.souvenir.id, neighbour.souvenir)
            fused = spread(fused, near, share=neighbours)
        best = sorted(fused.items(), key=lambda item: (-item[1], -item[0]))[:limit]
        return [
            Recalled(souvenir=records[sid], relevance=relevance.get(sid, 0.0), score=score)
            for sid, score in best
        ]
