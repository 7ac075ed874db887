"""The queue of souvenirs whose facts are still to be extracted: conversation turns are
stored with metadata `extraction = a_faire`; the background extractor claims one at a
time (FOR UPDATE SKIP LOCKED, so several processes share the work) and marks it done
or failed in the same transaction as the facts it adds. A crash leaves it queued.

A failed item is retried later, not at once: `extraction_apres` (metadata, a time) holds
it back until then (the delay is the caller's: bot/backoff.py)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import text

from memory.messages import Claim
from memory.records import souvenir_from_row

MAX_EXTRACTION_ATTEMPTS = 3


class ExtractionQueueMixin:
    db: Any

    @asynccontextmanager
    async def claim_for_extraction(
        self, *, message_id: int | None = None
    ) -> AsyncIterator[tuple[Claim, Any] | None]:
        """The next queued souvenir that is due (a failed one waits for its backoff), or
        only the souvenirs of inbound message `message_id` (a one-shot command's own)."""
        only = " AND metadata->>'message_id' = :mid" if message_id is not None else ""
        async with self.db.sessions() as session, session.begin():
            row = (await session.execute(text(
                "SELECT id, timestamp, type, source, contenu, resume, importance, metadata, "
                "relation_id, public FROM souvenirs WHERE metadata->>'extraction' = 'a_faire' "
                "AND (metadata->>'extraction_apres' IS NULL "
                "OR CAST(metadata->>'extraction_apres' AS timestamptz) <= now())"
                f"{only} ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED"),
                {"mid": str(message_id)} if message_id is not None else {})).one_or_none()
            if row is None:
                yield None
                return
            yield Claim(session, None), souvenir_from_row(row)  # type: ignore[arg-type]

    async def finish_extraction(self, claim: Claim, souvenir_id: int, *, state: str,
                                detail: dict[str, Any] | None = None,
                                retry_in_s: float | None = None) -> None:
        """state: 'faite', 'echec' (given up) or 'a_faire' (retry, attempt counted, not
        before `retry_in_s` seconds)."""
        retry = ("jsonb_build_object('extraction_apres', now() + make_interval(secs => :later))"
                 if retry_in_s is not None else "'{}'::jsonb")
        await claim.execute(
            "UPDATE souvenirs SET metadata = (metadata - 'extraction_apres') || CAST(:m AS jsonb) "
            f"|| {retry} || jsonb_build_object('extraction_essais', "
            "coalesce((metadata->>'extraction_essais')::int, 0) + 1) WHERE id = :id",
            {"m": json.dumps({"extraction": state, **(detail or {})}), "id": souvenir_id,
             **({"later": retry_in_s} if retry_in_s is not None else {})})
