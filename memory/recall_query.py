"""Pure parts of recall: the ranking formula and the SQL it runs. No I/O here.

Score = full-text relevance (ts_rank_cd, length-normalised) × a recency factor
(0.5 → 1.0, half-life RECENCY_HALF_LIFE_DAYS) × an importance factor (0.75 → 1.25
for importance 0 → 10). Relevance dominates; recency and importance break ties and
lift what matters. The formula is computed in float8: `extract(epoch …)` is numeric
since PostgreSQL 14, and numeric `power()` on every matched row cost 6× the floor.

Relevance weighs each query word by its rarity (BM25's idf): Σ idf(word) ×
ts_rank(search vector, word), so in "when did Caroline go to the support group" the
rare "support" counts more than the name found in half the souvenirs. Document
frequencies come from the lexicon (memory/lexicon.py) on a large memory, from a bounded
probe (DF_CAP) otherwise. A long message keeps its MAX_QUERY_WORDS rarest words. Words
found in more than COMMON_SHARE of the memory select no candidates when a rarer word is
there (they only add to the score); a query made only of such words is small talk, which
the conversation pipeline does not recall for (`informative_only`). The selecting words
must all match first (words absent from the whole memory are left out of that test); if
that finds too little, any of them may match.

Bounded work: ranking costs a heap visit and a ts_rank per word for each candidate (10-20
µs), and a common word matches a third of a million souvenirs. So recall ranks at most
candidate_cap(limit) candidates (100 for a reply's 8 souvenirs, at most CANDIDATE_CAP):
the most recent matches inside a time window (the GIN match and the timestamp index
combine in a bitmap, so only the window's matches are read), widening the window until
the cap is reached or the whole memory was searched. A specific query (few matches) is
thus ranked over all time; a query whose words are everywhere is ranked among its most
recent matches — where recency would dominate the score anyway. The first window is
sized from the words' frequencies (`windows_for`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

RECENCY_HALF_LIFE_DAYS = 180.0
LANGUAGES = {"french", "english", "simple"}
CANDIDATE_CAP = 500
MIN_CANDIDATES = 100
CANDIDATES_PER_RESULT = 12
DF_CAP = 500
COMMON_SHARE = 0.2
COMMON_MIN_DF = 50
COMMON_MAX_DF = 10_000
"""Nor is a word in more souvenirs than this ever a selecting one: GIN reads a word's whole
posting list and the heap page of every match, so in a large memory a word found in
tens of thousands of souvenirs (a town, "maison", "client") costs milliseconds and
selects little; it still scores."""
"""A word in fewer souvenirs than this is never 'common': in a small memory, a word
found in one souvenir out of three is a subject, not small talk."""
MAX_QUERY_WORDS = 6
MAX_NORMALIZED_WORDS = 24
SCORE_SHARE = 0.75
SELECT_WORDS_LARGE = 3
LARGE_MEMORY = 50_000
"""A memory this large searches by its rarest words only, reads word frequencies from
the lexicon (memory/lexicon.py) and trusts the planner's row estimate for its size."""
STATS_TTL_S = 600.0

BITMAP_ONLY_SQL = (
    "SELECT set_config('enable_seqscan', 'off', :local), "
    "set_config('enable_indexscan', :walk, :local), "
    "set_config('plan_cache_mode', 'force_custom_plan', :local)"
)
"""For the rest of the recall's transaction (:local true) or connection (false, on recall's
own pool: memory.database.RECALL_SETTINGS), how matches are found. A word that is not
very common goes through the GIN index (bitmap, combined with the timestamp index for
windows): otherwise the planner, expecting to meet a rare word early, walks the table or
the timestamp index and reads a million rows when the word is in none (measured: 800 ms).
For a very common word (≥ WALK_SHARE of memory) walking the timestamp index backwards
is what is fast: building its GIN bitmap alone costs 27 ms for 300k matches.
Custom plans are forced: asyncpg prepares every statement, and after five runs PostgreSQL
may switch to a generic plan that ignores both the words and these settings (measured:
the same query 14 ms alone, 160 ms inside a run of 200)."""
WALK_SHARE = 0.02

MCE_SQL = (
    "SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs "
    "FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'souvenirs' "
    "AND attname = 'recherche'"
)
"""The planner's own statistics of the search vector: the frequency of its most common
lexemes (a column statistic ANALYZE keeps), so common words cost no probe."""


def compound_form(normalized: str) -> str | None:
    """For a hyphenated compound, the query on its own lexemes: "'la-roque-gageac'"
    rather than the phrase 'la-roque-gageac' <-> 'la' <-> 'roqu' <-> 'gageac', which
    PostgreSQL must recheck row by row (the tail of recall's latency). None otherwise."""
    compounds = [lex for lex in lexemes_of(normalized) if "-" in lex]
    if not compounds:
        return None
    return " | ".join("'" + lex.replace("'", "''") + "'" for lex in dict.fromkeys(compounds))


def collapse_alternatives(normalized: str) -> str:
    """"'visit' | 'visit'" (an accented word and its folded form, stemmed alike) is just
    "'visit'": GIN and ts_rank then read one entry instead of two."""
    lexemes = lexemes_of(normalized)
    if (len(lexemes) > 1 and len(set(lexemes)) == 1 and "&" not in normalized
            and "<" not in normalized and "!" not in normalized):
        return f"'{lexemes[0]}'"
    return normalized


def lexemes_of(querytree: str) -> list[str]:
    """'immobili' | 'immobilier' → ['immobili', 'immobilier'] (T = no lexeme)."""
    return re.findall(r"'((?:[^']|'')*)'", querytree or "")


def longest_words(terms: list[str], limit: int = MAX_NORMALIZED_WORDS) -> list[str]:
    """A long message is normalized by its `limit` longest words (bounded work); the
    rarest of those are chosen once their frequencies are known (plan_query)."""
    if len(terms) <= limit:
        return terms
    ranked = sorted(range(len(terms)), key=lambda i: -len(terms[i]))[:limit]
    return [terms[i] for i in sorted(ranked)]


def idf(df: int, n: int) -> float:
    """BM25's inverse document frequency (always positive)."""
    return math.log(1.0 + (max(n, df) - df + 0.5) / (df + 0.5))


@dataclass(frozen=True)
class QueryPlan:
    strict: str | None  # every selecting word must match
    loose: str | None  # any selecting word may match
    weights: tuple[tuple[str, float], ...]  # (fragment, idf) of the words that score
    strict_estimate: int = 0  # expected matches (words taken as independent)
    loose_estimate: int = 0
    informative: bool = True  # some word is rare enough to select (see COMMON_SHARE)


def plan_query(terms: list[str], dfs: list[int], n: int, max_words: int = MAX_QUERY_WORDS,
               select_words: int | None = None) -> QueryPlan | None:
    """From the query's fragments and their document frequencies, what to search.

    Words found nowhere are left out. A long message keeps its `max_words` rarest words.
    Words found in more than COMMON_SHARE of the memory select nothing when a rarer word
    is there (a GIN bitmap of a third of a million rows costs tens of ms and says little);
    they still add to the score, unless they are nearly everywhere (SCORE_SHARE). With
    `select_words` (large memories), only that many of the rarest words select candidates:
    GIN reads the whole posting list of every word it is given, and the rarest words
    already find the souvenirs that hold them all; the others still score."""
    present = list(dict((t, df) for t, df in zip(terms, dfs, strict=True) if df > 0).items())
    if not present:
        return None
    if len(present) > max_words:
        rarest = sorted(range(len(present)), key=lambda i: present[i][1])[:max_words]
        present = [present[i] for i in sorted(rarest)]
    size = max(n, 1)
    common_above = max(min(COMMON_SHARE * size, COMMON_MAX_DF), COMMON_MIN_DF)
    rare = [(t, df) for t, df in present if df <= common_above]
    selecting = rare or present
    if select_words is not None and len(selecting) > select_words:
        rarest = sorted(range(len(selecting)), key=lambda i: selecting[i][1])[:select_words]
        selecting = [selecting[i] for i in sorted(rarest)]
    scoring = [(t, df) for t, df in present if df <= SCORE_SHARE * size] or present
    return QueryPlan(
        strict=" & ".join(t for t, _ in selecting),
        loose=" | ".join(t for t, _ in selecting),
        weights=tuple((t, idf(df, n)) for t, df in scoring),
        strict_estimate=int(size * math.prod(df / size for _, df in selecting)),
        loose_estimate=min(sum(df for _, df in selecting), size),
        informative=bool(rare),
    )


def searches(plan: QueryPlan, cap: int) -> list[tuple[str, int]]:
    """The searches to run in turn, (tsquery, estimated matches): all selecting words,
    then any of them. When any-word matches are expected to be few (well under the cap),
    the any-word search alone ranks every one of them, souvenirs holding all the words
    included and first: the all-words search would be a wasted round trip."""
    if plan.loose is None or plan.strict is None:
        return []
    if plan.loose == plan.strict:
        return [(plan.strict, plan.strict_estimate)]
    if plan.loose_estimate <= cap // 4:
        return [(plan.loose, plan.loose_estimate)]
    return [(plan.strict, plan.strict_estimate), (plan.loose, plan.loose_estimate)]


def candidate_cap(limit: int) -> int:
    """How many candidates to rank for `limit` results: CANDIDATES_PER_RESULT per result,
    between MIN_CANDIDATES and CANDIDATE_CAP. Ranking costs about 10-20 µs a candidate
    (a heap visit and a ts_rank per word), the bulk of a conversational recall."""
    return max(MIN_CANDIDATES, min(CANDIDATE_CAP, CANDIDATES_PER_RESULT * limit))


def windows_for(estimate: int, span_days: float,
                cap: int = CANDIDATE_CAP) -> tuple[float | None, ...]:
    """Time windows (days back, None = all) to search in turn for a query expected to
    match `estimate` souvenirs spread over `span_days`: the first window should hold
    about 1.5 × `cap` matches; a query with few matches searches everything."""
    if estimate < max(cap, DF_CAP) or span_days <= 0:
        return (None,)
    first = span_days * 1.5 * cap / estimate
    if first >= span_days:
        return (None,)
    first = max(first, 1.0)
    second = first * 8
    return (first, second, None) if second < span_days else (first, None)


def df_sql(language: str, count: int) -> str:
    """Document frequency of :t0…:tN-1 (normalized tsquery text), each counted up to
    :dfcap (bounded work)."""
    vec = vector_sql(language)
    probes = [
        f"(SELECT count(*) FROM (SELECT 1 FROM souvenirs s WHERE {vec} @@ "
        f"CAST(:t{i} AS tsquery) LIMIT :dfcap) AS x{i}) AS df{i}"
        for i in range(count)
    ]
    return "SELECT " + ", ".join(probes)


SPAN_SQL = "SELECT extract(epoch FROM (now() - min(timestamp)))::float8 / 86400 FROM souvenirs"


@dataclass(frozen=True)
class RecallFilter:
    relation_id: int | None = None
    types: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    private_ok: bool = True
    """False for anyone outside the inner circle: public souvenirs only, even those linked
    to the person asking ("about a person" is not "visible to that person")."""


def score_sql(relevance: str) -> str:
    half_life_s = RECENCY_HALF_LIFE_DAYS * 86400.0
    age_s = "greatest(extract(epoch FROM (now() - s.timestamp))::float8, 0::float8)"
    return (
        f"{relevance}::float8"
        f" * (0.5::float8 + 0.5::float8 * power(0.5::float8, {age_s} / {half_life_s}::float8))"
        " * (0.75::float8 + 0.05::float8 * least(greatest(coalesce(s.importance, 5), 0), 10))"
    )


def vector_sql(language: str) -> str:
    """The tsvector expression: the stored (indexed) column for French."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown text-search language {language!r}")
    if language == "french":
        return "s.recherche"
    return f"to_tsvector('{language}'::regconfig, axi_pli(s.contenu))"


def filter_sql(flt: RecallFilter) -> tuple[list[str], dict[str, Any]]:
    """The WHERE clauses of a RecallFilter on souvenirs `s` (shared by every recall)."""
    where: list[str] = []
    params: dict[str, Any] = {}
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
        where.append("s.public")
    return where, params


def recall_sql(
    language: str, flt: RecallFilter, *, windowed: bool = False, weighted: int = 0
) -> tuple[str, dict[str, Any]]:
    """SQL of a recall with :tsq (normalized tsquery text), :k and :cap bound by the caller
    (and :window_start when `windowed`; :w0…, :f0… for `weighted` word weights). Each
    row also carries `candidates`, the number of candidates ranked, so the caller knows
    whether to widen the window."""
    vec = vector_sql(language)
    where = [f"{vec} @@ q.query"]
    if windowed:
        where.append("s.timestamp >= :window_start")
    # privacy written as `s.public` itself (filter_sql), so that the public souvenirs' own
    # GIN index (migration 0006) serves instead of discarding private matches one heap
    # page at a time
    extra, params = filter_sql(flt)
    where += extra
    query = "CAST(:tsq AS tsquery) AS q(query)"
    cand = (f"SELECT s.id, s.timestamp FROM souvenirs s, {query} "
            f"WHERE {' AND '.join(where)} ORDER BY s.timestamp DESC, s.id DESC LIMIT :cap")
    relevance = f"ts_rank_cd({vec}, q.query, 1)"
    if weighted:
        relevance = "(" + " + ".join(
            f"CAST(:w{i} AS float8) * ts_rank({vec}, CAST(:f{i} AS tsquery), 1)"
            for i in range(weighted)) + ")"
    sql = (
        f"WITH cand AS MATERIALIZED ({cand}) "
        f"SELECT s.id, s.timestamp, s.type, s.source, s.contenu, s.resume, s.importance, "
        f"s.metadata, s.relation_id, s.public, {relevance} AS relevance, "
        f"{score_sql(relevance)} AS score, (SELECT count(*) FROM cand) AS candidates "
        f"FROM cand JOIN souvenirs s USING (id), {query} "
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
