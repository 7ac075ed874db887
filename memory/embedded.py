"""Axi's embedded PostgreSQL 16 (binaries from the `pgserver` package), used when no
AXI_DATABASE_URL is set. Its data directory lives under AXI_DATA_DIR, never in /tmp:
it is Axi's permanent memory.

Several `axi` processes may share it: pgserver keeps a list of the processes holding a
handle (under an inter-process lock) and stops the server when the last one exits.
We prune handles of processes that died without exiting (SIGKILL) so that the server
is still stopped cleanly later.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from memory.errors import DataDirectoryError, EmbeddedDatabaseError

DATABASE_NAME = "axi"

# Users of the embedded server inside this process (pgserver counts processes, not users).
_users: dict[Path, int] = {}
_users_lock = threading.Lock()

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedServer:
    pgdata: Path
    socket_dir: Path
    port: int
    handle: Any  # pgserver.PostgresServer

    def url(self, database: str = DATABASE_NAME) -> str:
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://postgres@/{database}?host={host}&port={self.port}"


def _prune_dead_handles(pgdata: Path) -> None:
    path = pgdata / ".handle_pids.json"
    if not path.exists():
        return
    try:
        pids = json.loads(path.read_text())
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _log_tail(pgdata: Path, lines: int = 15) -> str:
    log_file = pgdata / "log"
    try:
        text = log_file.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _cannot_use(path: Path, exc: OSError) -> str:
    return (f"cannot use the data directory {path}: {exc.strerror or exc}. Set AXI_DATA_DIR "
            "to a directory this user can write, or fix its owner and permissions.")


def _check_data_dir(data_dir: Path, pgdata: Path) -> None:
    """Refuse, in one line saying which directory and what to do, a data directory that
    cannot be created or written, or a pgdata that belongs to another user (PostgreSQL
    itself only runs on a data directory owned by the user running it)."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataDirectoryError(
            f"cannot create the data directory {data_dir}: {exc.strerror or exc}. "
            "Set AXI_DATA_DIR to a writable directory."
        ) from None
    me = os.geteuid() if hasattr(os, "geteuid") else None
    if me is not None and not os.access(data_dir, os.W_OK | os.X_OK):
        try:
            owner = f" (owned by {_user(data_dir.stat().st_uid)})"
        except OSError:
            owner = ""
        raise DataDirectoryError(
            f"the data directory {data_dir}{owner} is not writable by {_user(me)}: fix its "
            "owner or permissions, or set AXI_DATA_DIR to a directory of your own."
        )
    try:
        if pgdata.exists() and not pgdata.is_dir():
            raise DataDirectoryError(f"{pgdata} exists and is not a directory; move it away.")
        owner_uid = pgdata.stat().st_uid if pgdata.exists() else me
    except OSError as exc:
        raise DataDirectoryError(_cannot_use(pgdata, exc)) from None
    # as root, pgserver runs PostgreSQL as its own `pgserver` user and chowns pgdata itself
    if me is not None and me != 0 and owner_uid != me:
        owner = _user(owner_uid)  # type: ignore[arg-type]
        raise DataDirectoryError(
            f"the data directory {pgdata} belongs to {owner}, not to {_user(me)} who runs "
            f"axi: run axi as {owner}, or `chown -R {_user(me)} {pgdata}`, or set "
            "AXI_DATA_DIR to a directory of your own."
        )


def start(data_dir: Path) -> EmbeddedServer:
    """Start (or join) the embedded server for data_dir; blocking, run it in a thread."""
    logging.getLogger("pgserver").setLevel(logging.CRITICAL)
    data_dir = Path(data_dir).expanduser().resolve()
    pgdata = data_dir / "pgdata"
    _check_data_dir(data_dir, pgdata)
    version_file = pgdata / "PG_VERSION"
    try:
        version = version_file.read_text(errors="replace").strip() if version_file.exists() else None
        stray = version is None and pgdata.is_dir() and any(p.name != "log" for p in pgdata.iterdir())
    except OSError as exc:
        raise DataDirectoryError(_cannot_use(pgdata, exc)) from None
    if version is not None and version != "16":
        raise EmbeddedDatabaseError(
            f"the data directory {pgdata} holds PostgreSQL {version!r} data, but the "
            "embedded server is PostgreSQL 16. Point AXI_DATA_DIR elsewhere, or restore "
            "a backup of the right version."
        )
    if stray:
        raise EmbeddedDatabaseError(
            f"the data directory {pgdata} is not empty but holds no PostgreSQL data "
            "(no PG_VERSION): it looks corrupt. Move it away or restore a backup."
        )

    try:
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir at import; without
            # XDG_RUNTIME_DIR (servers, containers) the fallback is fine, the warning noise.
            warnings.simplefilter("ignore")
            import pgserver
            from pgserver.postgres_server import PostgresServer
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise EmbeddedDatabaseError(f"the pgserver package is missing ({exc})") from None

    try:
        with PostgresServer._lock:
            if pgdata.is_dir():
                _prune_dead_handles(pgdata)
        handle = pgserver.get_server(pgdata, cleanup_mode="stop")
        info = handle.get_postmaster_info()
    except Exception as exc:  # pgserver raises bare subprocess/assert errors
        tail = _log_tail(pgdata)
        detail = f"\n  last lines of {pgdata / 'log'}:\n{tail}" if tail else ""
        raise EmbeddedDatabaseError(
            f"the embedded PostgreSQL in {pgdata} did not start ({type(exc).__name__}: "
            f"{exc}). Another PostgreSQL may be using this directory, or it may be "
            f"damaged.{detail}"
        ) from None
    with _users_lock:
        _users[pgdata] = _users.get(pgdata, 0) + 1
    return EmbeddedServer(
        pgdata=pgdata,
        socket_dir=Path(info.socket_dir) if info.socket_dir else pgdata,
        port=info.port or 5432,
        handle=handle,
    )


def release(server: EmbeddedServer) -> None:
    """Give back this user's handle; the server stops when no process holds one."""
    with _users_lock:
        left = _users.get(server.pgdata, 1) - 1
        if left > 0:
            _users[server.pgdata] = left
            return
        _users.pop(server.pgdata, None)
    try:
        server.handle.cleanup()
    except Exception as exc:  # never mask the real outcome of a command
        log.warning("embedded PostgreSQL did not stop cleanly: %s", exc)
