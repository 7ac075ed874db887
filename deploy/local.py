#!/usr/bin/env python3
"""Bare-metal bootstrap: the README's two commands, needing nothing but Python 3.11/3.12.

    python3 deploy/local.py run     # install into .venv if needed, migrate, start Axi
    python3 deploy/local.py test    # install test deps, run the whole pytest suite

`test` first runs the secret scan (deploy/secret_scan.py: detect-secrets against the audited
`.secrets.baseline`; a new secret fails the run before any test), then installs the Debian
packages the suite needs (DEBIAN_PACKAGES: only the missing ones, `apt-get update` once;
under CI=true a failure to install them is a failure, otherwise a warning and the tests
needing them skip). It then runs the whole suite against
the embedded PostgreSQL 16, and the database tests again against the PostgreSQL server
named by AXI_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/test) when
that server answers, both passes at once (the suite mostly waits for processes, servers
and clocks; the second pass's output follows the first's): tests that use no database
fixture are marked `nodb` by
tests/conftest.py and run in the first pass only. pytest's exit code 5 (no tests collected)
counts as a failure, except on the second pass after a first pass that ran tests: there it
means the selected tests (e.g. `test tests/llm`) are all `nodb`, so the server has nothing
to run. Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
SECRET_SCAN = Path(__file__).resolve().parent / "secret_scan.py"
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / "python"
DEFAULT_TEST_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
# Debian packages the test suite drives (IMAP server, backups, headless browser): add new ones here.
DEBIAN_PACKAGES = ("dovecot-imapd", "restic", "chromium", "chromium-driver")
# pytest marker of the tests that use no database fixture (set by tests/conftest.py)
NODB = "nodb"


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


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing_debian_packages(packages: tuple[str, ...]) -> list[str]:
    """The packages dpkg does not list as installed (all of them without dpkg)."""
    if not shutil.which("dpkg-query"):
        return list(packages)
    missing = []
    for package in packages:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                capture_output=True, text=True)
        if status.returncode != 0 or not status.stdout.strip().endswith(" installed"):
            missing.append(package)
    return missing


def install_debian_packages(packages: tuple[str, ...] = DEBIAN_PACKAGES) -> str | None:
    """Install the missing packages; None when all are there, else why they are not."""
    missing = missing_debian_packages(packages)
    if not missing:
        return None
    if not shutil.which("apt-get"):
        return f"{', '.join(missing)} missing and no apt-get here (not Debian?)"
    prefix: list[str] = []
    if os.name == "posix" and os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if not sudo:
            return f"{', '.join(missing)} missing; installing them needs root and there is no sudo"
        # no password prompt without a terminal (CI has no stdin): fail instead of hanging
        prefix = [sudo] if sys.stdin is not None and sys.stdin.isatty() else [sudo, "-n"]
    apt = [*prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q",
           "-o", "DPkg::Lock::Timeout=300"]
    say(f"installing Debian packages: {' '.join(missing)}")
    if subprocess.call([*apt, "update"]) != 0:
        return "`apt-get update` failed"
    if subprocess.call([*apt, "install", "-y", "--no-install-recommends", *missing]) != 0:
        return f"`apt-get install {' '.join(missing)}` failed"
    still = missing_debian_packages(packages)
    return f"{', '.join(still)} still not installed after apt-get" if still else None


def ensure_debian_packages(packages: tuple[str, ...] = DEBIAN_PACKAGES) -> bool:
    """False only when a package is missing under CI=true (the run must fail)."""
    problem = install_debian_packages(packages)
    if problem is None:
        return True
    if in_ci():
        say(f"error: cannot install the Debian packages the tests need: {problem}")
        return False
    say(f"warning: {problem}; the tests needing them will skip")
    return True


def with_marker_excluded(args: list[str], marker: str) -> list[str]:
    """pytest args with `-m` narrowed to `not MARKER`, combined with the user's own -m.

    pytest keeps the last -m given, so that one is combined and every -m is replaced."""
    rest: list[str] = []
    expr = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-m" and i + 1 < len(args):
            expr = args[i + 1]
            i += 2
            continue
        if arg.startswith("-m") and len(arg) > 2 and not arg.startswith("--"):
            expr = arg[2:].removeprefix("=")
        else:
            rest.append(arg)
        i += 1
    combined = f"({expr}) and not {marker}" if expr and expr.strip() else f"not {marker}"
    return [*rest, "-m", combined]


def server_answers(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 5432), 2):
            return True
    except OSError:
        return False


def pytest_run(label: str, env: dict[str, str], args: list[str]) -> int:
    say(f"running {label}")
    return subprocess.call([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env)


def with_basetemp(args: list[str], where: Path) -> list[str]:
    """pytest args with a temporary directory of this pass's own (two passes at once must
    not share pytest's numbered directories), unless the user gave one."""
    if any(a == "--basetemp" or a.startswith("--basetemp=") for a in args):
        return args
    return [*args, f"--basetemp={where}"]


def pytest_start(label: str, env: dict[str, str], args: list[str], log: Path
                 ) -> subprocess.Popen[bytes]:
    """A pytest pass running beside the caller, its output into `log`."""
    say(f"running {label}, at the same time (its output follows the first pass's)")
    with log.open("wb") as out:
        return subprocess.Popen([str(PY), "-m", "pytest", *args], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def scan_secrets(root: Path = ROOT, python: Path = PY) -> int:
    """The secret scan of `root` (deploy/secret_scan.py, with the venv's detect-secrets):
    0 when no new secret; it prints one line per finding (file:line and type)."""
    say("scanning the repository for secrets (deploy/secret_scan.py)")
    return subprocess.call([str(python), str(SECRET_SCAN), "--root", str(root)], cwd=root)


def cmd_test(args: list[str]) -> int:
    ensure_venv("test")
    if scan_secrets() != 0:
        say("the secret scan failed: no test runs until it passes")
        return 1
    if not ensure_debian_packages():
        return 1
    base = {k: v for k, v in os.environ.items() if k != "AXI_DATABASE_URL"}
    embedded_env = {k: v for k, v in base.items() if k != "AXI_TEST_DATABASE_URL"}
    server = os.environ.get("AXI_TEST_DATABASE_URL") or DEFAULT_TEST_SERVER
    answers = server_answers(server)
    where = f"{urlparse(server).hostname}:{urlparse(server).port or 5432}"
    scratch = Path(tempfile.mkdtemp(prefix="axi-test-"))
    second: subprocess.Popen[bytes] | None = None
    log = scratch / "second-pass.log"
    try:
        if answers:  # the suite mostly waits (processes, servers, clocks): both at once
            second = pytest_start(
                f"the database tests (not {NODB}) on the PostgreSQL server {where}",
                {**base, "AXI_TEST_DATABASE_URL": server},
                with_basetemp(with_marker_excluded(args, NODB), scratch / "second"), log)
        code = pytest_run("the whole test suite on the embedded PostgreSQL 16", embedded_env,
                          with_basetemp(args, scratch / "first"))
        if second is None:
            say(f"no PostgreSQL server answers at {server}: embedded run only")
        else:
            second_code = second.wait()
            say(f"the database tests on the PostgreSQL server {where}:")
            sys.stdout.flush()
            with log.open("rb") as out:
                shutil.copyfileobj(out, sys.stdout.buffer)
            sys.stdout.flush()
    finally:
        if second is not None and second.poll() is None:
            second.kill()
            second.wait()
        shutil.rmtree(scratch, ignore_errors=True)
    if code == 5:
        say("pytest collected no tests: that is a failure")
        return 1
    if second is None:
        return code
    if second_code == 5:
        # The first pass ran tests from the same selection, so every one of them is nodb.
        say(f"the selected tests are all {NODB}: nothing to run on {where}")
        second_code = 0
    return code or second_code


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
