"""Keep a conversation's prompt prefix the same from one turn to the next.

The local model re-reads a prompt only from its first change (Ollama's prefix cache):
on a CPU, a change near the top costs the whole prompt again — tens of seconds. The facts
about the person sit in the system prompt, at the very top; a fact learnt during the
conversation (fact extraction after each turn) would change it on the next turn. So the
system prompt holds the person's facts as they were when the conversation (re)started —
each turn records that cut-off id — and facts learnt since go with the turn's data, at the
end. The cut-off is renewed when the previous turn is older than `RENEW_AFTER` (the model
has long unloaded its cache by then: nothing to keep).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from memory.records import FactRecord

CUTOFF_KEY = "faits_jusqua"
"""Inbound message metadata: the last fact id the system prompt of that turn held."""
RENEW_AFTER = timedelta(minutes=30)


def facts_cutoff(history: Sequence[Any], person_facts: Sequence[FactRecord],
                 now: datetime) -> int:
    """The cut-off for this turn: the previous turn's when it is recent, else the newest
    fact now (a fresh system prompt)."""
    for turn in reversed(history):
        if turn.sens != "entrant":
            continue
        previous = turn.metadata.get(CUTOFF_KEY)
        if isinstance(previous, int) and now - turn.recu_le <= RENEW_AFTER:
            return previous
        break
    return max((f.id for f in person_facts), default=0)


def split_facts(facts: Sequence[FactRecord], until: int | None
                ) -> tuple[list[FactRecord], list[FactRecord]]:
    """(in the system prompt, with the turn's data): those learnt after the cut-off go last."""
    if until is None:
        return list(facts), []
    return [f for f in facts if f.id <= until], [f for f in facts if f.id > until]
