"""MemoryStore: the only way Axi's code touches memory. Souvenirs are written here;
recall, the lexicon, facts, people and consignes come from the mixins beside it."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from memory.axis_mailbox import AxisMailboxMixin
from memory.confirmations import ConfirmationsMixin
from memory.consignes import ConsignesMixin
from memory.database import Database
from memory.dvf import DvfMixin
from memory.embeddings import EmbeddingsMixin
from memory.errors import InvalidInput, NotFound, row_id
from memory.extraction_queue import ExtractionQueueMixin
from memory.facts import FactsMixin
from memory.forget import ForgetMixin
from memory.health_queries import HealthQueriesMixin
from memory.hybrid_recall import HybridRecallMixin
from memory.inbox_accept import InboxAcceptMixin
from memory.inbox_admin import InboxAdminMixin
from memory.lexicon import LexiconMixin, uncount_lexemes
from memory.llm_calls import LLMCallsMixin
from memory.locks import LocksMixin
from memory.messages import MessagesMixin
from memory.notifications import NotificationsMixin
from memory.operations import OperationsMixin
from memory.outbox import OutboxMixin
from memory.people import PeopleMixin
from memory.recall import RecallMixin
from memory.records import SouvenirRecord, souvenir_from_row
from memory.rows import SOUVENIR_COLUMNS, NewSouvenir, insert_souvenir, prepare_souvenir
from memory.send_attempts import SendAttemptsMixin
from memory.site_contacts import SiteContactsMixin
from memory.tokens import TokensMixin
from memory.veilles import VeillesMixin
from memory.warmup import WarmupMixin

_SOUVENIR_COLUMNS = SOUVENIR_COLUMNS
_prepare = prepare_souvenir


def translate_db_error(exc: DBAPIError) -> Exception:
    message = str(exc.orig) if exc.orig is not None else str(exc)
    if "too long for tsvector" in message or "exceeds the maximum" in message:
        return InvalidInput("text too long to index; split it into smaller souvenirs")
    if "foreign key" in message and "relation_id" in message:
        return NotFound("unknown person (relation_id)")
    if "foreign key" in message:
        return NotFound(f"a referenced row does not exist ({message.splitlines()[0]})")
    return exc


class MemoryStore(RecallMixin, LexiconMixin, WarmupMixin, FactsMixin, PeopleMixin,
                  ConsignesMixin, InboxAcceptMixin, MessagesMixin, OutboxMixin, LLMCallsMixin,
                  ExtractionQueueMixin,
                  EmbeddingsMixin, HybridRecallMixin, NotificationsMixin, ConfirmationsMixin, InboxAdminMixin,
                  LocksMixin, TokensMixin, ForgetMixin, AxisMailboxMixin, SiteContactsMixin,
                  VeillesMixin, DvfMixin, HealthQueriesMixin, OperationsMixin, SendAttemptsMixin):
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
        prepare_souvenir(item)  # InvalidInput before opening a transaction
        try:
            async with self.db.sessions.begin() as session:
                row = await insert_souvenir(session, item)
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

    async def imported_keys(self, source: str, keys: Iterable[str]) -> set[str]:
        """Which of these import keys were imported from `source` before: recorded in its
        ledger (`curseurs_canal`, canal `import:<source>`: kept when the souvenir or
        consigne is later forgotten or removed, so a new import never brings it back) or
        held by one of its souvenirs (metadata `cle_import`, read through the `source`
        index). An import skips them."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        async with self.db.reads() as session:
            # joins, not `= ANY(array)`: a rerun over 100,000 items stays a hash join
            rows = await session.execute(text(
                "WITH w(k) AS (SELECT unnest(CAST(:k AS text[]))) "
                "SELECT c.cle AS k FROM curseurs_canal c JOIN w ON c.cle = w.k "
                "WHERE c.canal = :c "
                "UNION SELECT s.metadata->>'cle_import' FROM souvenirs s "
                "JOIN w ON s.metadata->>'cle_import' = w.k WHERE s.source = :s"),
                {"c": f"import:{source}"[:30], "s": source, "k": wanted})
            return {r.k for r in rows}

    async def record_imported(self, source: str, keys: Iterable[str]) -> None:
        """Add keys to `source`'s import ledger (see `imported_keys`)."""
        wanted = list(dict.fromkeys(keys))
        async with self.db.sessions.begin() as session:
            for start in range(0, len(wanted), 5000):
                await session.execute(text(
                    "INSERT INTO curseurs_canal (canal, cle, valeur) SELECT :c, k, 'importé' "
                    "FROM unnest(CAST(:k AS text[])) AS k ON CONFLICT (canal, cle) DO NOTHING"),
                    {"c": f"import:{source}"[:30], "k": wanted[start:start + 5000]})

    async def get_souvenir(self, souvenir_id: int) -> SouvenirRecord:
        souvenir_id = row_id(souvenir_id, "souvenir")
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
        souvenir_id = row_id(souvenir_id, "souvenir")
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
            await uncount_lexemes(session, [souvenir_id])  # its words leave the lexicon too
            await session.execute(text("DELETE FROM souvenirs WHERE id = :id"), {"id": souvenir_id})
        return souvenir_from_row(row)

    async def count_souvenirs(self) -> int:
        async with self.db.sessions() as session:
            return int(await session.scalar(text("SELECT count(*) FROM souvenirs")) or 0)
