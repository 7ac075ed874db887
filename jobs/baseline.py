"""When a source's items are news, pure (no I/O): the silent baseline of the veille types
that declare `baseline_new_sources` (competitors' listings, DVF postcodes).

Why a marker: a source's first items are its catalogue, not news, so they are stored
already reported. Deciding that from "no item stored yet for this source" went wrong
three ways: a first run that failed part-way stored some items, so the next run reported
the rest of the catalogue as new; a source whose first run found nothing got its first
genuinely new items swallowed as "baseline"; a renamed source was a new source again.

So the baseline of a source is complete only when a marker says so: `reference:<hash of
its identity>` in the veille's watermarks (curseurs_canal, canal `veille:<nom>`), written
by the engine after the items are stored, and only for a source fetched completely and
successfully — it answered (it yielded items or said it was healthy), it is not broken,
and the type did not call it incomplete. Until then its new items are stored silently;
afterwards every new key is reported. A source's identity is what the type gives in
`Fetched.source_ids` (a competitor's normalized address), else its name.

Veilles that ran before the markers existed have none: for their first run with this
code (no `BASELINE_FLAG` yet, but an earlier successful run), a source that already has
stored items counts as baselined, as it did then; the flag is written on every run, so
this applies once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime

from jobs.types import Fetched

PREFIX = "reference:"
BASELINE_FLAG = "references"
"""Written on every run of a baseline type: the veille's markers are authoritative."""


def marker_key(source_id: str) -> str:
    """The watermark key of a source's completed baseline (fits curseurs_canal.cle)."""
    return PREFIX + hashlib.sha256(source_id.encode()).hexdigest()[:32]


def identity(fetched: Fetched, source: str) -> str:
    return fetched.source_ids.get(source, source)


def legacy(marks: Mapping[str, str], first_run: bool) -> bool:
    """A veille that ran before the markers existed, on its first run with them."""
    return BASELINE_FLAG not in marks and not first_run


def silent_sources(fetched: Fetched, sources: Iterable[str], marks: Mapping[str, str],
                   legacy_established: Iterable[str] = ()) -> set[str]:
    """The sources among `sources` whose new items are their baseline (stored silently):
    those without a marker (and, for a legacy veille, without stored items)."""
    established = set(legacy_established)
    return {s for s in sources
            if s not in established and marker_key(identity(fetched, s)) not in marks}


def completed(fetched: Fetched) -> set[str]:
    """The sources fetched completely and successfully this run."""
    answered = {i.source for i in fetched.items} | set(fetched.healthy)
    return answered - set(fetched.broken) - set(fetched.incomplete)


def new_markers(fetched: Fetched, marks: Mapping[str, str], now: datetime) -> dict[str, str]:
    """The watermarks to write once this run's items are stored: the flag, and a marker
    for each source whose baseline this run completes."""
    out = {BASELINE_FLAG: "1"}
    for source in sorted(completed(fetched)):
        source_id = identity(fetched, source)
        key = marker_key(source_id)
        if key not in marks:
            out[key] = json.dumps({"source": source, "id": source_id, "le": now.isoformat()},
                                  ensure_ascii=False)
    return out
