"""The silent baseline's rules, pure (jobs/baseline.py): which sources a run completes,
which new items are a baseline, and the markers written; the engine tests run them
against PostgreSQL (tests/jobs/test_concurrence_engine.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from jobs.baseline import (
    BASELINE_FLAG,
    completed,
    legacy,
    marker_key,
    new_markers,
    silent_sources,
)
from jobs.types import Fetched, SourceItem

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def fetched(**fields: object) -> Fetched:
    items = [SourceItem(f"k{i}", source, {}) for i, source in enumerate(("A", "B", "C", "D"))]
    return Fetched(items=items, **fields)  # type: ignore[arg-type]


def test_a_run_completes_the_sources_that_answered_wholly() -> None:
    run = fetched(healthy={"A", "B", "C", "D", "Vide"}, broken={"B": "HTTP 500"},
                  incomplete={"C"})
    assert completed(run) == {"A", "D", "Vide"}  # "Vide" answered with no item: complete too


def test_markers_are_keyed_by_identity_and_written_once() -> None:
    run = fetched(source_ids={"A": "https://a.example/biens"})
    marks = new_markers(run, {}, NOW)
    key = marker_key("https://a.example/biens")
    assert len(key) < 200 and key == marker_key("https://a.example/biens") != marker_key("A")
    assert json.loads(marks[key]) == {"source": "A", "id": "https://a.example/biens",
                                      "le": NOW.isoformat()}
    assert marks[BASELINE_FLAG] == "1" and marker_key("B") in marks
    assert new_markers(run, marks, NOW) == {BASELINE_FLAG: "1"}  # nothing rewritten


def test_new_items_are_silent_until_their_source_is_marked() -> None:
    run = fetched(source_ids={"Renommée": "https://a.example/biens"})
    marks = {marker_key("https://a.example/biens"): "{}", marker_key("B"): "{}"}
    assert silent_sources(run, {"Renommée", "B", "C"}, marks) == {"C"}
    assert silent_sources(run, {"C"}, marks, legacy_established={"C"}) == set()
    assert legacy({}, first_run=False) and not legacy({}, first_run=True)
    assert not legacy({BASELINE_FLAG: "1"}, first_run=False)
