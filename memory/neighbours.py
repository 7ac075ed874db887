"""Conversation neighbours: recall a conversation turn together with the turns around it.

Why it exists: a turn of conversation is often an answer whose subject is only in the
turn before ("Oui, on l'a visitée vendredi !" after "Tu as vu la grange de Sarlat ?").
Recall scores each souvenir alone, so the query "quand a-t-on visité la grange ?" finds
the question and misses the answer. After ranking, each souvenir therefore receives a
share of the scores of its conversation neighbours (score spreading):

    score'(d) = score(d) + share × Σ score(c) / steps(c, d)

over the best-ranked souvenirs c that are at most `reach` steps from d in the same
conversation. A turn that matched nothing can so enter the results next to the one that
did. Measured on LoCoMo (bench/locomo.py, 1,536 questions, R@5/10/20): hybrid recall
0.559/0.646/0.720 → 0.609/0.718/0.789, full text alone 0.533/0.605/0.664 →
0.568/0.675/0.752 (share 0.5, reach 2). Cost: one statement, two index probes per
souvenir spread from (5 ms for 40 souvenirs in a memory of 300,000).

Two souvenirs are neighbours when both are of type 'conversation', come from the same
source (channel), belong to the same conversation and are at most MAX_GAP apart in time.
The same conversation is: the same `metadata.conversation` key when the souvenir has one
(what the pipeline should write: the messages' conversation key); without the key, the
same person (`relation_id`) among souvenirs that have no key either. The relation is
symmetric, which the spreading relies on. Steps are counted in (timestamp, id) order
among the souvenirs the caller may see (the recall's own filter applies to neighbours:
spreading never reveals a private souvenir).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from memory.recall_query import RecallFilter, filter_sql
from memory.records import SouvenirRecord, souvenir_from_row

NEIGHBOUR_SHARE = 0.5
"""Share of a neighbour's score a souvenir receives (divided by the steps between them).
LoCoMo R@10 (hybrid, reach 2): 0.3 → 0.707, 0.5 → 0.718, 0.7 → 0.711."""
NEIGHBOUR_REACH = 2
"""Turns on each side that count as neighbours: the turn answered, the turn answering,
and one more (the question before a short acknowledgement). LoCoMo R@10: reach 1 → 0.692,
2 → 0.718, 3 → 0.718."""
MAX_GAP = timedelta(hours=6)
"""Turns further apart in time than this are not neighbours: another sitting."""
SPREAD_PER_RESULT = 2
"""Scores spread from the best SPREAD_PER_RESULT × limit souvenirs only (lower ones
would add little: LoCoMo R@10 0.718 spreading from 40, 0.718 from all 100+)."""

CONVERSATION = "conversation"

_COLUMNS = (
    "s.id, s.timestamp, s.type, s.source, s.contenu, s.resume, s.importance, s.metadata, "
    "s.relation_id, s.public"
)


@dataclass(frozen=True)
class Neighbour:
    """`souvenir` is `steps` turns from the souvenir `of` (negative: before it)."""

    of: int
    steps: int
    souvenir: SouvenirRecord


def _side_sql(before: bool, where: list[str]) -> str:
    """The `reach` nearest souvenirs of the same conversation on one side of `c`."""
    cmp, order = ("<", "DESC") if before else (">", "ASC")
    window = ("s.timestamp >= c.timestamp - CAST(:gap AS interval)" if before
              else "s.timestamp <= c.timestamp + CAST(:gap AS interval)")
    same = [
        f"s.type = '{CONVERSATION}'",
        "s.source IS NOT DISTINCT FROM c.source",
        # with a conversation key: the same key; without: the same person, no key either
        "(CASE WHEN c.metadata ? 'conversation' "
        "THEN s.metadata->>'conversation' = c.metadata->>'conversation' "
        "ELSE NOT (s.metadata ? 'conversation') "
        "AND s.relation_id IS NOT DISTINCT FROM c.relation_id END)",
        f"(s.timestamp, s.id) {cmp} (c.timestamp, c.id)",
        window,
    ]
    return (
        f"(SELECT {'-1' if before else '1'} AS side, {_COLUMNS} FROM souvenirs s "
        f"WHERE {' AND '.join(same + where)} "
        f"ORDER BY s.timestamp {order}, s.id {order} LIMIT :reach)"
    )


def neighbours_sql(flt: RecallFilter) -> tuple[str, dict[str, Any]]:
    """SQL of the neighbours of the souvenirs :ids (:reach on each side, :gap apart at
    most), each row with `centre` (the souvenir it is a neighbour of) and `side`."""
    where, params = filter_sql(flt)
    sql = (
        "SELECT c.id AS centre, n.* FROM souvenirs c CROSS JOIN LATERAL ("
        f"{_side_sql(True, where)} UNION ALL {_side_sql(False, where)}) AS n "
        f"WHERE c.id = ANY(:ids) AND c.type = '{CONVERSATION}'"
    )
    return sql, params


async def conversation_neighbours(
    db: Any,
    ids: Iterable[int],
    *,
    reach: int = NEIGHBOUR_REACH,
    flt: RecallFilter | None = None,
    gap: timedelta = MAX_GAP,
) -> list[Neighbour]:
    """The neighbours of each souvenir of `ids` (see the module docstring), nearest first
    on each side. Souvenirs that are not conversation turns have none."""
    wanted = sorted({int(i) for i in ids})
    if not wanted or reach <= 0:
        return []
    sql, params = neighbours_sql(flt or RecallFilter())
    params.update({"ids": wanted, "reach": int(reach), "gap": gap})
    async with db.sessions() as session:
        rows = (await session.execute(text(sql), params)).all()
    by_side: dict[tuple[int, int], list[Any]] = {}
    for row in rows:
        by_side.setdefault((int(row.centre), int(row.side)), []).append(row)
    out: list[Neighbour] = []
    for (centre, side), found in sorted(by_side.items()):
        found.sort(key=lambda r: (r.timestamp, r.id), reverse=side < 0)
        out += [Neighbour(of=centre, steps=side * (i + 1), souvenir=souvenir_from_row(r))
                for i, r in enumerate(found)]
    return out


def spread(
    scores: Mapping[int, float],
    neighbours: Sequence[Neighbour],
    *,
    share: float = NEIGHBOUR_SHARE,
) -> dict[int, float]:
    """Each souvenir's score plus `share` of its neighbours' scores over their steps.

    `neighbours` are those of (some of) the scored souvenirs; a neighbour that had no
    score gets one from them alone. Pure: {id: score} in, {id: score} out."""
    out = dict(scores)
    for n in neighbours:
        given = scores.get(n.of, 0.0) * share / abs(n.steps)
        if given > 0:
            out[n.souvenir.id] = out.get(n.souvenir.id, 0.0) + given
    return out
