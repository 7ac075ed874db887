"""The secret scan `python3 deploy/local.py test` runs before pytest (deploy/secret_scan.py):
it fails on the kinds of secret the earlier Axi published (its mail password, its Trello
key and token) and on an Anthropic key, quoted or not, in code or in a config file; it
skips what git ignores and the tool directories; and the committed baseline holds only
audited false positives.

The leaked secrets are fakes built at run time in a temporary tree: nothing that looks
like a real secret is ever committed.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCAN = ROOT / "deploy" / "secret_scan.py"
BASELINE = ROOT / ".secrets.baseline"


def _local():
    spec = importlib.util.spec_from_file_location("axi_deploy_local", ROOT / "deploy" / "local.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_secrets() -> dict[str, str]:
    """Realistic, random, never-real values (a new set on every run)."""
    return {
        "trello_key": secrets.token_hex(16),  # 32 hex digits, like a Trello API key
        "trello_token": secrets.token_hex(32),  # 64 hex digits, like a Trello token
        "password": "Dordogne-" + secrets.token_urlsafe(12),  # pragma: allowlist secret
        "anthropic": "sk-ant-" + "api03-" + secrets.token_urlsafe(70) + "AA",
    }


def leaking_code(s: dict[str, str]) -> str:
    """The earlier Axi's mistake, in Python: one secret per line (lines 2 to 6)."""
    return (
        "# configuration\n"
        f'TRELLO_KEY = "{s["trello_key"]}"\n'
        f'TRELLO_TOKEN = "{s["trello_token"]}"\n'
        f'SMTP_URL = "smtp://axi%40icidordogne.fr:{s["password"]}@mail.icidordogne.fr:587"\n'
        f'MAIL_PASSWORD = "{s["password"]}"\n'
        f'client = Anthropic(api_key="{s["anthropic"]}")\n'
    )


def leaking_env(s: dict[str, str]) -> str:
    """The same secrets unquoted, as in a committed env file (lines 1 to 4)."""
    return (
        f"AXI_TRELLO_KEY={s['trello_key']}\n"
        f"AXI_TRELLO_TOKEN={s['trello_token']}\n"
        f"AXI_SMTP_PASSWORD={s['password']}\n"
        f"ANTHROPIC_API_KEY={s['anthropic']}\n"
    )


def leaking_compose(s: dict[str, str]) -> str:
    """The secrets written inline in a compose file (lines 5 to 7)."""
    return (
        "services:\n"
        "  axi:\n"
        "    image: axi\n"
        "    environment:\n"
        f"      AXI_SMTP_PASSWORD: {s['password']}\n"
        f"      AXI_TRELLO_TOKEN: {s['trello_token']}\n"
        f"      ANTHROPIC_API_KEY: \"{s['anthropic']}\"\n"
    )


def git_repo(path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.fail("git is needed: the scan lists the files git would commit")
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    (path / "README.md").write_text("# Axi\n\nSecrets live in `.env`, never here.\n")
    shutil.copy(BASELINE, path / ".secrets.baseline")  # the real, audited baseline
    return path


def scan(root: Path, *args: str) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, str(SCAN), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout.splitlines() + done.stderr.splitlines()


def flagged(lines: list[str]) -> set[str]:
    """The `file:line` of every NEW SECRET line the scan printed."""
    found = set()
    for line in lines:
        if "NEW SECRET in " in line:
            found.add(line.split("NEW SECRET in ", 1)[1].split(" ", 1)[0])
    return found


def test_the_published_kinds_of_secret_fail_the_scan_and_name_file_and_line(
        tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    assert scan(repo)[0] == 0  # clean before the leak
    s = fake_secrets()
    (repo / "bot").mkdir()
    (repo / "bot" / "settings_leak.py").write_text(leaking_code(s))
    (repo / "deploy").mkdir()
    (repo / "deploy" / "production.env").write_text(leaking_env(s))
    (repo / "deploy" / "docker-compose.yml").write_text(leaking_compose(s))
    code, out = scan(repo)
    assert code == 1, out
    where = flagged(out)
    assert {f"bot/settings_leak.py:{n}" for n in range(2, 7)} <= where, out
    assert {f"deploy/production.env:{n}" for n in range(1, 5)} <= where, out
    assert {f"deploy/docker-compose.yml:{n}" for n in range(5, 8)} <= where, out
    assert not {w for w in where if w.startswith("README.md")}
    assert any(line.endswith("the build fails") for line in out), out
    for value in s.values():  # the scan names where, never what
        assert value not in "\n".join(out)
    # the same tree without the leaks passes again
    (repo / "bot" / "settings_leak.py").unlink()
    (repo / "deploy" / "production.env").unlink()
    (repo / "deploy" / "docker-compose.yml").unlink()
    assert scan(repo)[0] == 0


def test_the_test_command_runs_the_scan_before_pytest(tmp_path: Path,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    local = _local()
    repo = git_repo(tmp_path / "repo")
    (repo / "notes.md").write_text(f"AXI_TRELLO_TOKEN={fake_secrets()['trello_token']}\n")
    assert local.scan_secrets(repo, Path(sys.executable)) == 1
    assert "NEW SECRET in notes.md:1 " in capfd.readouterr().out
    (repo / "notes.md").unlink()
    assert local.scan_secrets(repo, Path(sys.executable)) == 0
    source = inspect.getsource(local.cmd_test)
    assert "scan_secrets()" in source
    assert source.index("scan_secrets()") < source.index("pytest_run(")


def test_what_git_ignores_and_tool_directories_are_not_scanned(tmp_path: Path) -> None:
    s = fake_secrets()
    repo = git_repo(tmp_path / "repo")
    (repo / ".gitignore").write_text(".env\n.venv/\nbuild/\n")
    (repo / ".env").write_text(leaking_env(s))  # the operator's real settings: ignored
    for folder in (".venv/lib", "build/lib"):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "leak.py").write_text(leaking_code(s))
    assert scan(repo)[0] == 0
    # outside a git checkout: the tree, minus .git, .venv, build artefacts and caches
    plain = tmp_path / "plain"
    for folder in (".git", ".venv", "build", "dist", "node_modules", "__pycache__",
                   "axi.egg-info"):
        (plain / folder).mkdir(parents=True)
        (plain / folder / "leak.py").write_text(leaking_code(s))
    assert scan(plain)[0] == 0
    (plain / "jobs").mkdir()
    (plain / "jobs" / "trello.py").write_text(leaking_code(s))
    code, out = scan(plain)
    assert code == 1 and "jobs/trello.py:3" in flagged(out), out


def test_a_false_positive_is_recorded_then_audited_never_silently(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / "test_fixture.py").write_text(leaking_code(fake_secrets()))
    (repo / "allowed.py").write_text(
        f'TOKEN = "{secrets.token_hex(32)}"  # pragma: allowlist secret\n')
    assert scan(repo, "--update-baseline")[0] == 0
    code, out = scan(repo)  # recorded but not audited yet
    assert code == 1 and any("test_fixture.py:2" in line and "not audited" in line
                             for line in out), out
    baseline = json.loads((repo / ".secrets.baseline").read_text())
    assert "allowed.py" not in baseline["results"]  # the pragma: not even recorded
    for entries in baseline["results"].values():
        for entry in entries:
            entry["is_secret"] = False
    (repo / ".secrets.baseline").write_text(json.dumps(baseline))
    assert scan(repo)[0] == 0
    # the audited baseline holds in another checkout of the same files (CI's, a worktree)
    elsewhere = shutil.copytree(repo, tmp_path / "other-checkout")
    assert scan(elsewhere)[0] == 0
    # an entry audited as a real secret fails until the code loses it
    baseline["results"]["test_fixture.py"][0]["is_secret"] = True
    (repo / ".secrets.baseline").write_text(json.dumps(baseline))
    code, out = scan(repo)
    assert code == 1 and any("REAL secret" in line for line in out), out


def test_the_committed_baseline_holds_only_audited_false_positives() -> None:
    """Each entry was checked by a person (`"is_secret": false`: fixtures, documentation
    examples of a database URL with its user and password, per-test passwords) and names a file
    that still exists; the extra detectors are loaded from the repository, by a path
    relative to its root."""
    baseline = json.loads(BASELINE.read_text())
    entries = [(name, entry) for name, items in baseline["results"].items() for entry in items]
    assert entries, "an empty baseline: the scan's settings were lost?"
    for name, entry in entries:
        assert entry["is_secret"] is False, f"{name}:{entry['line_number']} is not audited"
        assert (ROOT / name).is_file(), f"{name} is gone: rerun --update-baseline"
    plugins = {p["name"]: p for p in baseline["plugins_used"]}
    for name in ("AnthropicKeyDetector", "EnvAssignmentDetector", "HexKeyAssignmentDetector"):
        assert plugins[name]["path"] == "file://deploy/secret_plugins.py"
    for name in ("KeywordDetector", "BasicAuthDetector", "HexHighEntropyString",
                 "Base64HighEntropyString", "TelegramBotTokenDetector", "PrivateKeyDetector"):
        assert name in plugins
    assert "generated_at" not in baseline
