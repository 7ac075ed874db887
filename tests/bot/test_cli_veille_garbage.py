"""`axi veille` and `axi dvf` against what an adversarial review threw at them (JSON that
PostgreSQL cannot store, terminal escapes and Rich markup from a source, malformed URLs):
one English line, never a traceback, nothing printed that drives the terminal. Real
subprocesses on the test database, as in tests/bot/test_cli_veille.py (whose fixtures and
helpers are reused)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bot.test_cli_veille import Run, ok, one_line_error, source, veille  # noqa: F401
from tests.jobs.kind_double import SourceState

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("option,value", [
    ("--config", '{"a": NaN}'),
    ("--config", '{"a": 1e999}'),
    ("--config", '{"a": "\\u0000"}'),
    ("--recipients", '{"courriel": ["x\\u0000"]}'),
])
def test_json_postgres_cannot_store_is_a_one_line_error(veille: Run, option: str,  # noqa: F811
                                                        value: str) -> None:
    """Python's json accepts NaN/Infinity and "\\u0000"; PostgreSQL's jsonb refuses them:
    `axi veille add|edit --config/--recipients` then prints a 150-line SQLAlchemy
    traceback (bot/cli_veille._json_option → memory/veilles.add_veille)."""
    ok(veille("add", "essai", "--type", "essai", "--schedule", "0 8 * * *"))
    one_line_error(veille("edit", "essai", option, value), contains="")
    one_line_error(veille("add", "autre", "--type", "essai", "--schedule", "0 8 * * *",
                          option, value), contains="")


def test_a_dry_run_never_writes_terminal_escapes_from_a_source(
        veille: Run, source: tuple[SourceState, str]) -> None:  # noqa: F811
    """`axi veille run NAME --dry-run` prints digest.text to the terminal; source text
    keeps ESC (jobs/dpe_rows._text only folds whitespace; rich strips BEL but not ESC), so
    an ADEME address can recolour, retitle or plant OSC-8 hyperlinks in the operator's
    terminal."""
    state, url = source
    state.items = [{"key": "a",
                    "titre": "12 rue \x1b]8;;https://evil.example\x1b\\ici\x1b]8;;\x1b\\ "
                             "\x1b[8mcaché\x1b[0m"}]
    ok(veille("add", "essai", "--type", "essai", "--schedule", "0 8 * * *",
              "--config", json.dumps({"url": url})))
    dry = veille("run", "essai", "--dry-run")
    assert "\x1b" not in ok(dry), repr(dry.stdout)


@pytest.mark.parametrize("url", ["http://[::1", "https://127.0.0.1:99999/x.csv"])
def test_dvf_import_of_a_malformed_url_is_a_one_line_error(cli_env: dict[str, str],
                                                           tmp_path: Path, url: str) -> None:
    """`axi dvf import URL` with a malformed URL: a traceback (httpx.InvalidURL /
    OverflowError escaping jobs/dvf_import._chunks through bot/cli_dvf.py)."""
    result = subprocess.run([sys.executable, "-m", "bot.cli", "dvf", "import", url],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={**cli_env, "PYTHONPATH": str(ROOT)})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-400:]


def test_show_and_history_print_source_text_as_text(
        veille: Run, source: tuple[SourceState, str]) -> None:  # noqa: F811
    """bot/cli_support.print_table hands cell strings to rich.Table.add_row, which parses
    them as Rich markup: a source's reason or a run's error holding "[/…]" makes
    `axi veille show` / `history` die with a MarkupError traceback ("[link=…]" would plant
    a terminal hyperlink)."""
    state, url = source
    state.items = [{"key": "a", "titre": "Maison a"}]
    state.extra = {"broken": {"s2": "réponse [/b] illisible"}}
    ok(veille("add", "essai", "--type", "essai", "--schedule", "0 8 * * *",
              "--config", json.dumps({"url": url})))
    veille("run", "essai")
    shown = veille("show", "essai")
    assert "Traceback" not in shown.stderr, shown.stderr[-300:]
    history = veille("history", "essai")
    assert "Traceback" not in history.stderr, history.stderr[-300:]
