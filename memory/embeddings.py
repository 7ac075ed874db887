"""Embeddings of souvenirs and hybrid recall (full text + vectors, fused by rank).

Vectors live in `souvenirs_vecteurs` (one per souvenir, with the model that made it), stored
unit-length as `real[]`. Similarity is cosine: pgvector's `<=>` on a `real[]::vector` cast
when the extension is installed, else the dot product of the unit vectors in plain SQL
(exact either way; fine for the tens of thousands of souvenirs of one assistant).

Hybrid recall fuses two rankings with Reciprocal Rank Fusion (Cormack et al., 2009):
    score(d) = Σ_rankings weight / (rrf_k + rank(d))        (rank from 1)
- the full-text ranking of `recall()` (AND first, then OR; recency and importance
  included), over `candidates` souvenirs, weight 1;
- the vector ranking: the `candidates` souvenirs nearest to the query vector, with the same
  filters (person, types, sources, dates, privacy), weight VECTOR_WEIGHT.
RRF needs no score calibration between the two (ts_rank_cd and cosine live on unrelated
scales); rrf_k = 60 is the usual constant: larger flattens the head of each ranking.
Then conversation turns share their scores with the turns around them
(memory/neighbours.py), so an answer is found through the question it answers.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from memory.database import ANN_EF_SEARCH
from memory.errors import InvalidInput, NotFound
from memory.recall_query import RecallFilter, filter_sql
from memory.records import Recalled, SouvenirRecord, souvenir_from_row

log = logging.getLogger(__name__)

_S_COLUMNS = (
    "s.id, s.timestamp, s.type, s.source, s.contenu, s.resume, s.importance, s.metadata, "
    "s.relation_id, s.public"
)


def unit(vector: Sequence[float]) -> list[float]:
    """The vector scaled to length 1; InvalidInput if empty, not finite or zero."""
    values = [float(x) for x in vector]
    if not values:
        raise InvalidInput("empty embedding vector")
    if not all(math.isfinite(x) for x in values):
        raise InvalidInput("embedding vector has a NaN or infinite value")
    norm = math.sqrt(sum(x * x for x in values))
    if norm == 0.0:
        raise InvalidInput("embedding vector is all zeros")
    return [x / norm for x in values]


SAFE_MODEL_NAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9._/@+-]{0,78}[A-Za-z0-9])?(?::[A-Za-z0-9][A-Za-z0-9._-]{0,18})?")
"""Model names that may go into SQL as a literal: no quote, no backslash, and a ':' only
after a letter or digit (SQLAlchemy would take ':word' for a parameter)."""
MAX_INDEXED_DIM = 2000
"""pgvector's HNSW indexes vectors of at most 2,000 dimensions."""
ANN_FETCH_PER_RESULT = 2
ANN_FILTERED_FETCH_PER_RESULT = 4
"""The HNSW scan fetches this many times the wanted neighbours (more when filters apply
after it: person, privacy, type…), being approximate."""


def indexable(model: str, dim: int) -> bool:
    """Whether (model, dim) can have its own HNSW index (the model name goes into SQL
    as a literal, so it must be plain)."""
    return bool(SAFE_MODEL_NAME.fullmatch(model)) and 0 < dim <= MAX_INDEXED_DIM


def vector_index_name(model: str, dim: int) -> str:
    return "idx_vecteurs_hnsw_" + hashlib.sha1(f"{model}:{dim}".encode()).hexdigest()[:12]


def vector_index_sql(model: str, dim: int) -> str:
    """An HNSW index (pgvector, cosine) of one model's vectors of one dimension: partial,
    on the cast the ANN query orders by (see ann_sql). The model and dimension are
    literals: a partial index is used only when the query names the same constants."""
    if not indexable(model, dim):
        raise InvalidInput(f"cannot index vectors of model {model!r} with {dim} dimensions")
    return (f"CREATE INDEX IF NOT EXISTS {vector_index_name(model, dim)} ON souvenirs_vecteurs "
            f"USING hnsw ((vecteur::vector({dim})) vector_cosine_ops) "
            f"WHERE modele = '{model}' AND cardinality(vecteur) = {dim}")


def ann_sql(flt: RecallFilter, model: str, dim: int) -> tuple[str, dict[str, Any]]:
    """SQL of the souvenirs nearest to :q through the HNSW index of (model, dim): the
    index gives the :fetch nearest vectors, the filters apply to those, :k are kept."""
    if not indexable(model, dim):
        raise InvalidInput(f"no vector index for model {model!r} with {dim} dimensions")
    where, params = filter_sql(flt)
    distance = f"v.vecteur::vector({dim}) <=> CAST(CAST(:q AS real[]) AS vector({dim}))"
    near = (f"SELECT v.souvenir_id, {distance} AS distance FROM souvenirs_vecteurs v "
            f"WHERE v.modele = '{model}' AND cardinality(v.vecteur) = {dim} "
            f"ORDER BY {distance} LIMIT :fetch")
    sql = (f"SELECT {_S_COLUMNS}, 1 - n.distance AS similarity FROM ({near}) AS n "
           "JOIN souvenirs s ON s.id = n.souvenir_id"
           + (f" WHERE {' AND '.join(where)}" if where else "")
           + " ORDER BY n.distance, s.id DESC LIMIT :k")
    return sql, params


def nearest_sql(flt: RecallFilter, *, pgvector: bool) -> tuple[str, dict[str, Any]]:
    """SQL of the souvenirs nearest to :q (a unit real[]), with :model, :dim and :k bound:
    an exact scan (the fallback when no HNSW index can serve; see ann_sql)."""
    where, params = filter_sql(flt)
    where = ["v.modele = :model", "cardinality(v.vecteur) = :dim", *where]
    if pgvector:
        similarity = "1 - (v.vecteur::vector <=> CAST(:q AS real[])::vector)"
        order = "v.vecteur::vector <=> CAST(:q AS real[])::vector"
    else:
        similarity = "(SELECT sum(a * b) FROM unnest(v.vecteur, CAST(:q AS real[])) AS t(a, b))"
        order = "similarity DESC"
    sql = (
        f"SELECT {_S_COLUMNS}, {similarity} AS similarity "
        "FROM souvenirs_vecteurs v JOIN souvenirs s ON s.id = v.souvenir_id "
        f"WHERE {' AND '.join(where)} ORDER BY {order}, s.id DESC LIMIT :k"
    )
    return sql, params


class EmbeddingsMixin:
    db: Any
    recall: Callable[..., Awaitable[list[Recalled]]]  # MemoryStore.recall
    query_informative: Callable[..., Awaitable[bool]]  # MemoryStore.query_informative

    async def has_pgvector(self) -> bool:
        """Is the pgvector extension installed in this database? (cached)"""
        cached = getattr(self, "_pgvector", None)
        if cached is None:
            async with self.db.sessions() as session:
                found = await session.scalar(
                    text("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
                )
            cached = bool(found)
            self._pgvector = cached
        return cached

    async def has_hnsw(self) -> bool:
        """pgvector with its HNSW access method (0.5 and later) in this database? (cached)"""
        cached = getattr(self, "_hnsw", None)
        if cached is None:
            cached = False
            if await self.has_pgvector():
                async with self.db.sessions() as session:
                    cached = bool(await session.scalar(
                        text("SELECT 1 FROM pg_am WHERE amname = 'hnsw'")))
            self._hnsw = cached
        return cached

    async def store_embeddings(
        self, pairs: Sequence[tuple[int, Sequence[float]]], model: str
    ) -> int:
        """Store (or replace) the vector of each souvenir, made by `model`; return the count."""
        model = (model or "").strip()
        if not model or len(model) > 100:
            raise InvalidInput("embedding model name must be 1 to 100 characters")
        vectors = [(int(sid), unit(vec)) for sid, vec in pairs]
        if not vectors:
            return 0
        rows = [{"id": sid, "m": model, "v": vec} for sid, vec in vectors]
        dims = {len(vec) for _, vec in vectors}
        if len(dims) != 1:
            raise InvalidInput(f"vectors of one model must share one dimension, got {sorted(dims)}")
        sql = text(
            "INSERT INTO souvenirs_vecteurs (souvenir_id, modele, vecteur) "
            "VALUES (:id, :m, CAST(:v AS real[])) ON CONFLICT (souvenir_id) DO UPDATE "
            "SET modele = excluded.modele, vecteur = excluded.vecteur, cree_le = now()"
        )
        try:
            async with self.db.sessions.begin() as session:
                await session.execute(sql, rows)
        except DBAPIError as exc:
            if "foreign key" in str(exc.orig or exc):
                raise NotFound("a souvenir to embed does not exist (deleted?)") from None
            raise
        return len(rows)

    async def missing_embeddings(
        self, limit: int = 100, *, model: str | None = None
    ) -> list[SouvenirRecord]:
        """Souvenirs without a vector (or, with `model`, without one made by that model),
        newest first: what the background embedder should embed next (recent souvenirs
        matter most to recall while an old memory is being caught up)."""
        if limit <= 0:
            return []
        cond = "v.souvenir_id = s.id" + (" AND v.modele = :model" if model else "")
        sql = (
            f"SELECT {_S_COLUMNS} FROM souvenirs s WHERE NOT EXISTS "
            f"(SELECT 1 FROM souvenirs_vecteurs v WHERE {cond}) ORDER BY s.id DESC LIMIT :k"
        )
        params: dict[str, Any] = {"k": limit}
        if model:
            params["model"] = model
        async with self.db.sessions() as session:
            rows = (await session.execute(text(sql), params)).all()
        return [souvenir_from_row(r) for r in rows]

    async def nearest_souvenirs(
        self,
        query_vector: Sequence[float],
        *,
        model: str,
        limit: int = 10,
        flt: RecallFilter | None = None,
        min_similarity: float | None = None,
    ) -> list[tuple[SouvenirRecord, float]]:
        """The souvenirs whose `model` vectors are nearest to query_vector (cosine), best
        first; with `min_similarity`, none less similar than that."""
        if limit <= 0:
            return []
        q = unit(query_vector)
        flt = flt or RecallFilter()
        if await self.has_hnsw() and indexable(model, len(q)):
            filtered = bool(filter_sql(flt)[0])
            fetch = limit * (ANN_FILTERED_FETCH_PER_RESULT if filtered else ANN_FETCH_PER_RESULT)
            sql, params = ann_sql(flt, model, len(q))
            params.update({"q": q, "k": limit, "fetch": fetch})
            if fetch <= ANN_EF_SEARCH:  # the pool is set for that: one statement
                async with self.db.reads() as session:
                    rows = (await session.execute(text(sql), params)).all()
            else:
                async with self.db.sessions() as session, session.begin():
                    # the HNSW scan's candidate list must hold every vector fetched
                    await session.execute(
                        text("SELECT set_config('hnsw.ef_search', :ef, true)"),
                        {"ef": str(fetch)})
                    rows = (await session.execute(text(sql), params)).all()
        else:
            sql, params = nearest_sql(flt, pgvector=await self.has_pgvector())
            params.update({"q": q, "model": model, "dim": len(q), "k": limit})
            async with self.db.sessions() as session:
                rows = (await session.execute(text(sql), params)).all()
        return [(souvenir_from_row(r), float(r.similarity)) for r in rows
                if min_similarity is None or float(r.similarity) >= min_similarity]

    async def ensure_vector_index(self, model: str, dim: int) -> bool:
        """Create the HNSW index of (model, dim) if pgvector is there and it is missing
        (once per process). False when it cannot exist (no pgvector, unusual name)."""
        done: set[tuple[str, int]] = self.__dict__.setdefault("_vector_indexes", set())
        if (model, dim) in done:
            return True
        if not (await self.has_hnsw() and indexable(model, dim)):
            return False
        async with self.db.engine.begin() as conn:
            await conn.execute(text(vector_index_sql(model, dim)))
        done.add((model, dim))
        return True

    async def count_embeddings(self, model: str) -> int:
        """How many souvenirs have a vector made by `model`."""
        async with self.db.reads() as session:
            return int(await session.scalar(text(
                "SELECT count(*) FROM souvenirs_vecteurs WHERE modele = :m"), {"m": model}) or 0)
