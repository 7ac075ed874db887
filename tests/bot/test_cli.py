"""The `axi` CLI as scripts and Anthony use it: real subprocesses on the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memory.database import Database
from tests.conftest import empty_tables


@pytest.fixture
async def axi(db: Database, database_url: str | None, test_data_dir: Path):
    await empty_tables(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC"))}
    if database_url:
        env["AXI_DATABASE_URL"] = database_url
    else:
        env["AXI_DATA_DIR"] = str(test_data_dir)

    def run(*args: str, stdin: str | None = None, extra_env: dict[str, str] | None = None):
        return subprocess.run(
            [sys.executable, "-m", "bot.cli", *args], input=stdin, capture_output=True,
            text=True, env={**env, **(extra_env or {})}, timeout=120,
            cwd=Path(__file__).parent,  # no .env from the project root
        )

    return run


def _ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_people_memory_facts_consignes(axi) -> None:
    _ok(axi("people", "add", "Ludo", "--relation", "créateur", "--telegram", "123456",
            "--email", "ludo@example.fr", "--style", "tutoie, direct"))
    people = json.loads(_ok(axi("people", "list", "--json")))
    assert people[0]["personne"] == "Ludo"
    assert people[0]["comment_interagir"] == "tutoie, direct"
    assert {(i["canal"], i["adresse"]) for i in people[0]["identities"]} == {
        ("telegram", "123456"), ("email", "ludo@example.fr")}
    _ok(axi("memory", "add", "Compromis signé pour la longère de Vergt", "--type", "action",
            "--source", "telegram", "--person", "Ludo"))
    found = json.loads(_ok(axi("memory", "search", "longere signee", "--json")))
    assert [f["souvenir"]["contenu"] for f in found] == ["Compromis signé pour la longère de Vergt"]
    assert "Vergt" in _ok(axi("memory", "search", "vergt"))
    _ok(axi("facts", "add", "Ludo", "habite à", "Périgueux"))
    out = _ok(axi("facts", "add", "Ludo", "habite à", "Peyrebrune"))
    assert "superseded" in out
    facts = json.loads(_ok(axi("facts", "list", "--subject", "ludo", "--history", "--json")))
    assert {(f["objet"], f["valide_jusqu_a"] is None) for f in facts} == {
        ("Peyrebrune", True), ("Périgueux", False)}
    _ok(axi("consignes", "add", "Ne rien lancer sans accord de Ludo"))
    cons = json.loads(_ok(axi("consignes", "list", "--json")))
    assert cons[0]["texte"] == "Ne rien lancer sans accord de Ludo"
    shown = json.loads(_ok(axi("people", "show", "ludo", "--json")))
    assert shown["personne"] == "Ludo"


def test_bad_input_is_a_clear_error(axi) -> None:
    r = axi("memory", "add", "   ")
    assert r.returncode == 1 and "empty" in r.stderr and "Traceback" not in r.stderr
    r = axi("memory", "add", "-", stdin="maison " * 800_000)
    assert r.returncode == 1 and "too long" in r.stderr
    r = axi("people", "show", "Personne")
    assert r.returncode == 1 and "no person" in r.stderr
    r = axi("people", "add", "X", "--relation", "ami")
    assert r.returncode == 1 and "unknown relation" in r.stderr
    r = axi("memory", "forget", "99999", "--yes")
    assert r.returncode == 1 and "no souvenir" in r.stderr
    r = axi("people", "list", extra_env={"AXI_HTTP_PORT": "abc"})
    assert r.returncode == 2 and "AXI_HTTP_PORT" in r.stderr
    assert json.loads(_ok(axi("memory", "search", "maison", "--json"))) == []


def test_unmigrated_database_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AXI_")}
    env["AXI_DATA_DIR"] = str(tmp_path / "fresh")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bot.cli", *args], capture_output=True,
                              text=True, env=env, timeout=120, cwd=tmp_path)

    r = run("people", "list")
    assert r.returncode == 3 and "axi db upgrade" in r.stderr
    assert run("db", "status").returncode == 3
    assert "Upgraded" in _ok(run("db", "upgrade"))
    assert "already up to date" in _ok(run("db", "upgrade"))
    assert "(nothing)" in _ok(run("people", "list"))


def test_config_check_redacts_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC"))}
    env.update({"ANTHROPIC_API_KEY": "sk-ant-very-secret-value",
                "AXI_DATABASE_URL": "postgresql://axi:hunter2pw@db.local:5432/axi"})
    r = subprocess.run([sys.executable, "-m", "bot.cli", "config", "check", "--json"],
                       capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    values = json.loads(_ok(r))
    assert "sk-ant-very-secret-value" not in r.stdout and "hunter2pw" not in r.stdout
    assert values["ANTHROPIC_API_KEY"] == "********"
    assert values["AXI_DATABASE_URL"] == "postgresql://axi:***@db.local:5432/axi"


def test_env_example_loads_as_a_dotenv(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    (tmp_path / ".env").write_text((root / ".env.example").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "ANTHROPIC"))}
    r = subprocess.run([sys.executable, "-m", "bot.cli", "config", "check", "--json"],
                       capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    values = json.loads(_ok(r))
    assert values["AXI_LOCAL_MODEL"] == "mistral:7b-instruct-q4_K_M"
    assert values["AXI_DATABASE_URL"] == "(not set)"


def test_db_analyze_rebuilds_the_lexicon(axi) -> None:
    _ok(axi("memory", "add", "Une grange à rénover près de Vergt"))
    _ok(axi("memory", "add", "La grange du notaire"))
    report = json.loads(_ok(axi("db", "analyze", "--json")))
    assert report["souvenirs"] == 2 and report["lexemes"] > 4
    assert "lexicon rebuilt from 2 souvenirs" in _ok(axi("db", "analyze"))
