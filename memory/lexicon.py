"""The lexicon: document frequencies of the lexemes of the French search vector.

Why it exists: recall weighs each query word by its rarity (idf) and sizes its search
from the words' frequencies. Counting a word's matches at query time costs a GIN bitmap
and a heap visit per match: 2-5 ms for a word found in a few thousand souvenirs, 67 ms
measured for one sentence made of such words, on the reply's path. PostgreSQL's own
statistics (pg_stats.most_common_elems) keep only the top ~1,000 lexemes.

So the counts live in a table, `lexique`, built once with ts_stat() (about 5 s for a
million souvenirs) and then brought up to date incrementally: only the souvenirs added
since the last refresh are counted. `axi run` refreshes it in the background and
`axi db analyze` rebuilds it. Counts are estimates, which is all idf needs: a souvenir
edited is not recounted until the next rebuild, and a souvenir committed late with an id
below the last refresh's is missed; a souvenir deleted for good (forgotten, erased) is
subtracted at once (`uncount_lexemes`): its words must not outlive it. A word absent
from the lexicon is new or absent, so recall probes it (cheap: it is rare).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from memory.recall_query import LARGE_MEMORY

LEXICON_LOCK = 0x4158494C  # "AXIL": one refresh at a time, across processes
LEXICON_MIN_SOUVENIRS = LARGE_MEMORY
"""Below this, recall counts each word exactly with a bounded probe (cheap on a small
memory); the lexicon serves larger memories."""
LEXICON_MAX_STALENESS = 2.0
"""The lexicon is used while memory holds at most this many times the souvenirs it
counted (its counts are scaled up to the current size); beyond, recall probes again."""

STATE_SQL = "SELECT jusqu_a, souvenirs, reconstruit_le, maj_le FROM lexique_etat WHERE id = 1"


def _stat_query(after: int, upto: int) -> str:
    """The ts_stat() input for souvenirs after < id <= upto (integers only)."""
    return (f"SELECT recherche FROM souvenirs WHERE id > {int(after)} "
            f"AND id <= {int(upto)}")


@dataclass(frozen=True)
class LexiconRefresh:
    full: bool
    souvenirs_counted: int  # souvenirs read by this refresh
    lexemes: int  # lexemes in the lexicon afterwards
    seconds: float


@dataclass(frozen=True)
class LexiconState:
    upto_id: int
    souvenirs: int
    lexemes: int
    rebuilt_at: Any
    updated_at: Any


def lexicon_sql(language: str, normalize: int) -> str:
    """One round trip before a recall: the planner settings (:walk; for the transaction,
    or with :local false for recall's own connection), the memory's size, the lexicon's
    base, the counts of the lexemes of :words (plain text, parsed like the stored French
    vector; a JSON object without the absent ones) and, as n0…n{normalize-1}, the
    stemmed tsquery text of :t0…"""
    stems = "".join(f", to_tsquery('{language}'::regconfig, :t{i})::text AS n{i}"
                    for i in range(normalize))
    counts = ("(SELECT coalesce(json_object_agg(lexeme, nb), '{}'::json) FROM lexique "
              "WHERE lexeme = ANY(tsvector_to_array(to_tsvector('french'::regconfig, :words))))"
              if language == "french" else "'{}'::json")
    return (
        "SELECT set_config('enable_seqscan', 'off', :local) AS s1, "
        "set_config('enable_indexscan', :walk, :local) AS s2, "
        "set_config('plan_cache_mode', 'force_custom_plan', :local) AS s3, "
        f"(SELECT CASE WHEN c.reltuples >= {LARGE_MEMORY} THEN c.reltuples::bigint "
        " ELSE (SELECT count(*) FROM souvenirs) END FROM pg_class c "
        " WHERE c.oid = 'souvenirs'::regclass) AS total, "
        f"(SELECT souvenirs FROM lexique_etat WHERE id = 1) AS base, {counts} AS counts"
        f"{stems}"
    )


def scaled_counts(counts: dict[str, int], base: int | None, total: int,
                  min_souvenirs: int = LEXICON_MIN_SOUVENIRS) -> dict[str, int] | None:
    """Lexicon counts scaled to the memory's current size, or None when the lexicon must
    not be used (missing, memory too small, or memory grew too much since)."""
    if not base or total < min_souvenirs or total > LEXICON_MAX_STALENESS * base:
        return None
    factor = max(total / base, 1.0)
    return {lex: int(nb * factor) for lex, nb in counts.items()}


async def uncount_lexemes(session: Any, souvenir_ids: list[int]) -> None:
    """Take souvenirs about to be deleted out of the lexicon (in the deleting
    transaction), which is only rebuilt by hand: else their words — an email address,
    a phone number, a rare name — stay in it, counted, after they are gone. Only
    souvenirs the lexicon counted (up to its `jusqu_a`); a word nobody else used
    leaves it."""
    if not souvenir_ids:
        return
    # a refresh counting these souvenirs right now would add them back: one at a time
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LEXICON_LOCK})
    gone = (await session.execute(text(
        "WITH counted AS (SELECT s.id, s.recherche FROM souvenirs s, lexique_etat e "
        " WHERE e.id = 1 AND s.id <= e.jusqu_a AND s.id = ANY(:souv)), "
        "words AS (SELECT u.lexeme, count(*) AS n FROM counted c, "
        " unnest(c.recherche) AS u(lexeme, positions, weights) GROUP BY u.lexeme), "
        "fewer AS (UPDATE lexique l SET nb = greatest(l.nb - w.n, 0) FROM words w "
        " WHERE l.lexeme = w.lexeme RETURNING l.lexeme, l.nb) "
        "SELECT (SELECT count(*) FROM counted) AS souvenirs, "
        " ARRAY(SELECT lexeme FROM fewer WHERE nb = 0) AS unused"),
        {"souv": souvenir_ids})).one()
    if gone.unused:
        await session.execute(text("DELETE FROM lexique WHERE lexeme = ANY(:w)"),
                              {"w": list(gone.unused)})
    if gone.souvenirs:
        await session.execute(text(
            "UPDATE lexique_etat SET souvenirs = greatest(souvenirs - :n, 0), maj_le = now() "
            "WHERE id = 1"), {"n": int(gone.souvenirs)})


class LexiconMixin:
    db: Any
    lexicon_min_souvenirs: int = LEXICON_MIN_SOUVENIRS

    async def refresh_lexicon(self, *, full: bool = False) -> LexiconRefresh:
        """Count the lexemes of the souvenirs added since the last refresh (all of them
        when `full` or when there is no lexicon yet). Readers keep the old counts until
        this commits; concurrent refreshes wait for each other."""
        t0 = time.perf_counter()
        async with self.db.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": LEXICON_LOCK})
            state = (await conn.execute(text(STATE_SQL))).one_or_none()
            top = int(await conn.scalar(text("SELECT coalesce(max(id), 0) FROM souvenirs")) or 0)
            rebuild = full or state is None
            after = 0 if rebuild else int(state.jusqu_a)
            if rebuild:
                await conn.execute(text("DELETE FROM lexique"))
                known = 0
            else:
                known = int(state.souvenirs)
            counted = 0
            if top > after:
                counted = int(await conn.scalar(
                    text("SELECT count(*) FROM souvenirs WHERE id > :a AND id <= :b"),
                    {"a": after, "b": top}) or 0)
                await conn.execute(text(
                    "INSERT INTO lexique (lexeme, nb) SELECT word, ndoc FROM ts_stat(:q) "
                    "ON CONFLICT (lexeme) DO UPDATE SET nb = lexique.nb + excluded.nb"),
                    {"q": _stat_query(after, top)})
            await conn.execute(text(
                "INSERT INTO lexique_etat (id, jusqu_a, souvenirs, reconstruit_le, maj_le) "
                "VALUES (1, :upto, :n, now(), now()) ON CONFLICT (id) DO UPDATE SET "
                "jusqu_a = excluded.jusqu_a, souvenirs = excluded.souvenirs, maj_le = now(), "
                "reconstruit_le = CASE WHEN CAST(:rebuild AS boolean) THEN now() "
                "ELSE lexique_etat.reconstruit_le END"),
                {"upto": max(top, after), "n": known + counted, "rebuild": rebuild})
            lexemes = int(await conn.scalar(text("SELECT count(*) FROM lexique")) or 0)
        return LexiconRefresh(full=rebuild, souvenirs_counted=counted, lexemes=lexemes,
                              seconds=time.perf_counter() - t0)

    async def lexicon_state(self) -> LexiconState | None:
        async with self.db.sessions() as session:
            row = (await session.execute(text(STATE_SQL))).one_or_none()
            if row is None:
                return None
            lexemes = int(await session.scalar(text("SELECT count(*) FROM lexique")) or 0)
        return LexiconState(upto_id=int(row.jusqu_a), souvenirs=int(row.souvenirs),
                            lexemes=lexemes, rebuilt_at=row.reconstruit_le,
                            updated_at=row.maj_le)
