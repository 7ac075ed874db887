"""MemoryStore: the only way Axi's code touches memory. Souvenirs and recall live here;
facts, people and consignes come from the mixins beside it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from memory.consignes import ConsignesMixin
from memory.database import Database
from memory.embeddings import EmbeddingsMixin
from memory.errors import InvalidInput, NotFound
from memory.extraction_queue import ExtractionQueueMixin
from memory.facts import FactsMixin
from memory.llm_calls import LLMCallsMixin
from memory.messages import MessagesMixin
from memory.people import PeopleMixin
from memory.recall import (
    BITMAP_ONLY_SQL,
    CANDIDATE_CAP,
    DF_CAP,
    MCE_SQL,
    SPAN_SQL,
    STATS_TTL_S,
    TOTAL_SQL,
    WALK_SHARE,
    QueryPlan,
    RecallFilter,
    compound_form,
    df_sql,
    keep_words,
    lexemes_of,
    normalize_sql,
    plan_query,
    recall_sql,
    windows_for,
)
from memory.records import Recalled, SouvenirRecord, souvenir_from_row
from memory.text import InvalidText, clean, clean_content, query_terms

_SOUVENIR_COLUMNS = (
    "id, timestamp, type, source, contenu, resume, importance, metadata, relation_id, public"
)


@dataclass(frozen=True)
class NewSouvenir:
    """One souvenir to store (for bulk loads)."""

    contenu: str
    type: str = "note"
    source: str | None = None
    importance: int = 5
    timestamp: datetime | None = None
    relation_id: int | None = None
    public: bool = False
    resume: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_json(v) for v in value]
    return value


def _prepare(item: NewSouvenir) -> dict[str, Any]:
    try:
        contenu = clean_content(item.contenu, what="souvenir text")
        kind = clean_content(item.type, what="souvenir type", limit=50)
        source = clean_content(item.source, what="source", limit=100) if item.source else None
    except InvalidText as exc:
        raise InvalidInput(str(exc)) from None
    if not 0 <= int(item.importance) <= 10:
        raise InvalidInput(f"importance must be between 0 and 10, not {item.importance}")
    return {
        "contenu": contenu,
        "type": kind,
        "source": source,
        "importance": int(item.importance),
        "timestamp": item.timestamp,
        "relation_id": item.relation_id,
        "public": item.public,
        "resume": clean(item.resume) if item.resume else None,
        "metadata": json.dumps(_clean_json(item.metadata or {})),
    }


def translate_db_error(exc: DBAPIError) -> Exception:
    message = str(exc.orig) if exc.orig is not None else str(exc)
    if "too long for tsvector" in message or "exceeds the maximum" in message:
        return InvalidInput("text too long to index; split it into smaller souvenirs")
    if "foreign key" in message and "relation_id" in message:
        return NotFound("unknown person (relation_id)")
    if "foreign key" in message:
        return NotFound(f"a referenced row does not exist ({message.splitlines()[0]})")
    return exc


class MemoryStore(FactsMixin, PeopleMixin, ConsignesMixin, MessagesMixin, LLMCallsMixin,
                  ExtractionQueueMixin, EmbeddingsMixin):
    def __init__(self, db: Database):
        self.db = db

    # ------------------------------------------------------------------ souvenirs
    async def remember(
        self,
        contenu: str,
        *,
        type: str = "note",
        source: str | None = None,
        importance: int = 5,
        timestamp: datetime | None = None,
        relation_id: int | None = None,
        public: bool = False,
        resume: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> SouvenirRecord:
        """Store one souvenir and return it."""
        item = NewSouvenir(
            contenu=contenu, type=type, source=source, importance=importance,
            timestamp=timestamp, relation_id=relation_id, public=public, resume=resume,
            metadata=metadata or {},
        )
        values = _prepare(item)
        sql = text(
            "INSERT INTO souvenirs (timestamp, type, source, contenu, resume, importance, "
            "metadata, relation_id, public) VALUES (coalesce(:timestamp, now()), :type, "
            ":source, :contenu, :resume, :importance, CAST(:metadata AS jsonb), :relation_id, "
            f":public) RETURNING {_SOUVENIR_COLUMNS}"
        )
        try:
            async with self.db.sessions.begin() as session:
                row = (await session.execute(sql, values)).one()
        except DBAPIError as exc:
            raise translate_db_error(exc) from None
        return souvenir_from_row(row)

    async def remember_many(self, items: Iterable[NewSouvenir]) -> list[int]:
        """Store many souvenirs in one transaction (all or nothing); return their ids."""
        rows = [_prepare(item) for item in items]
        if not rows:
            return []
        columns = ["timestamp", "type", "source", "contenu", "resume", "importance",
                   "metadata", "relation_id", "public"]
        sql = (
            "INSERT INTO souvenirs (timestamp, type, source, contenu, resume, importance, "
            "metadata, relation_id, public) SELECT coalesce(t, now()), ty, so, co, re, im, "
            "me::jsonb, ri, pu FROM unnest($1::timestamptz[], $2::text[], $3::text[], "
            "$4::text[], $5::text[], $6::int[], $7::text[], $8::int[], $9::bool[]) "
            "AS x(t, ty, so, co, re, im, me, ri, pu) RETURNING id"
        )
        args = [[r[c] for r in rows] for c in columns]
        try:
            async with self.db.engine.begin() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                records = await driver.fetch(sql, *args)
        except DBAPIError as exc:
            raise translate_db_error(exc) from None
        except Exception as exc:  # asyncpg errors arrive unwrapped on the raw connection
            if "foreign key" in str(exc):
                raise NotFound("unknown person (relation_id)") from None
            raise
        return [r["id"] for r in records]

    async def get_souvenir(self, souvenir_id: int) -> SouvenirRecord:
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    text(f"SELECT {_SOUVENIR_COLUMNS} FROM souvenirs WHERE id = :id"),
                    {"id": souvenir_id},
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"no souvenir #{souvenir_id}")
        return souvenir_from_row(row)

    async def forget_souvenir(self, souvenir_id: int) -> SouvenirRecord:
        """Delete a souvenir for good; facts learnt from it stay, without their source."""
        async with self.db.sessions.begin() as session:
            row = (
                await session.execute(
                    text(f"SELECT {_SOUVENIR_COLUMNS} FROM souvenirs WHERE id = :id FOR UPDATE"),
                    {"id": souvenir_id},
                )
            ).one_or_none()
            if row is None:
                raise NotFound(f"no souvenir #{souvenir_id}")
            await session.execute(
                text("UPDATE faits SET source_souvenir_id = NULL WHERE source_souvenir_id = :id"),
                {"id": souvenir_id},
            )
            await session.execute(text("DELETE FROM souvenirs WHERE id = :id"), {"id": souvenir_id})
        return souvenir_from_row(row)

    async def count_souvenirs(self) -> int:
        async with self.db.sessions() as session:
            return int(await session.scalar(text("SELECT count(*) FROM souvenirs")) or 0)

    # --------------------------------------------------------------------- recall
    async def _normalize(self, session: Any, terms: list[str], language: str) -> list[str]:
        """Each query word as stemmed tsquery text ('' for a stop word); a hyphenated
        compound becomes its own lexeme when memory holds it (see compound_form)."""
        row = (await session.execute(text(normalize_sql(language, len(terms))),
                                     {f"t{i}": t for i, t in enumerate(terms)})).one()
        normalized = [str(n or "") for n in row]
        compounds = {i: c for i, n in enumerate(normalized) if (c := compound_form(n))}
        if compounds:
            keys = list(compounds)
            found = (await session.execute(
                text(df_sql(language, len(keys))),
                {**{f"t{j}": compounds[i] for j, i in enumerate(keys)}, "dfcap": 1})).one()
            for j, i in enumerate(keys):
                if int(found[j]):
                    normalized[i] = compounds[i]
        # parenthesised, so that joining words with & and | keeps each word's own | and <->
        return [f"( {n} )" if n else "" for n in normalized]

    async def _document_frequencies(
        self, session: Any, terms: list[str], language: str
    ) -> tuple[int, list[int]]:
        """How many souvenirs hold each (normalized) query word: from the column
        statistics for the common lexemes (free), by a bounded probe (DF_CAP) for the
        others."""
        total = int(await session.scalar(text(TOTAL_SQL)) or 0)
        dfs: list[int | None] = [None] * len(terms)
        common = (await self._common_lexemes(session)
                  if language == "french" and total >= 50_000 else {})
        for i, term in enumerate(terms):
            lexemes = lexemes_of(term)
            if not lexemes:
                dfs[i] = 0
            elif not common:
                continue
            elif "<" in term or "&" in term:  # a phrase: as rare as its rarest part
                if all(lex in common for lex in lexemes):
                    dfs[i] = int(min(common[lex] for lex in lexemes) * total)
            elif any(lex in common for lex in lexemes):  # alternatives (accents)
                dfs[i] = int(max(common.get(lex, 0.0) for lex in lexemes) * total)
        todo = [i for i, df in enumerate(dfs) if df is None]
        if todo:
            counts = (await session.execute(
                text(df_sql(language, len(todo))),
                {**{f"t{j}": terms[i] for j, i in enumerate(todo)}, "dfcap": DF_CAP})).one()
            for j, i in enumerate(todo):
                dfs[i] = int(counts[j])
        return total, [int(df or 0) for df in dfs]

    async def _span_days(self, session: Any) -> float:
        """How far back memory goes (cached like the statistics)."""
        now = time.monotonic()
        cached = getattr(self, "_span", None)
        if cached is not None and cached[0] > now:
            return float(cached[1])
        span = float(await session.scalar(text(SPAN_SQL)) or 0.0)
        self._span = (now + STATS_TTL_S, span)
        return span

    async def _common_lexemes(self, session: Any) -> dict[str, float]:
        now = time.monotonic()
        cached = getattr(self, "_mce", None)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = (await session.execute(text(MCE_SQL))).one_or_none()
        common: dict[str, float] = {}
        if row is not None and row.elems and row.freqs:
            common = dict(zip(row.elems, row.freqs, strict=False))
        self._mce = (now + STATS_TTL_S, common)
        return common

    @staticmethod
    async def _ranked(session: Any, tsq: str | None, plan: QueryPlan, language: str,
                      flt: RecallFilter, limit: int, since: datetime | None,
                      windows: tuple[float | None, ...]) -> list[Any]:
        """Rank the most recent CANDIDATE_CAP matches of growing time windows (recall.py)."""
        rows: list[Any] = []
        if tsq is None:
            return rows
        weights: dict[str, object] = {}
        for i, (fragment, weight) in enumerate(plan.weights):
            weights[f"f{i}"], weights[f"w{i}"] = fragment, weight
        now = datetime.now(UTC)
        for days in windows:
            start = None if days is None else now - timedelta(days=days)
            if start is not None and since is not None and since >= start:
                continue  # the caller's own date filter is already narrower
            sql, params = recall_sql(language, flt, windowed=start is not None,
                                     weighted=len(plan.weights))
            params.update({"tsq": tsq, "k": limit, "cap": CANDIDATE_CAP, **weights})
            if start is not None:
                params["window_start"] = start
            rows = list((await session.execute(text(sql), params)).all())
            if rows and rows[0].candidates >= CANDIDATE_CAP:
                break
        return rows

    async def recall(
        self,
        query: str,
        *,
        limit: int = 10,
        relation_id: int | None = None,
        types: Sequence[str] = (),
        sources: Sequence[str] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        visible_to: int | None = None,
        private_ok: bool = True,
        language: str = "french",
    ) -> list[Recalled]:
        """Souvenirs matching a free-text query, best first.

        All words must match first; if that finds fewer than `limit`, any word may match
        (ranked, so souvenirs with more of the words still come first).
        """
        if limit <= 0:
            return []
        flt = RecallFilter(
            relation_id=relation_id, types=tuple(types), sources=tuple(sources),
            since=since, until=until, visible_to=visible_to, private_ok=private_ok,
        )
        terms = keep_words(query_terms(query))
        if not terms:
            return []
        async with self.db.sessions() as session:
            span = await self._span_days(session)  # before the planner settings below
            await session.execute(text(BITMAP_ONLY_SQL), {"walk": "off"})
            terms = await self._normalize(session, terms, language)
            total, dfs = await self._document_frequencies(session, terms, language)
            plan = plan_query(terms, dfs, total)
            if plan is None:
                return []
            rows: list[Any] = []
            searches = [(plan.strict, plan.strict_estimate)]
            if plan.loose and plan.loose != plan.strict:
                searches.append((plan.loose, plan.loose_estimate))
            for tsq, estimate in searches:  # all words first, then any informative word
                walk = "on" if estimate >= WALK_SHARE * max(total, 1) else "off"
                await session.execute(text(BITMAP_ONLY_SQL), {"walk": walk})
                rows = await self._ranked(session, tsq, plan, language, flt, limit, since,
                                          windows_for(estimate, span))
                if len(rows) >= limit:
                    break
        return [
            Recalled(souvenir=souvenir_from_row(r), relevance=float(r.relevance),
                     score=float(r.score))
            for r in rows
        ]
