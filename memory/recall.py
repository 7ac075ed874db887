"""Recall's I/O: the few round trips that turn a free-text query into ranked souvenirs.

It lives apart from MemoryStore's writes because recall is on every reply's path and is
tuned for latency (the pure planning and SQL are in memory/recall_query.py):
1. one statement stems the query words not seen before (cached per process), sets the
   planner for the transaction and reads the memory's size and the words' frequencies
   from the lexicon (memory/lexicon.py); only words it lacks are probed, and such a
   probe is cheap because those words are rare or new;
2. the ranking itself (memory/recall_query.py's recall_sql): usually one statement, more when
   a time window must widen or the all-words search finds too little.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from memory.lexicon import lexicon_sql, scaled_counts
from memory.recall_query import (
    BITMAP_ONLY_SQL,
    DF_CAP,
    LARGE_MEMORY,
    MCE_SQL,
    SELECT_WORDS_LARGE,
    SPAN_SQL,
    STATS_TTL_S,
    WALK_SHARE,
    QueryPlan,
    RecallFilter,
    candidate_cap,
    collapse_alternatives,
    compound_form,
    df_sql,
    lexemes_of,
    longest_words,
    plan_query,
    recall_sql,
    searches,
    windows_for,
)
from memory.records import Recalled, souvenir_from_row
from memory.text import query_terms

NORMALIZED_CACHE = 50_000
"""Stemmed forms kept per process (word → tsquery text); cleared when full."""


def _fragment_df(term: str, counts: dict[str, int]) -> int | None:
    """A fragment's document frequency from per-lexeme counts, or None if unknown.
    A phrase is as rare as its rarest part; alternatives (accents) count their largest."""
    lexemes = lexemes_of(term)
    if not lexemes:
        return 0
    if "<" in term or "&" in term:
        if all(lex in counts for lex in lexemes):
            return min(counts[lex] for lex in lexemes)
        return None
    known = [counts[lex] for lex in lexemes if lex in counts]
    return max(known) if known else None


class RecallMixin:
    db: Any
    lexicon_min_souvenirs: int  # memory.lexicon.LexiconMixin

    @property
    def _local_settings(self) -> bool:
        """Planner settings last for the transaction, unless recall has its own pool of
        autocommit connections (then they are set on the connection: see
        memory.database.RECALL_SETTINGS)."""
        return self.db.recall_sessions is self.db.sessions

    async def _compounds(self, session: Any, normalized: list[str], counts: dict[str, int],
                         language: str) -> list[str]:
        """A hyphenated compound searches its own lexeme when memory holds it (see
        compound_form): known from the lexicon, or from a probe whose positive answers
        are remembered (a compound once stored stays)."""
        known: set[tuple[str, str]] = self.__dict__.setdefault("_compounds_seen", set())
        out = list(normalized)
        probes: dict[int, str] = {}
        for i, n in enumerate(normalized):
            c = compound_form(n)
            if c is None:
                continue
            if (language, c) in known or any(counts.get(lex) for lex in lexemes_of(c)):
                out[i] = c
            else:
                probes[i] = c
        if probes:
            keys = list(probes)
            found = (await session.execute(
                text(df_sql(language, len(keys))),
                {**{f"t{j}": probes[i] for j, i in enumerate(keys)}, "dfcap": 1})).one()
            for j, i in enumerate(keys):
                if int(found[j]):
                    out[i] = probes[i]
                    known.add((language, probes[i]))
        return out

    async def _document_frequencies(
        self, session: Any, words: list[str], language: str
    ) -> tuple[int, list[str], list[int]]:
        """In one round trip (plus a probe for words the lexicon lacks): stem the words
        not stemmed before (cached per process), set the planner for the transaction
        (walk off), read the memory's size and the words' frequencies from the lexicon
        (scaled to the memory's size). Without a usable lexicon, the column statistics
        give common lexemes and a bounded probe (DF_CAP) the others.
        Returns the size, the query's fragments (stop words dropped, duplicates merged,
        parenthesised, compounds resolved) and each fragment's document frequency."""
        cache: dict[tuple[str, str], str] = self.__dict__.setdefault("_normalized", {})
        todo = [w for w in words if (language, w) not in cache]
        plain = " ".join(lex.replace("''", "'") for w in words for lex in lexemes_of(w))
        row = (await session.execute(text(lexicon_sql(language, len(todo))), {
            "walk": "off", "local": self._local_settings, "words": plain,
            **{f"t{i}": w for i, w in enumerate(todo)}})).one()
        if len(cache) + len(todo) > NORMALIZED_CACHE:
            cache.clear()
        for i, w in enumerate(todo):
            cache[(language, w)] = collapse_alternatives(str(row._mapping[f"n{i}"] or ""))
        normalized = list(dict.fromkeys(n for w in words if (n := cache[(language, w)])))
        total = int(row.total or 0)
        raw = row.counts if isinstance(row.counts, dict) else json.loads(row.counts or "{}")
        counts = scaled_counts({k: int(v) for k, v in raw.items()}, row.base, total,
                               self.lexicon_min_souvenirs)
        resolved = await self._compounds(session, normalized, counts or {}, language)
        # parenthesised, so that joining words with & and | keeps each word's own | and <->
        terms = list(dict.fromkeys(f"( {n} )" for n in resolved))
        if counts is None and language == "french" and total >= LARGE_MEMORY:
            counts = {lex: int(f * total) for lex, f in (await self._common_lexemes(session)).items()}
        dfs: list[int | None] = [_fragment_df(t, counts) if counts else None for t in terms]
        todo_df = [i for i, df in enumerate(dfs) if df is None]
        if todo_df:
            found = (await session.execute(
                text(df_sql(language, len(todo_df))),
                {**{f"t{j}": terms[i] for j, i in enumerate(todo_df)}, "dfcap": DF_CAP})).one()
            for j, i in enumerate(todo_df):
                dfs[i] = int(found[j])
        return total, terms, [int(df or 0) for df in dfs]

    async def _span_days(self, session: Any) -> float:
        """How far back memory goes (cached like the statistics)."""
        now = time.monotonic()
        cached = self.__dict__.get("_span")
        if cached is not None and cached[0] > now:
            return float(cached[1])
        span = float(await session.scalar(text(SPAN_SQL)) or 0.0)
        self.__dict__["_span"] = (now + STATS_TTL_S, span)
        return span

    async def _common_lexemes(self, session: Any) -> dict[str, float]:
        now = time.monotonic()
        cached = self.__dict__.get("_mce")
        if cached is not None and cached[0] > now:
            return dict(cached[1])
        row = (await session.execute(text(MCE_SQL))).one_or_none()
        common: dict[str, float] = {}
        if row is not None and row.elems and row.freqs:
            common = dict(zip(row.elems, row.freqs, strict=False))
        self.__dict__["_mce"] = (now + STATS_TTL_S, common)
        return common

    @staticmethod
    async def _ranked(session: Any, tsq: str | None, plan: QueryPlan, language: str,
                      flt: RecallFilter, limit: int, since: datetime | None,
                      windows: tuple[float | None, ...]) -> list[Any]:
        """Rank the most recent candidate_cap(limit) matches of growing time windows."""
        rows: list[Any] = []
        if tsq is None:
            return rows
        weights: dict[str, object] = {}
        for i, (fragment, weight) in enumerate(plan.weights):
            weights[f"f{i}"], weights[f"w{i}"] = fragment, weight
        now = datetime.now(UTC)
        cap = candidate_cap(limit)
        for days in windows:
            start = None if days is None else now - timedelta(days=days)
            if start is not None and since is not None and since >= start:
                continue  # the caller's own date filter is already narrower
            sql, params = recall_sql(language, flt, windowed=start is not None,
                                     weighted=len(plan.weights))
            params.update({"tsq": tsq, "k": limit, "cap": cap, **weights})
            if start is not None:
                params["window_start"] = start
            rows = list((await session.execute(text(sql), params)).all())
            if rows and rows[0].candidates >= cap:
                break
        return rows

    async def query_informative(self, query: str, *, language: str = "french") -> bool:
        """False for small talk: a query whose every word is common in memory ("merci,
        c'est bon"), or that has no word at all. A query whose words memory does not hold
        is informative (vectors may still find what it means)."""
        words = longest_words(query_terms(query))
        if not words:
            return False
        async with self.db.recall_sessions() as session:
            _, terms, plan = await self._plan(session, words, language)
        if not terms:  # stop words only ("et toi ?", "oui")
            return False
        return plan is None or plan.informative

    async def _plan(self, session: Any, words: list[str], language: str
                    ) -> tuple[int, list[str], QueryPlan | None]:
        """The memory's size, the query's fragments and what to search for them (the
        small-talk rule included: memory/recall_query.py's plan_query)."""
        total, terms, dfs = await self._document_frequencies(session, words, language)
        return total, terms, plan_query(terms, dfs, total, select_words=SELECT_WORDS_LARGE
                                 if total >= LARGE_MEMORY else None)

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
        private_ok: bool = True,
        language: str = "french",
        informative_only: bool = False,
    ) -> list[Recalled]:
        """Souvenirs matching a free-text query, best first.

        All selecting words must match first; if that finds fewer than `limit`, any may
        (ranked, so souvenirs with more of the words still come first). With
        `informative_only`, a query whose every word is in more than a fifth of the
        memory ("merci, ok, c'est bon") finds nothing: small talk recalls no data.
        With `private_ok` False (anyone outside the inner circle) only public souvenirs
        are found: a private souvenir linked to a client is a note about them, not
        theirs to see.
        """
        if limit <= 0:
            return []
        flt = RecallFilter(
            relation_id=relation_id, types=tuple(types), sources=tuple(sources),
            since=since, until=until, private_ok=private_ok,
        )
        words = longest_words(query_terms(query))
        if not words:
            return []
        async with self.db.recall_sessions() as session:
            span = await self._span_days(session)  # before the planner settings below
            total, _, plan = await self._plan(session, words, language)
            if plan is None or (informative_only and not plan.informative):
                return []
            rows: list[Any] = []
            walking = "off"
            cap = candidate_cap(limit)
            for tsq, estimate in searches(plan, cap):  # all words first, then any
                walk = "on" if estimate >= WALK_SHARE * max(total, 1) else "off"
                if walk != walking:
                    await session.execute(text(BITMAP_ONLY_SQL),
                                          {"walk": walk, "local": self._local_settings})
                    walking = walk
                rows = await self._ranked(session, tsq, plan, language, flt, limit, since,
                                          windows_for(estimate, span, cap))
                if len(rows) >= limit:
                    break
        return [
            Recalled(souvenir=souvenir_from_row(r), relevance=float(r.relevance),
                     score=float(r.score))
            for r in rows
        ]
