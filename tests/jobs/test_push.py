"""Uptime Kuma push monitors (jobs/push.py) against a loopback Kuma: a ping carries the
status, the message and the duration; an unreachable or refusing monitor never breaks
the run that succeeded and never shows its URL (it holds the monitor's token) in the log;
each veille run that worked pings AXI_PUSH_URL_VEILLES, a failed one does not."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from jobs import push
from jobs.engine import Engine
from tests.fakes.kuma_server import FakeKuma
from tests.fakes.loopback import LoopbackServer
from tests.jobs.conftest import Env, job_services
from tests.jobs.test_engine import items

TOKEN = secrets.token_urlsafe(16)  # a test-only monitor token, new each run


@pytest.fixture
def kuma() -> Iterator[tuple[FakeKuma, LoopbackServer]]:
    fake = FakeKuma(known={TOKEN})
    with fake.server() as server:
        yield fake, server


async def test_a_ping_reaches_the_monitor_with_status_message_and_duration(
        kuma: tuple[FakeKuma, LoopbackServer]) -> None:
    fake, server = kuma
    # the URL as Uptime Kuma shows it, with its own example parameters
    url = SecretStr(f"{server.url}/api/push/{TOKEN}?status=up&msg=OK&ping=")
    assert await push.ping(url, ok=True, message="veille dpe :  ok,\n3 nouveautés",
                           duration_s=1.2345)
    assert await push.ping(url, ok=False, message="", duration_s=None)
    assert fake.pings == [
        {"token": TOKEN, "status": "up", "msg": "veille dpe : ok, 3 nouveautés", "ping": "1234"},
        {"token": TOKEN, "status": "down", "msg": "KO", "ping": ""}]
    assert not await push.ping(None, ok=True, message="x")
    assert not await push.ping(SecretStr("  "), ok=True, message="x")
    assert len(fake.pings) == 2


async def test_a_refusing_or_unreachable_monitor_never_raises_nor_logs_its_url(
        kuma: tuple[FakeKuma, LoopbackServer], caplog: pytest.LogCaptureFixture) -> None:
    _, server = kuma
    unknown = SecretStr(f"{server.url}/api/push/unknownMonitorToken")
    assert not await push.ping(unknown, ok=True, message="ok")
    assert "HTTP 404" in caplog.text
    url = SecretStr(f"{server.url}/api/push/{TOKEN}")
    server.stop()
    assert not await push.ping(url, ok=True, message="ok")
    assert "push monitor unreachable (ConnectError)" in caplog.text
    assert "unknownMonitorToken" not in caplog.text and TOKEN not in caplog.text
    assert str(server.port) not in caplog.text  # nor any part of the URL


async def test_each_veille_run_that_worked_pings_the_veilles_monitor(
        env: Env, kuma: tuple[FakeKuma, LoopbackServer]) -> None:
    fake, server = kuma
    services = job_services(env.store, env.clock,
                            AXI_PUSH_URL_VEILLES=f"{server.url}/api/push/{TOKEN}")
    engine = Engine(services)
    env.source.items = items("a", "b")
    assert (await engine.run("essai")).state == "ok"
    [ping] = fake.pings
    assert ping["status"] == "up" and ping["msg"] == "veille essai : ok, 2 nouveauté(s)"
    assert int(ping["ping"]) >= 0

    env.source.status = 500  # the source fails: the run fails, the monitor hears nothing
    assert (await engine.run("essai")).state == "echec"
    assert len(fake.pings) == 1

    env.source.status = 200
    env.source.extra = {"broken": {"s2": "page introuvable"}}
    assert (await engine.run("essai")).state == "partiel"  # it ran: Axi is alive
    assert [p["msg"] for p in fake.pings[1:]] == ["veille essai : partiel, 0 nouveauté(s)"]
