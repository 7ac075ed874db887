"""restic, run as a subprocess (issue 13): one repository, the commands Axi's backups
use, each failure turned into a `BackupError` that says what to do.

Why these choices: the repository is handed over in `RESTIC_REPOSITORY` (a `rest:` URL may
hold a password: never on a command line); restic's own variables and its backends' are
taken from the environment and, for a command typed in the project's directory, from the
`.env` file Axi reads too (pydantic only reads its own settings from it). A restic that
is interrupted (Axi stopping, Ctrl-C) gets SIGINT, on which it stops without writing a
snapshot; the data it had uploaded is unreferenced and `prune` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from jobs.backup_rules import (
    HOST,
    REPOSITORY_ENV_PREFIXES,
    TAG,
    BackupError,
    read_data_args,
    redact_location,
    retention_args,
)
from jobs.restic_output import (
    Snapshot,
    backup_status,
    backup_summary,
    check_progress,
    classify,
    is_missing_repository,
    parse_forget,
    parse_snapshots,
)

Progress = Callable[[int, int | None, str], None]
STOP_GRACE_S = 15.0


def repository_env(location: str, base: Mapping[str, str] | None = None,
                   dotenv: Path | None = Path(".env")) -> dict[str, str]:
    """The environment restic runs with: ours, plus restic's and its backends' variables
    from `.env` when the environment lacks them, and the repository."""
    env = dict(os.environ if base is None else base)
    if dotenv is not None and dotenv.is_file():
        from dotenv import dotenv_values

        for key, value in dotenv_values(dotenv).items():
            if (key.upper().startswith(REPOSITORY_ENV_PREFIXES) and value
                    and not env.get(key)):
                env[key] = value
    env.pop("RESTIC_REPOSITORY_FILE", None)
    env["RESTIC_REPOSITORY"] = location
    return env


class Restic:
    def __init__(self, location: str, depot: str, *, env: Mapping[str, str] | None = None,
                 binary: str = "restic"):
        self.location = location
        self.depot = depot
        self.where = redact_location(location)
        self.env = dict(env) if env is not None else repository_env(location)
        self.env["RESTIC_REPOSITORY"] = location
        self.binary = binary

    # ------------------------------------------------------------------ running restic
    async def _run(self, args: list[str], *, command: str, cwd: Path | None = None,
                   stdin: IO[bytes] | None = None, stdout_to: IO[bytes] | None = None,
                   on_line: Callable[[str], None] | None = None,
                   check: bool = True) -> tuple[int, str, str]:
        env = dict(self.env)
        if on_line is not None:
            env["RESTIC_PROGRESS_FPS"] = "2"  # progress lines even without a terminal
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, *args, cwd=cwd, env=env,
                stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=stdout_to if stdout_to is not None else asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except FileNotFoundError:
            raise BackupError(
                f"restic is not installed ({self.binary} not found): `apt-get install "
                "restic` (Debian 12 ships 0.14)",
                "restic n'est pas installé (apt-get install restic)", kind="config") from None
        out: list[str] = []
        assert proc.stderr is not None

        async def read_stdout() -> None:
            if proc.stdout is None:
                return
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace")
                out.append(line)
                if on_line is not None:
                    with contextlib.suppress(Exception):  # progress never breaks the work
                        on_line(line)

        try:
            _, err_bytes, _ = await asyncio.gather(read_stdout(), proc.stderr.read(), proc.wait())
        except BaseException:
            await _stop(proc)
            raise
        stdout, stderr = "".join(out), err_bytes.decode("utf-8", "replace")
        code = proc.returncode or 0
        if check and code != 0:
            raise classify(stderr, repository=self.location, command=command)
        return code, stdout, stderr

    # ------------------------------------------------------------------ the repository
    async def exists(self) -> bool:
        """True when a repository is there (and the password opens it); False when none
        was ever created at this location; BackupError for anything else."""
        code, _, stderr = await self._run(["cat", "config"], command="cat config",
                                          check=False)
        if code == 0:
            return True
        if is_missing_repository(stderr):
            return False
        raise classify(stderr, repository=self.location, command="cat config")

    async def init(self) -> None:
        await self._run(["init"], command="init")

    async def unlock(self) -> str:
        """Remove stale locks (restic keeps those of a live process)."""
        _, stdout, stderr = await self._run(["unlock"], command="unlock")
        return (stdout + stderr).strip()

    # ------------------------------------------------------------------ snapshots
    async def backup(self, cwd: Path, folder: str, *, when: datetime | None = None,
                     progress: Progress | None = None) -> dict[str, Any]:
        """Store `cwd/folder` as one snapshot (tag and host fixed); restic's summary."""
        args = ["backup", "--json", "--tag", TAG, "--host", HOST, folder]
        if when is not None:
            args += ["--time", when.strftime("%Y-%m-%d %H:%M:%S")]

        def on_line(line: str) -> None:
            status = backup_status(line)
            if status is not None and progress is not None:
                progress(status[0], status[1], f"restic backup ({self.depot})")

        _, stdout, _ = await self._run(args, command="backup", cwd=cwd, on_line=on_line)
        return backup_summary(stdout)

    async def snapshots(self) -> list[Snapshot]:
        """Axi's snapshots in this repository, oldest first."""
        _, stdout, _ = await self._run(["snapshots", "--json", "--tag", TAG, "--host", HOST],
                                       command="snapshots")
        return parse_snapshots(stdout)

    async def forget(self) -> tuple[int, int]:
        """Apply this repository's retention, then prune what no snapshot uses any more
        (`forget --prune` in two steps: with --prune, restic 0.14 mixes prune's report
        into forget's JSON): (kept, removed)."""
        _, stdout, _ = await self._run(["forget", "--json", *retention_args(self.depot)],
                                       command="forget")
        kept, removed = parse_forget(stdout)
        if removed:
            await self._run(["prune"], command="prune")
        return kept, removed

    async def check(self, today: datetime, progress: Progress | None = None) -> None:
        """`restic check` reading the data (all of it locally, a share remotely)."""
        def on_line(line: str) -> None:
            found = check_progress(line)
            if found is not None and progress is not None:
                progress(found[0], found[1], f"restic check ({self.depot}): {found[2]}")

        await self._run(["check", *read_data_args(self.depot, today.date())],
                        command="check", on_line=on_line)

    async def dump(self, snapshot: str, path: str, dest: Path, *, total: int | None = None,
                   progress: Progress | None = None) -> None:
        """Write the file `path` of `snapshot` to `dest` (restic checks every blob)."""
        with dest.open("wb") as handle:
            task = asyncio.create_task(self._run(["dump", snapshot, path], command="dump",
                                                 stdout_to=handle))
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if progress is not None:
                    progress(_size(dest), total, f"restic dump ({self.depot})")
            await task

    async def read_file(self, snapshot: str, path: str) -> bytes:
        """A small file of a snapshot (the manifest)."""
        _, stdout, _ = await self._run(["dump", snapshot, path], command="dump")
        return stdout.encode("utf-8")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """SIGINT (restic then stops without a snapshot), then SIGKILL if it lingers."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), STOP_GRACE_S)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await proc.wait()
