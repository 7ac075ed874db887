"""`axi veille …` as the operator uses it: real subprocesses on the test database, with
the `essai` plug-in type (tests/jobs/kind_double.py) fetching from a loopback server.
Garbage in any option is one line on stderr, never a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memory.store import MemoryStore
from tests.fakes.loopback import LoopbackServer
from tests.jobs.kind_double import SourceState, source_app

ROOT = Path(__file__).resolve().parents[2]
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def source() -> Iterator[tuple[SourceState, str]]:
    state = SourceState()
    with LoopbackServer(source_app(state)) as server:
        yield state, f"{server.url}/items"


@pytest.fixture
def veille(cli_env: dict[str, str], tmp_path: Path) -> Run:
    env = {**cli_env, "PYTHONPATH": str(ROOT)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tests.jobs.kind_double", "veille", *args],
                              capture_output=True, text=True, env=env, timeout=120,
                              cwd=tmp_path)  # no .env from the project root

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], *, contains: str,
                   code: int | None = None) -> None:
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.stderr
    assert contains in lines[0], lines[0]


def test_add_list_show_edit_enable_disable(veille: Run, source: tuple[SourceState, str]
                                           ) -> None:
    _, url = source
    config = json.dumps({"url": url})
    ok(veille("add", "essai", "--type", "essai", "--schedule", "0 8 * * *",
              "--config", config))
    listed = json.loads(ok(veille("list", "--json")))
    assert [(v["name"], v["type"], v["active"], v["schedule"], v["last_run"], v["items"])
            for v in listed] == [("essai", "essai", True, "0 8 * * *", None, 0)]
    assert listed[0]["next_run"].endswith(("T08:00:00+01:00", "T08:00:00+02:00"))
    assert "essai" in ok(veille("list"))
    ok(veille("edit", "essai", "--schedule", "30 7 * * 1-5", "--recipients",
              '{"courriel": ["agence@example.fr"], "resume": []}'))
    shown = json.loads(ok(veille("show", "essai", "--json")))
    assert shown["schedule"] == "30 7 * * 1-5" and shown["config"] == {"url": url}
    assert shown["recipients"] == {"courriel": ["agence@example.fr"], "resume": []}
    assert "Recipients" in ok(veille("show", "essai"))
    ok(veille("disable", "essai"))
    assert json.loads(ok(veille("list", "--json")))[0]["next_run"] is None
    ok(veille("enable", "essai"))
    assert json.loads(ok(veille("list", "--json")))[0]["active"] is True


def test_garbage_in_every_option_is_a_one_line_error(veille: Run, tmp_path: Path) -> None:
    ok(veille("add", "essai", "--type", "essai", "--schedule", "0 8 * * *"))
    one_line_error(veille("add", "x", "--type", "essai", "--schedule", "61 * * * *"),
                   contains="invalid schedule")
    one_line_error(veille("add", "x", "--type", "essai", "--schedule", "*/5 * * * *"),
                   contains="more often than once every 60 minutes")
    one_line_error(veille("add", "x", "--type", "essai", "--schedule", "0 8 31 2 *"),
                   contains="never runs")
    one_line_error(veille("add", "x", "--type", "essai", "--schedule", "* * *"),
                   contains="5 fields")
    one_line_error(veille("add", "x", "--type", "nope", "--schedule", "0 8 * * *"),
                   contains="unknown veille type 'nope'")
    one_line_error(veille("add", "Bad Name", "--type", "essai", "--schedule", "0 8 * * *"),
                   contains="a veille's name")
    one_line_error(veille("add", "essai", "--type", "essai", "--schedule", "0 8 * * *"),
                   contains="already exists")
    one_line_error(veille("add", "x", "--type", "essai", "--schedule", "0 8 * * *",
                          "--config", "{url:"), contains="--config is not valid JSON", code=2)
    one_line_error(veille("add", "x", "--type", "essai", "--schedule", "0 8 * * *",
                          "--config", "[1]"), contains="must be a JSON object")
    one_line_error(veille("add", "x", "--type", "essai", "--schedule", "0 8 * * *",
                          "--config", f"@{tmp_path / 'absent.json'}"),
                   contains="cannot read --config file")
    one_line_error(veille("edit", "essai", "--recipients", '{"fax": ["x"]}'),
                   contains="unknown recipient role 'fax'")
    one_line_error(veille("edit", "essai", "--recipients", '{"courriel": "agence"}'),
                   contains="list of non-empty")
    one_line_error(veille("edit", "essai"), contains="nothing to change")
    one_line_error(veille("edit", "essai", "--schedule", "0 25 * * *"),
                   contains="invalid schedule")
    for args in (("show", "absente"), ("history", "absente"), ("run", "absente"),
                 ("enable", "absente")):
        one_line_error(veille(*args), contains="no veille named 'absente'")
    one_line_error(veille("run", "essai", "--output", str(tmp_path / "x.txt")),
                   contains="--output goes with --dry-run", code=2)
    bad_limit = veille("history", "essai", "--limit", "0")
    assert bad_limit.returncode == 2 and "Traceback" not in bad_limit.stderr
    assert json.loads(ok(veille("list", "--json")))[0]["schedule"] == "0 8 * * *"


def test_run_dry_run_and_history(veille: Run, source: tuple[SourceState, str],
                                 tmp_path: Path) -> None:
    state, url = source
    state.items = [{"key": "a", "titre": "Maison <a>"}, {"key": "b", "titre": "Grange b"}]
    ok(veille("add", "essai", "--type", "essai", "--schedule", "0 8 * * *",
              "--config", json.dumps({"url": url})))
    dry = veille("run", "essai", "--dry-run")
    assert "Subject: Veille essai : 2 nouveauté(s)" in ok(dry)
    assert "Maison <a>\nGrange b" in dry.stdout and "nothing sent" in dry.stderr
    page = tmp_path / "digest.html"
    ok(veille("run", "essai", "--dry-run", "--output", str(page)))
    assert page.read_text(encoding="utf-8") == "<ul><li>Maison &lt;a&gt;</li><li>Grange b</li></ul>"
    ok(veille("run", "essai", "--dry-run", "--output", str(tmp_path / "digest.txt")))
    assert (tmp_path / "digest.txt").read_text(encoding="utf-8") == "Maison <a>\nGrange b"
    assert json.loads(ok(veille("history", "essai", "--json"))) == []

    assert "ok, 2 seen, 2 new, 2 reported" in ok(veille("run", "essai"))
    assert "ok, 2 seen, 0 new, 0 reported" in ok(veille("run", "essai"))
    state.status = 500
    one_line_error(veille("run", "essai"), contains="failed: la récupération a échoué",
                   code=1)
    runs = json.loads(ok(veille("history", "essai", "--json", "--limit", "2")))
    assert [(r["state"], r["trigger"], r["seen"], r["new"]) for r in runs] == [
        ("echec", "manuel", 0, 0), ("ok", "manuel", 2, 0)]
    shown = json.loads(ok(veille("show", "essai", "--json")))
    assert shown["sources"][0]["source"] == "*" and shown["sources"][0]["broken"]
    assert shown["items"] == 2 and shown["unreported"] == 0


async def test_a_run_held_by_another_process_is_skipped(
        veille: Run, store: MemoryStore, source: tuple[SourceState, str]) -> None:
    _, url = source
    await asyncio.to_thread(lambda: ok(veille(
        "add", "essai", "--type", "essai", "--schedule", "0 8 * * *",
        "--config", json.dumps({"url": url}))))
    async with store.advisory_lock("veille:essai") as held:
        assert held
        result = await asyncio.to_thread(veille, "run", "essai")
    one_line_error(result, contains="another Axi process is running it now", code=4)
    runs = json.loads(await asyncio.to_thread(lambda: ok(veille("history", "essai", "--json"))))
    assert [(r["state"], r["error"]) for r in runs] == [
        ("ignore", "une autre instance d'Axi l'exécute déjà")]
