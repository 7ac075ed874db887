#!/usr/bin/env python3
"""Bare-metal bootstrap: the README's two commands, needing nothing but Python 3.11/3.12.

    python3 deploy/local.py run     # install into .venv if needed, migrate, start Axi
    python3 deploy/local.py test    # install test deps, run the whole pytest suite

`test` runs the suite against the embedded PostgreSQL 16, then again against the
PostgreSQL server named by AXI_TEST_DATABASE_URL (default
postgresql://postgres@127.0.0.1:5432/test) when that server answers. pytest's exit
code 5 (no tests collected) counts as a failure. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import venv
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
DEFAULT_TEST_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def say(message: str) -> None:
    print(f"[axi] {message}", flush=True)


def check_python() -> None:
    if not ((3, 11) <= sys.version_info[:2] <= (3, 12)):
        sys.exit(f"Axi needs Python 3.11 or 3.12; this is {sys.version.split()[0]}.")


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project (editable) when pyproject.toml changed."""
    if not PY.exists():
        say(f"creating the virtual environment in {VENV}")
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / f".installed-{extras or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    say("installing Axi and its dependencies (first run takes a minute)")
    target = f".[{extras}]" if extras else "."
    pip = [str(PY), "-m", "pip", "install", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, cwd=ROOT)
    subprocess.run([*pip, "-e", target], check=True, cwd=ROOT)
    stamp.write_text(digest)


def server_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), 2):
            return True
    except OSError:
        return False


def pytest_run(label: str, env: dict[str, str], args: list[str]) -> int:
    say(f"running the test suite on {label}")
    code = subprocess.call([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env)
    if code == 5:
        say("pytest collected no tests: that is a failure")
        return 1
    return code


def cmd_test(args: list[str]) -> int:
    ensure_venv("test")
    base = {k: v for k, v in os.environ.items() if k != "AXI_DATABASE_URL"}
    embedded_env = {k: v for k, v in base.items() if k != "AXI_TEST_DATABASE_URL"}
    code = pytest_run("the embedded PostgreSQL 16", embedded_env, args)
    server = os.environ.get("AXI_TEST_DATABASE_URL") or DEFAULT_TEST_SERVER
    if server_answers(server):
        code = pytest_run(f"the PostgreSQL server {urlparse(server).hostname}:"
                          f"{urlparse(server).port or 5432}",
                          {**base, "AXI_TEST_DATABASE_URL": server}, args) or code
    else:
        say(f"no PostgreSQL server answers at {server}: embedded run only")
    return code


def cmd_run(args: list[str]) -> int:
    ensure_venv("")
    axi = str(BIN / "axi")
    code = subprocess.call([axi, "db", "upgrade"], cwd=ROOT)
    if code != 0:
        return code
    os.execv(axi, [axi, "run", *args])
    return 0  # pragma: no cover


def main() -> int:
    check_python()
    commands = {"run": cmd_run, "test": cmd_test}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    return commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
