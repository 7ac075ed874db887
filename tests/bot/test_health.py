"""Axi's health (issue 13 §2) on a real assistant: `/health` over real HTTP turns 503
when the database goes away (a TCP proxy the test cuts: the shared PostgreSQL is never
stopped) and 200 when it returns; the report reads backups, verifications and veilles
from their tables; the component monitor tells Ludo and the administrateur once when a
part breaks and once when it recovers (the database's outage once, after it); the
metrics count what really happened."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.app import Axi
from bot.channel import ChannelServices, Delivery
from bot.metrics import AxiMetrics
from channels.web import WebChannel
from llm.gate import Priority
from memory.database import Database
from tests.bot.conftest import say
from tests.bot.test_pipeline import make_settings
from tests.conftest import empty_tables
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.tcp_proxy import TcpProxy
from tests.waiting import until


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@asynccontextmanager
async def proxied(db: Database, data_dir: Path, ollama: FakeOllama,
                  anthropic: FakeAnthropic | None, channels: Mapping[str, Any], *,
                  alerting: bool = False, clock: Clock | None = None,
                  **extra: Any) -> AsyncIterator[tuple[Axi, TcpProxy]]:
    """An assistant whose database connections pass through a proxy the test can cut."""
    await empty_tables(db)
    proxy = TcpProxy.for_database(db.engine.url)
    await proxy.start()
    cfg = make_settings(ollama, anthropic, proxy.url_for(db.engine.url), data_dir, **extra)
    try:
        async with Axi(cfg, dict(channels), alerting=alerting, clock=clock) as app:
            yield app, proxy
    finally:
        await proxy.close()


async def test_health_turns_503_when_the_database_goes_away_and_200_when_it_returns(
    db: Database, test_data_dir: Path, ollama_server: FakeOllama
) -> None:
    web = WebChannel("127.0.0.1", 0)
    async with proxied(db, test_data_dir, ollama_server, None, {"web": web}) as (axi, proxy):
        await axi.start_channels()
        url = f"http://127.0.0.1:{web.port}/health"
        async with httpx.AsyncClient(timeout=15) as client:
            first = await client.get(url)
            assert first.status_code == 200, first.json()["reasons"]
            assert first.json()["components"]["database"]["status"] == "ok"
            assert first.json()["components"]["llm_fallback"]["status"] == "disabled"

            await proxy.cut()
            down = await client.get(url)
            assert down.status_code == 503
            report = down.json()
            assert report["status"] == "error"
            database = report["components"]["database"]
            assert database["status"] == "error"
            assert database["reason"].startswith("base de données injoignable (")
            assert report["components"]["queues"]["status"] == "unknown"
            assert any(r.startswith("database : base de données injoignable")
                       for r in report["reasons"])
            # through the tunnel: the status only
            public = await client.get(url, headers={"CF-Connecting-IP": "203.0.113.9"})
            assert public.status_code == 503 and public.json() == {"status": "error"}

            await proxy.restore()

            async def healthy() -> httpx.Response | None:
                response = await client.get(url)
                return response if response.status_code == 200 else None

            back = await until(healthy, 30, message="/health stayed 503 after the database "
                                                    "came back")
            assert back.json()["components"]["database"]["status"] == "ok"
            assert back.json()["components"]["queues"]["status"] == "ok"


async def test_the_report_reads_backups_verifications_and_veilles(
    db: Database, database_url: str | None, test_data_dir: Path, ollama_server: FakeOllama,
    anthropic_server: FakeAnthropic
) -> None:
    await empty_tables(db)
    cfg = make_settings(ollama_server, anthropic_server, database_url, test_data_dir,
                        AXI_BACKUP_REPOSITORY="/srv/sauvegardes/axi", AXI_LOCAL_RESERVE_S=120)
    async with Axi(cfg, {}) as axi:
        async with axi.db.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO operations (type, depot, debut, fin, etat, erreur) VALUES "
                "('sauvegarde', 'local', now() - interval '3 hours', "
                " now() - interval '2 hours', 'ok', NULL),"
                "('verification', 'local', now() - interval '9 days', "
                " now() - interval '9 days', 'ok', NULL)"))
        dpe = await axi.store.add_veille("dpe", "dpe", "0 8 * * *")
        dvf = await axi.store.add_veille("dvf", "dvf", "0 9 * * 1")
        await axi.store.start_run(dvf.id, declenchement="manuel", prevu_pour=None, etat="ok")
        await axi.store.start_run(dpe.id, declenchement="manuel", prevu_pour=None, etat="ok")
        await axi.store.start_run(dpe.id, declenchement="planifie", prevu_pour=None,
                                  etat="echec", erreur="ADEME injoignable")
        async with axi.gate.turn(Priority.INNER_LIVE):  # Ludo used the local model
            pass
        report = await axi.health()
    parts = report["components"]
    gate = parts["llm_local"]["gate"]  # the reserve's state, for the operator
    assert gate["reserve_s"] == 120 and 119 < gate["reserved_s"] <= 120
    assert gate["held"] == [] and gate["waiting"] == []
    assert parts["backup"]["local"]["status"] == "ok"
    assert 1.9 < parts["backup"]["local"]["age_hours"] < 2.1
    assert parts["backup"]["distant"]["status"] == "disabled"  # not configured: no failure
    assert parts["verify"]["local"]["status"] == "degraded"
    assert "il y a 9 jours (plus de 8 jours)" in parts["verify"]["local"]["reason"]
    assert parts["veilles"]["dvf"]["status"] == "ok"
    assert parts["veilles"]["dpe"]["status"] == "degraded"
    assert parts["veilles"]["dpe"]["reason"] == "dernier passage en échec : ADEME injoignable"
    assert parts["veilles"]["dpe"]["last_ok_at"] is not None
    assert parts["llm_fallback"]["status"] == "ok"
    # degraded parts keep the answer 200: they do not stop Axi from serving people
    assert report["status"] == "degraded"
    assert sorted(r.split(" : ")[0] for r in report["reasons"]) == ["veilles.dpe",
                                                                     "verify.local"]


class SwitchChannel:
    """A Telegram stand-in the test breaks (its loop dies, it cannot start) and repairs."""

    name = "telegram"

    def __init__(self) -> None:
        self.broken = False
        self.breaks = asyncio.Event()
        self.sent: list[Delivery] = []

    async def start(self, services: ChannelServices) -> None:
        if self.broken:
            raise ConnectionError("Telegram injoignable")
        self.breaks = asyncio.Event()

    async def run(self) -> None:
        await self.breaks.wait()
        raise ConnectionError("Telegram injoignable")

    async def send(self, delivery: Delivery) -> str | None:
        self.sent.append(delivery)
        return f"tg-{len(self.sent)}"

    async def stop(self) -> None:
        return None

    def live(self, conversation: str, thread_ref: str | None = None) -> None:
        return None

    def fail(self) -> None:
        self.broken = True
        self.breaks.set()


async def _alerts(axi: Axi) -> list[Any]:
    async with axi.db.sessions() as session:
        return list((await session.execute(text(
            "SELECT cle, destinataire, texte, urgente FROM notifications "
            "WHERE cle LIKE 'composant:%' ORDER BY id"))).all())


async def test_a_broken_component_alerts_ludo_and_anthony_once_and_once_on_recovery(
    db: Database, test_data_dir: Path, ollama_server: FakeOllama,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import backoff
    monkeypatch.setattr(backoff, "CHANNEL_RESTART", backoff.Backoff(base_s=0.05, cap_s=0.05))
    channel, clock = SwitchChannel(), Clock()
    async with proxied(db, test_data_dir, ollama_server, None, {"telegram": channel},
                       alerting=True, clock=clock) as (axi, proxy):
        await axi.store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
        await axi.store.add_person("Anthony", relation="administrateur",
                                   identities=[("telegram", "3003")])
        await axi.store.add_person("Julie", relation="équipe", identities=[("telegram", "4004")])
        axi.monitor_interval_s = 3600.0  # the test probes: one probe per step
        await axi.start_channels()
        axi.start_loops(worker=False, extractor=False, maintenance=False, embeddings=False)
        monitor = axi.monitor
        assert monitor is not None
        await until(lambda: monitor.probes >= 1, 10)  # the loop's own first probe is done

        async def probe(seconds: float = 60.0) -> list[Any]:
            clock.advance(seconds)
            return await monitor.probe()

        assert await probe() == []
        channel.fail()
        await until(lambda: axi.channel_states["telegram"].state == "restarting", 10)
        assert await probe() == []  # one failing probe: maybe a blip, nothing said
        [broken] = await probe()
        assert broken.kind == "panne" and broken.component == "channels.telegram"
        for _ in range(3):  # still broken: never said again
            assert await probe() == []
        alerts = await _alerts(axi)
        assert sorted(a.destinataire for a in alerts) == ["Anthony", "Ludo"]  # not Julie
        assert all(a.urgente and "le canal Telegram" in a.texte
                   and "Telegram injoignable" in a.texte and "Je ne te le redirai pas" in a.texte
                   for a in alerts)

        channel.broken = False
        await until(lambda: axi.channel_states["telegram"].state == "ok", 10)
        assert await probe() == []  # one good probe is not a recovery yet
        [recovered] = await probe()
        assert recovered.kind == "retour"
        assert await probe() == []
        alerts = await _alerts(axi)
        assert len(alerts) == 4 and all("refonctionne" in a.texte for a in alerts[2:])
        await until(lambda: len(channel.sent) == 4, 10, message="the alerts were not sent")
        assert sorted({d.address for d in channel.sent}) == ["1001", "3003"]

        # the database away: nothing can be queued while it is (notify writes to it);
        # when it is back, one notice says the outage happened and ended
        await proxy.cut()
        for _ in range(4):
            assert await probe() == []
        await proxy.restore()
        assert await probe() == []
        [past] = await probe()
        assert past.kind == "passee" and past.component == "database"
        assert await probe() == []
        alerts = (await _alerts(axi))[4:]
        assert sorted(a.destinataire for a in alerts) == ["Anthony", "Ludo"]
        assert all("la base de données" in a.texte and "panne terminée" in a.texte
                   and "mes messages passent par la base de données" in a.texte
                   for a in alerts)


async def test_metrics_count_what_really_happened(db: Database, database_url: str | None,
                                                  test_data_dir: Path,
                                                  ollama_server: FakeOllama,
                                                  anthropic_server: FakeAnthropic) -> None:
    from tests.bot.conftest import assistant

    async with assistant(db, database_url, test_data_dir, ollama_server,
                         anthropic_server) as axi:
        await say(axi, "1001", "Bonjour Axi, quoi de neuf ?")
        body, content_type = await axi.metrics_text("")
    assert content_type.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(body.decode())
               for s in family.samples}

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    calls = value("axi_llm_calls_total", provider="ollama", task="conversation", outcome="ok")
    assert calls is not None and calls >= 1
    assert (value("axi_llm_tokens_total", provider="ollama", task="conversation",
                  kind="prompt") or 0) > 0
    assert value("axi_llm_latency_seconds_count", provider="ollama", task="conversation") == calls
    assert value("axi_messages_total", channel="telegram", direction="in") == 1
    assert value("axi_messages_total", channel="telegram", direction="out") == 1
    assert value("axi_queue_depth", queue="inbox") == 0
    assert value("axi_oldest_waiting_seconds", queue="inbox") == 0
    assert value("axi_component_ok", component="database") == 1
    assert value("axi_component_ok", component="llm_fallback") == 1
    assert value("axi_component_ok", component="backup.local") is None  # disabled: absent


def test_each_assistant_has_its_own_registry() -> None:
    one, two = AxiMetrics(), AxiMetrics()
    one.message("telegram", "in")
    one.error("worker")
    report: dict[str, Any] = {"components": {}}
    assert b'axi_messages_total{channel="telegram",direction="in"} 1.0' in one.render(report)[0]
    assert b'axi_messages_total{' not in two.render(report)[0]
    assert b'axi_errors_total{component="worker"} 1.0' in one.render(report)[0]
