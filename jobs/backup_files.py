"""The backups' files on this machine (jobs/backup.py): a work directory only Axi's user
can enter, a lock so that one restore runs at a time, writes that say "disk full".

Why apart: what the dump and the restored files are on disk — the whole database, in
clear — is a rule of its own, and jobs/backup.py is the operations' sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import shutil
from collections.abc import Iterator
from pathlib import Path

from jobs import pg_tools
from jobs.backup_rules import FOLDER, BackupError

RESTORE_LOCK_FILE = "restauration.verrou"


def fresh_work_dir(root: Path, type_: str) -> Path:
    """An empty work directory of its own for this kind of operation (a restore into
    another database may run while Axi takes its backup), under a root only Axi's user
    can enter: what it holds is the whole database."""
    work = root / type_
    try:
        root.mkdir(parents=True, exist_ok=True)
        root.chmod(0o700)  # the dump is the whole database, in clear
        shutil.rmtree(work, ignore_errors=True)
        (work / FOLDER).mkdir(parents=True)
    except OSError as exc:
        raise os_error(work, exc) from None
    return work


@contextlib.contextmanager
def restore_lock(root: Path) -> Iterator[None]:
    """One restore at a time here: they share their work directory (a second one emptied
    it under the first); a lock file, freed when its process dies."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle = (root / RESTORE_LOCK_FILE).open("a")
    except OSError as exc:
        raise os_error(root, exc) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError("another restore is running on this machine; retry when it "
                              "is done", "une autre restauration est en cours",
                              kind="occupe") from None
        yield


def write_text(path: Path, content: str) -> None:
    try:
        path.write_text(content, encoding="utf-8")
    except OSError as exc:
        raise os_error(path, exc) from None


def os_error(path: Path, exc: OSError) -> BackupError:
    if exc.errno == 28:
        return BackupError(f"disk full writing {path}: free some space, then retry",
                           f"disque plein en écrivant {path}", kind="disque_plein")
    return BackupError(f"cannot write {path}: {exc.strerror or exc}",
                       f"impossible d'écrire {path} : {exc.strerror or exc}", kind="disque")


async def sha256(path: Path) -> str:
    return await asyncio.to_thread(pg_tools.sha256_of, path)
