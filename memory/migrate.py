"""Schema migrations (Alembic, scripts in memory/migrations/versions) applied on our own
async engine, plus the check every command runs before touching memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from memory.errors import NotMigrated

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None
    head: str
    pending: list[str]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _status(connection: Connection) -> SchemaStatus:
    current = MigrationContext.configure(connection).get_current_revision()
    script = ScriptDirectory.from_config(_config())
    head = head_revision()
    pending = [
        rev.revision
        for rev in reversed(list(script.iterate_revisions(head, current)))
        if rev.revision != current
    ]
    return SchemaStatus(current=current, head=head, pending=pending)


async def status(engine: AsyncEngine) -> SchemaStatus:
    async with engine.connect() as conn:
        return await conn.run_sync(_status)


async def upgrade(engine: AsyncEngine) -> tuple[SchemaStatus, SchemaStatus]:
    """Apply pending migrations (idempotent); return the status before and after.

    A transaction-level advisory lock makes concurrent upgrades wait for each other.
    """

    def _run(connection: Connection) -> tuple[SchemaStatus, SchemaStatus]:
        connection.exec_driver_sql("SELECT pg_advisory_xact_lock(4242001)")
        before = _status(connection)
        if not before.up_to_date:
            command.upgrade(_config(connection), "head")
        return before, _status(connection)

    async with engine.begin() as conn:
        return await conn.run_sync(_run)


async def require_current(engine: AsyncEngine) -> None:
    """Refuse to run on a database whose schema is not at head."""
    st = await status(engine)
    if st.current is None:
        raise NotMigrated("the database has no Axi schema yet. Run `axi db upgrade` first.")
    if not st.up_to_date:
        known = st.current in {r for r in _all_revisions()}
        if not known:
            raise NotMigrated(
                f"the database schema is at revision {st.current}, which this version of "
                "Axi does not know (newer code wrote it?). Upgrade Axi."
            )
        raise NotMigrated(
            f"the database schema is at revision {st.current} but this Axi needs {st.head} "
            f"({len(st.pending)} migration(s) pending). Run `axi db upgrade`."
        )


def _all_revisions() -> list[str]:
    script = ScriptDirectory.from_config(_config())
    return [rev.revision for rev in script.walk_revisions()]
