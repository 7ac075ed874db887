"""The composition root: commands that run no channel import no transport library, and
`Axi` starts, supervises and stops the channels it is given."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.app import Axi
from bot.channel import ChannelServices, CursorUpdate, Delivery, SendError
from bot.inbound import Inbound
from memory.database import Database
from tests.bot.test_pipeline import make_settings, scripted_reply
from tests.conftest import empty_tables
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

TRANSPORTS = ("uvicorn", "starlette", "ollama", "anthropic", "httpx", "telegram",
              "aioimaplib", "aiosmtplib", "channels.web", "channels.console")
PROBE = (
    "import sys\n"
    "from bot.cli import app\n"
    "try:\n"
    "    app(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    f"print('LOADED', [m for m in {TRANSPORTS!r} if m in sys.modules])\n"
)


def _loaded(args: list[str], env: dict[str, str]) -> list[str]:
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                       env=env, timeout=120, cwd=Path(__file__).parent)
    line = next((x for x in r.stdout.splitlines() if x.startswith("LOADED")), None)
    assert line is not None, r.stderr
    return json.loads(line.removeprefix("LOADED ").replace("'", '"'))


async def test_help_and_people_list_import_no_transport(db: Database, database_url: str | None,
                                                         test_data_dir: Path) -> None:
    await empty_tables(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC"))}
    if database_url:
        env["AXI_DATABASE_URL"] = database_url
    else:
        env["AXI_DATA_DIR"] = str(test_data_dir)
    assert _loaded(["--help"], env) == []
    assert _loaded(["people", "list"], env) == []
    # the probe sees them when a command does load them (it can fail)
    assert "ollama" in _loaded(["llm", "status", "--json"], env)


class FlakyChannel:
    """A channel whose receiving loop dies `failures` times before it settles."""

    name = "telegram"

    def __init__(self, failures: int):
        self.failures = failures
        self.starts = 0
        self.runs = 0
        self.services: ChannelServices | None = None
        self.settled = asyncio.Event()

    async def start(self, services: ChannelServices) -> None:
        self.starts += 1
        self.services = services

    async def run(self) -> None:
        self.runs += 1
        if self.runs <= self.failures:
            raise ConnectionError(f"connexion perdue n°{self.runs}")
        self.settled.set()
        await asyncio.Event().wait()  # receives until cancelled

    async def send(self, delivery: Delivery) -> str | None:
        raise SendError("rate limited", retry_after=42.0)

    async def stop(self) -> None:
        return None

    def live(self, conversation: str, thread_ref: str | None = None) -> None:
        return None


@pytest.fixture
async def flaky_axi(db: Database, database_url: str | None, test_data_dir: Path,
                    ollama_server: FakeOllama, anthropic_server: FakeAnthropic
                    ) -> AsyncIterator[tuple[Axi, FlakyChannel]]:
    await empty_tables(db)
    ollama_server.reply = scripted_reply
    channel = FlakyChannel(failures=2)
    async with Axi(make_settings(ollama_server, None, database_url, test_data_dir),
                   {"telegram": channel}) as app:  # type: ignore[dict-item]
        yield app, channel


async def test_a_dying_channel_is_restarted_and_shows_in_health(
    flaky_axi: tuple[Axi, FlakyChannel], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import backoff
    axi, channel = flaky_axi
    monkeypatch.setattr(backoff, "CHANNEL_RESTART", backoff.Backoff(base_s=0.05, cap_s=0.05))
    await axi.start_channels()
    await asyncio.wait_for(channel.settled.wait(), 10)
    assert channel.runs == 3 and channel.starts == 3  # started again before each run
    report = await axi.health()
    assert report["components"]["channels"]["telegram"]["restarts"] == 2
    assert report["components"]["channels"]["telegram"]["state"] == "ok" and report["status"] == "ok"
    assert "connexion perdue n°2" in report["components"]["channels"]["telegram"]["error"]


async def test_a_channel_down_makes_health_an_error(flaky_axi: tuple[Axi, FlakyChannel],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from bot import backoff
    axi, _ = flaky_axi
    monkeypatch.setattr(backoff, "CHANNEL_RESTART", backoff.Backoff(base_s=30, cap_s=30))
    await axi.start_channels()
    await until(lambda: axi.channel_states["telegram"].state == "restarting", 10,
                message="the dead loop was never noticed")
    report = await axi.health()
    telegram = report["components"]["channels"]["telegram"]
    assert report["status"] == "error" and telegram["state"] == "restarting"


async def test_services_accept_a_batch_with_its_cursor_atomically(
    flaky_axi: tuple[Axi, FlakyChannel]
) -> None:
    axi, channel = flaky_axi
    await axi.start_channels()
    services = channel.services
    assert services is not None
    now = datetime.now(UTC)
    batch = [Inbound(channel="telegram", sender="7", verified=False, text=f"n°{i}",
                     external_id=f"u{i}", received_at=now) for i in (1, 2)]
    ids = await services.accept_batch(batch, CursorUpdate("telegram", "offset", "3"))
    assert len(ids) == 2 and await services.read_cursor("telegram", "offset") == "3"
    # a redelivery (crash before the source was told) is recognised, cursor unchanged
    again = await services.accept_batch(batch, None)
    assert again == ids and await services.read_cursor("telegram", "offset") == "3"
    assert await axi.store.pending_counts() == {"entrant:en_attente": 2}


async def test_services_lock_is_held_by_one_process_at_a_time(
    flaky_axi: tuple[Axi, FlakyChannel]
) -> None:
    axi, _ = flaky_axi
    services = axi.services
    async with services.lock("telegram:poller") as first:
        async with services.lock("telegram:poller") as second:  # another connection
            assert first and not second
    async with services.lock("telegram:poller") as again:
        assert again and await again.still_held()


async def test_wait_reply_returns_when_the_reply_is_committed(
    flaky_axi: tuple[Axi, FlakyChannel]
) -> None:
    axi, _ = flaky_axi
    await axi.store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
    mid = await axi.pipeline.accept(Inbound(channel="telegram", sender="1001", verified=True,
                                            text="Bonjour", external_id="w1",
                                            received_at=datetime.now(UTC)))
    early = await axi.pipeline.wait_reply(mid, 0.0)
    assert early.state == "en_attente" and not early.answered
    waiting = asyncio.ensure_future(axi.pipeline.wait_reply(mid, 30))
    await asyncio.sleep(0)  # the waiter is waiting for progress
    assert await axi.pipeline.process_one()
    outcome = await asyncio.wait_for(waiting, 5)
    assert outcome.answered and outcome.reply == "Salut, tu peux compter sur moi."


async def test_retry_after_from_the_transport_is_honoured(
    flaky_axi: tuple[Axi, FlakyChannel]
) -> None:
    axi, _ = flaky_axi
    out_id = await axi.store.queue_outbound(canal="telegram", adresse="7", conversation="telegram:7",
                                            texte="Digest")
    assert await axi.pipeline.deliver_one()
    msg = await axi.store.get_message(out_id)
    assert msg.etat == "a_envoyer" and msg.prochain_essai is not None
    wait = (msg.prochain_essai - datetime.now(UTC)).total_seconds()
    assert 35 < wait <= 42


async def test_run_refuses_a_port_in_use_in_one_line(db: Database, database_url: str | None,
                                                     test_data_dir: Path,
                                                     ollama_server: FakeOllama) -> None:
    import socket
    await empty_tables(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC"))}
    env["OLLAMA_HOST"] = ollama_server.url
    if database_url:
        env["AXI_DATABASE_URL"] = database_url
    else:
        env["AXI_DATA_DIR"] = str(test_data_dir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env["AXI_HTTP_PORT"] = str(busy.getsockname()[1])
        r = subprocess.run([sys.executable, "-m", "bot.cli", "run"], capture_output=True,
                           text=True, env=env, timeout=120, cwd=Path(__file__).parent)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert "cannot listen on 127.0.0.1" in r.stderr and "AXI_HTTP_PORT" in r.stderr


async def test_health_is_served_by_the_web_channel(db: Database, database_url: str | None,
                                                   test_data_dir: Path,
                                                   ollama_server: FakeOllama) -> None:
    from channels.registry import for_run
    await empty_tables(db)
    cfg = make_settings(ollama_server, None, database_url, test_data_dir, AXI_HTTP_PORT=1)
    wiring = for_run(cfg)
    web = wiring.channels["web"]
    web.port = 0  # type: ignore[attr-defined]  # any free port
    async with Axi(cfg, wiring) as axi:
        await axi.start_channels()
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{web.port}/health")  # type: ignore[attr-defined]
        assert r.status_code == 200 and r.json()["components"]["channels"]["web"]["state"] == "ok"


class StubbornChannel(FlakyChannel):
    """Its loop dies once; then it cannot start twice, and its stop() always raises."""

    def __init__(self) -> None:
        super().__init__(failures=1)
        self.start_failures = 2
        self.calls: list[str] = []

    async def start(self, services: ChannelServices) -> None:
        self.calls.append("start")
        if self.starts >= 1 and self.start_failures:
            self.start_failures -= 1
            raise OSError("port busy")
        await super().start(services)

    async def run(self) -> None:
        self.calls.append("run")
        await super().run()

    async def stop(self) -> None:
        self.calls.append("stop")
        raise RuntimeError("cannot stop")


async def test_a_channel_runs_only_once_started_again(
    db: Database, database_url: str | None, test_data_dir: Path, ollama_server: FakeOllama,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import backoff
    await empty_tables(db)
    monkeypatch.setattr(backoff, "CHANNEL_RESTART", backoff.Backoff(base_s=0.01, cap_s=0.01))
    channel = StubbornChannel()
    async with Axi(make_settings(ollama_server, None, database_url, test_data_dir),
                   {"telegram": channel}) as axi:  # type: ignore[dict-item]
        await axi.start_channels()
        await asyncio.wait_for(channel.settled.wait(), 10)
        assert channel.calls == ["start", "run", "stop", "start", "stop", "start", "stop",
                                 "start", "run"]
        assert axi.channel_states["telegram"].state == "ok"


async def test_the_restart_backoff_starts_over_after_a_healthy_run(
    flaky_axi: tuple[Axi, FlakyChannel], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot import app as app_module
    from bot import backoff
    axi, channel = flaky_axi
    delays: list[int] = []

    class Recording:
        @staticmethod
        def delay(attempt: int) -> float:
            delays.append(attempt)
            return 0.0

    monkeypatch.setattr(backoff, "CHANNEL_RESTART", Recording())
    monkeypatch.setattr(app_module, "STABLE_RUN_S", 0.0)  # every run counts as healthy
    await axi.start_channels()
    await asyncio.wait_for(channel.settled.wait(), 10)
    assert delays == [1, 1]  # without the reset: [1, 2]


async def test_a_batch_skips_what_can_never_be_stored_and_still_moves_its_cursor(
    flaky_axi: tuple[Axi, FlakyChannel]
) -> None:
    axi, _ = flaky_axi
    now = datetime.now(UTC)
    batch = [Inbound(channel="telegram", sender="7", verified=False, text="bonjour",
                     external_id="b1", received_at=now),
             Inbound(channel="telegram", sender="7", verified=False, text="   ",
                     external_id="b2", received_at=now),
             Inbound(channel="telegram", sender="7", verified=False, text="x" * 1_000_050,
                     external_id="b3", received_at=now)]
    ids = await axi.services.accept_batch(batch, CursorUpdate("telegram", "offset", "9"))
    assert ids[0] is not None and ids[1] is None and ids[2] is not None
    assert await axi.services.read_cursor("telegram", "offset") == "9"
    long = await axi.store.get_message(ids[2])
    assert len(long.texte) == 1_000_000 and long.metadata["tronque"] == 1_000_050
    with pytest.raises(ValueError):
        await axi.services.accept_batch(batch[:1], CursorUpdate("email", "uid", "7"))
    unknown = await axi.services.wait_reply(987654, 0.0)
    assert unknown.state == "introuvable" and not unknown.answered
