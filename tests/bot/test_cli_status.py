"""`axi status` as Anthony runs it: against a real `axi run` (its live /health read over
loopback, channels and scheduler included) and with nothing running (the report computed
from the database, said so, exit 1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from memory.store import MemoryStore
from tests.channels.test_telegram_processes import AxiRun
from tests.fakes.dovecot import free_port
from tests.waiting import until


def status(env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", "status", *extra], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


async def test_status_without_axi_run_reads_the_database_and_says_so(
        cli_env: dict[str, str], store: MemoryStore, tmp_path: Path) -> None:
    env = {**cli_env, "AXI_HTTP_PORT": str(free_port())}
    result = status(env, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "NOT answering" in result.stdout
    assert "database" in result.stdout and "Local model share over 7 days" in result.stdout
    report = json.loads(status(env, tmp_path, "--json").stdout)
    assert report["running"] is False
    components = report["report"]["components"]
    assert components["database"]["status"] == "ok"
    assert components["backup"]["local"]["status"] == "disabled"  # no repository: not a failure


async def test_status_reads_the_running_axi(cli_env: dict[str, str], store: MemoryStore,
                                            tmp_path: Path) -> None:
    port = free_port()
    env = {**cli_env, "AXI_HTTP_PORT": str(port)}
    axi = AxiRun(env, tmp_path / "axi-run.log")
    try:
        await until(lambda: axi.alive() and status(env, tmp_path).returncode == 0, 60,
                    message="axi status never saw axi run")
        result = status(env, tmp_path, "--json")
        report = json.loads(result.stdout)
        assert report["running"] is True and report["report"]["status"] in {"ok", "degraded"}
        assert "console" in report["report"]["components"]["channels"]  # live parts
        shown = status(env, tmp_path).stdout
        assert f"answering at http://127.0.0.1:{port}/health" in shown
        assert "channels.web" in shown or "channels.console" in shown
    finally:
        axi.stop()
