"""Pure parts of recall: the ranking formula and the SQL it runs. No I/O here.

Score = full-text relevance (ts_rank_cd, length-normalised) × a recency factor
(0.5 → 1.0, half-life RECENCY_HALF_LIFE_DAYS) × an importance factor (0.75 → 1.25
for importance 0 → 10). Relevance dominates; recency and importance break ties and
lift what matters.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

RECENCY_HALF_LIFE_DAYS = 180.0
LANGUAGES = {"french", "english", "simple"}


@dataclass(frozen=True)
class RecallFilter:
    relation_id: int | None = None
    types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    visible_to: int | None = None  # a person who may only see public + their own souvenirs
    private_ok: bool = True


def score_sql(relevance: str) -> str:
    return (
        f"{relevance}"
        " * (0.5 + 0.5 * power(0.5, greatest(extract(epoch FROM (now() - s.timestamp)), 0)"
        f" / {RECENCY_HALF_LIFE_DAYS * 86400.0}))"
        " * (0.75 + 0.05 * least(greatest(coalesce(s.importance, 5), 0), 10))"
    )


def vector_sql(language: str) -> str:
    """The tsvector expression: the stored (indexed) column for French."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown text-search language {language!r}")
    if language == "french":
        return "s.recherche"
    return f"to_tsvector('{language}'::regconfig, axi_pli(s.contenu))"


def recall_sql(language: str, flt: RecallFilter) -> tuple[str, dict[str, object]]:
    """SQL of a recall with :tsq (a to_tsquery input) and :k bound by the caller."""
    vec = vector_sql(language)
    where = [f"{vec} @@ q.query"]
    params: dict[str, object] = {}
    if flt.relation_id is not None:
        where.append("s.relation_id = :relation_id")
        params["relation_id"] = flt.relation_id
    if flt.types:
        where.append("s.type = ANY(:types)")
        params["types"] = list(flt.types)
    if flt.sources:
        where.append("s.source = ANY(:sources)")
        params["sources"] = list(flt.sources)
    if flt.since is not None:
        where.append("s.timestamp >= :since")
        params["since"] = flt.since
    if flt.until is not None:
        where.append("s.timestamp < :until")
        params["until"] = flt.until
    if not flt.private_ok:
        if flt.visible_to is not None:
            where.append("(s.public OR s.relation_id = :visible_to)")
            params["visible_to"] = flt.visible_to
        else:
            where.append("s.public")
    relevance = f"ts_rank_cd({vec}, q.query, 1)"
    sql = (
        f"SELECT s.id, s.timestamp, s.type, s.source, s.contenu, s.resume, s.importance, "
        f"s.metadata, s.relation_id, s.public, {relevance} AS relevance, "
        f"{score_sql(relevance)} AS score "
        f"FROM souvenirs s, to_tsquery('{language}'::regconfig, :tsq) AS q(query) "
        f"WHERE {' AND '.join(where)} "
        "ORDER BY score DESC, s.id DESC LIMIT :k"
    )
    return sql, params


def bare_fts_sql(language: str = "french") -> str:
    """The floor: the same full-text query as bare SQL (match + ts_rank, no extras)."""
    vec = vector_sql(language)
    return (
        f"SELECT s.id, ts_rank_cd({vec}, q.query, 1) AS r "
        f"FROM souvenirs s, to_tsquery('{language}'::regconfig, :tsq) AS q(query) "
        f"WHERE {vec} @@ q.query ORDER BY r DESC LIMIT :k"
    )
