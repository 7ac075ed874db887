"""Fixtures of the veilles' engine tests: the `essai` plug-in type and its loopback
source, a real Notifier on the test database, a clock the test moves."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from bot.config import Settings
from bot.jobs_contract import JobServices
from bot.notify import Notifier
from jobs import kinds
from jobs.engine import Engine
from memory.store import MemoryStore
from tests.fakes.loopback import LoopbackServer
from tests.jobs.kind_double import EssaiVeille, SourceState, source_app


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Env:
    store: MemoryStore
    services: JobServices
    engine: Engine
    source: SourceState
    clock: Clock
    url: str

    async def notifications(self) -> list[Any]:
        async with self.store.db.sessions() as session:
            return list((await session.execute(text(
                "SELECT cle, destinataire, sujet, texte FROM notifications ORDER BY id"))).all())

    async def count(self, table: str) -> int:
        async with self.store.db.sessions() as session:
            return int(await session.scalar(text(f"SELECT count(*) FROM {table}")) or 0)


@pytest.fixture
def source() -> Iterator[tuple[SourceState, str]]:
    state = SourceState()
    with LoopbackServer(source_app(state)) as server:
        yield state, f"{server.url}/items"


@pytest.fixture(autouse=True)
def essai_kind() -> Iterator[None]:
    kinds.register("essai", EssaiVeille)
    yield
    kinds.unregister("essai")


def job_services(store: MemoryStore, clock: Clock, **settings: Any) -> JobServices:
    cfg = Settings(_env_file=None, **{"AXI_AGENCY_EMAIL": "agence@example.fr",  # type: ignore[call-arg]
                                      "AXI_AGENCY_CC": "anthony@example.fr", **settings})
    notifier = Notifier(store, configured=lambda: {"telegram", "email"},
                        fallback=("console", "-"), quiet_hours=None, clock=clock)
    return JobServices(store=store, settings=cfg, notify=notifier.notify,
                       lock=store.advisory_lock, clock=clock)


@pytest.fixture
async def env(store: MemoryStore, source: tuple[SourceState, str]) -> Env:
    state, url = source
    await store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
    clock = Clock(datetime(2026, 11, 30, 7, 0, tzinfo=UTC))
    services = job_services(store, clock)
    await store.add_veille("essai", "essai", "0 8 * * *", config={"url": url},
                           known_types=kinds.known_types())
    return Env(store, services, Engine(services), state, clock, url)
