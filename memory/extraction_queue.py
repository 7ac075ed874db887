"""The queue of souvenirs whose facts are still to be extracted: conversation turns are
stored with metadata `extraction = a_faire`; the background extractor claims one at a
time (FOR UPDATE SKIP LOCKED, so several processes share the work) and marks it done
or failed in the same transaction as the facts it adds. A crash leaves it queued."""

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
    async def claim_for_extraction(self) -> AsyncIterator[tuple[Claim, Any] | None]:
        async with self.db.sessions() as session, session.begin():
            row = (await session.execute(text(
                "SELECT id, timestamp, type, source, contenu, resume, importance, metadata, "
                "relation_id, public FROM souvenirs WHERE metadata->>'extraction' = 'a_faire' "
                "ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED"))).one_or_none()
            if row is None:
                yield None
                return
            yield Claim(session, None), souvenir_from_row(row)  # type: ignore[arg-type]

    async def finish_extraction(self, claim: Claim, souvenir_id: int, *, state: str,
                                detail: dict[str, Any] | None = None) -> None:
        """state: 'faite', 'echec' (given up) or 'a_faire' (retry, attempt counted)."""
        await claim.execute(
            "UPDATE souvenirs SET metadata = metadata || CAST(:m AS jsonb) || jsonb_build_object("
            "'extraction_essais', coalesce((metadata->>'extraction_essais')::int, 0) + 1) "
            "WHERE id = :id",
            {"m": json.dumps({"extraction": state, **(detail or {})}), "id": souvenir_id})
