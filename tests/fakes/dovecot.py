"""A real Dovecot IMAP server in a temporary directory, for the email channel's tests and
benchmark: the channel's IMAP code must meet a real server's IDLE, UIDPLUS, UIDVALIDITY and
disconnections, not a mock's idea of them.

`Dovecot` runs `dovecot -F -c <conf>` with everything under its own temporary directory:
passwd-file authentication of one user (`axi@icidordogne.fr`, a random password per
instance), Maildir storage, IMAP on two loopback ports (`ssl_port`: implicit TLS with a
certificate clients verify through `cafile`; `port`: plain, where LOGIN is allowed and
STARTTLS offered), IDLE on (Dovecot's default).

It always runs unprivileged: as the current user, or as `nobody` when the tests run as
root (Dovecot refuses mail access as root, and one way of running is one way to debug).
`default_internal_user`, `default_login_user` and `default_internal_group` name that user,
no service chroots, and `base_dir`/`state_dir` are in the temporary directory.

The test side (append, list, flags, folders) uses the standard library's `imaplib` over
the plain port, never the code under test; `doveadm` does what IMAP cannot (change a
UIDVALIDITY). The server runs in its own process group: `stop()` (SIGTERM: clients get
`* BYE Server shutting down.`), `kill()` (SIGKILL of every Dovecot process: clients only
see the connection close) and `restart()` (the same ports and data afterwards) never leave
a process behind. A `sh` watchdog leads that group and kills it when its stdin, a pipe
from the test process, closes: even a test run killed by SIGKILL leaves no Dovecot
running (an atexit hook also removes the temporary directories of a normal exit).
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import imaplib
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.fakes.mail_tls import TlsFiles, shared_tls

USER = "axi@icidordogne.fr"
HOST = "127.0.0.1"
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
IMAP_TIMEOUT_S = 15.0
UNPRIVILEGED_FALLBACK_USERS = ("nobody", "dovenull")

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")
_UIDVALIDITY = re.compile(rb"UIDVALIDITY (\d+)")
_FETCH_UID = re.compile(rb"UID (\d+)")
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_FETCH_DATE = re.compile(rb'INTERNALDATE "([^"]+)"')
_LIST_LINE = re.compile(rb'\((?P<attrs>[^)]*)\) (?P<sep>"[^"]*"|NIL) (?P<name>.+)$')

_instances: weakref.WeakSet[Dovecot] = weakref.WeakSet()  # closed at exit


class DovecotError(RuntimeError):
    """Dovecot did not start, or refused what the test asked of it."""


def dovecot_binary() -> str | None:
    return shutil.which("dovecot", path=SEARCH_PATH)


def doveadm_binary() -> str | None:
    return shutil.which("doveadm", path=SEARCH_PATH)


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A free 127.0.0.1 port outside the kernel's ephemeral range: a server restarted on it
    (`restart()`, `up()`) never finds it taken by an outgoing connection's source port."""
    low, high = _ephemeral_ports()
    choices = range(10000, low) if low > 11000 else range(high + 1, 65536)
    for _ in range(100):
        port = random.choice(choices)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def imap_utf7(name: str) -> str:
    """A mailbox name in IMAP's modified UTF-7 (RFC 3501 5.1.3): "Traités" → "Trait&AOk-s"."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            encoded = base64.b64encode("".join(pending).encode("utf-16-be")).decode()
            out.append("&" + encoded.rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def imap_utf7_decode(name: str) -> str:
    def decode(match: re.Match[str]) -> str:
        chunk = match.group(1)
        if not chunk:
            return "&"
        chunk = chunk.replace(",", "/")
        return base64.b64decode(chunk + "=" * (-len(chunk) % 4)).decode("utf-16-be")

    return re.sub(r"&([^-]*)-", decode, name)


def quote(name: str) -> str:
    """A mailbox name as an IMAP quoted string (modified UTF-7 inside)."""
    encoded = imap_utf7(name)
    return '"' + encoded.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _unquote(word: bytes) -> str:
    text = word.decode("ascii", "replace")
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return imap_utf7_decode(text)


def _run_as() -> pwd.struct_passwd:
    """The user Dovecot runs as: the current one, or an unprivileged one under root."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    for name in UNPRIVILEGED_FALLBACK_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise DovecotError("running as root and no unprivileged user (nobody) to run Dovecot as")


def _state(pid: int) -> tuple[str, int] | None:
    """A process's (state, process group) from /proc, None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[0], int(fields[2])


def _alive(pid: int) -> bool:
    state = _state(pid) if pid > 0 else None
    return state is not None and state[0] not in ("Z", "X")


def _alive_in_group(pgid: int) -> list[int]:
    """The processes of group `pgid` that still run (zombies hold no socket: they are done;
    an orphaned zombie may never be reaped when PID 1 does not reap)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            state = _state(int(entry.name))
            if state is not None and state[1] == pgid and state[0] not in ("Z", "X"):
                alive.append(int(entry.name))
    return alive


# sh LOG DOVECOT ARGS...: start Dovecot, print its PID, wait for EOF on stdin, kill the group
WATCHDOG_SCRIPT = (
    'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!; exec >&-; '
    'read -r _ || :; kill -KILL 0'
)

CONFIG_TEMPLATE = """\
# Written by tests/fakes/dovecot.py: an unprivileged Dovecot for one test process.
base_dir = {dir}/run
state_dir = {dir}/state
instance_name = axi-test-{instance}
protocols = imap
listen = {host}
log_path = {dir}/dovecot.log
info_log_path = {dir}/dovecot.log

default_internal_user = {run_user}
default_internal_group = {run_group}
default_login_user = {run_user}
first_valid_uid = 1
first_valid_gid = 0

ssl = yes
ssl_cert = <{dir}/tls/server.pem
ssl_key = <{dir}/tls/server-key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login
# a wrong password is refused at once (tests of bad credentials do not wait 2 s)
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={dir}/home/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
mail_max_userip_connections = 1000

service imap-login {{
  chroot =
  inet_listener imap {{
    address = {host}
    port = {port}
  }}
  inet_listener imaps {{
    address = {host}
    port = {ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service ipc {{
  chroot =
}}
service old-stats {{
  chroot =
}}
"""


class Dovecot:
    """One Dovecot server; see the module docstring. Not thread-safe: one test drives it."""

    def __init__(self, user: str = USER, *, tls: TlsFiles | None = None):
        binary = dovecot_binary()
        if binary is None:
            raise DovecotError("dovecot is not installed (Debian package dovecot-imapd)")
        doveadm = doveadm_binary()
        if doveadm is None:
            raise DovecotError("doveadm is not installed (Debian package dovecot-core)")
        self.binary, self.doveadm_path = binary, doveadm
        self.user = user
        self.password = secrets.token_urlsafe(18)  # a test-only secret, new per instance
        self.host = HOST
        self.port = 0
        self.ssl_port = 0
        self.dir: Path | None = None
        self._tls_source = tls
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._master = 0  # the Dovecot master's PID
        self._runner = _run_as()
        self._closed = False
        _instances.add(self)

    # ------------------------------------------------------------------ paths and lifecycle
    @property
    def cafile(self) -> Path:
        """The CA certificate that verifies this server's certificate (both ports)."""
        return self._dir / "tls" / "ca.pem"

    @property
    def conf(self) -> Path:
        return self._dir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self._dir / "dovecot.log"

    @property
    def maildir(self) -> Path:
        return self._dir / "home" / self.user / "Maildir"

    @property
    def running(self) -> bool:
        return self._watchdog is not None and _alive(self._master)

    @property
    def pid(self) -> int | None:
        """The Dovecot master's PID while it runs."""
        return self._master if self.running else None

    @property
    def _dir(self) -> Path:
        if self.dir is None:
            raise DovecotError("Dovecot was never started")
        return self.dir

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname checked) that trusts this server."""
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.cafile))

    def _prepare(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="axi-dovecot-"))
        self.dir = directory
        (self._tls_source or shared_tls()).copy_to(directory / "tls")
        (directory / "home").mkdir()
        (directory / "dovecot.log").touch()
        (directory / "passwd").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        self.port, self.ssl_port = free_port(), free_port()
        while self.ssl_port == self.port:
            self.ssl_port = free_port()
        runner = self._runner
        self.conf.write_text(CONFIG_TEMPLATE.format(
            dir=directory, host=HOST, instance=directory.name.rsplit("-", 1)[-1],
            run_user=runner.pw_name, run_group=_group_name(runner.pw_gid),
            uid=runner.pw_uid, gid=runner.pw_gid, port=self.port, ssl_port=self.ssl_port,
        ))
        if os.geteuid() == 0:  # everything belongs to the unprivileged user Dovecot runs as
            for path in (directory, *directory.rglob("*")):
                os.chown(path, runner.pw_uid, runner.pw_gid)
        directory.chmod(0o700)

    def _credentials(self) -> tuple[int | None, int | None, list[int] | None]:
        """subprocess's user, group and extra_groups that run a command as Dovecot's user
        (all None, i.e. unchanged, when the tests do not run as root)."""
        if os.geteuid() != 0:
            return None, None, None
        return self._runner.pw_uid, self._runner.pw_gid, []

    def start(self) -> None:
        """Start (or start again, on the same ports and data) and wait until it answers."""
        if self._closed:
            raise DovecotError("this Dovecot was closed")
        if self.running:
            return
        self._halt(signal.SIGKILL)  # what is left of a Dovecot that died on its own
        if self.dir is None:
            self._prepare()
        # Nothing of an earlier run is alive now, but its master may stay a zombie (an orphan
        # that PID 1 has not reaped yet): Dovecot would take it for a running instance.
        (self._dir / "run" / "master.pid").unlink(missing_ok=True)
        user, group, extra_groups = self._credentials()
        # sh runs Dovecot and waits for EOF on its stdin, a pipe from this process: when the
        # test process ends, however it ends (even SIGKILL, when atexit hooks do not run),
        # the pipe closes and sh kills its whole process group: no Dovecot is left behind.
        watchdog = subprocess.Popen(
            ["/bin/sh", "-c", WATCHDOG_SCRIPT, "sh", str(self.log_path),
             self.binary, "-F", "-c", str(self.conf)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            user=user, group=group, extra_groups=extra_groups,
        )
        assert watchdog.stdout is not None
        line = watchdog.stdout.readline()
        watchdog.stdout.close()
        self._watchdog, self._master = watchdog, int(line or 0)
        self.wait_ready()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until both ports greet a client with `* OK` (the login processes are up)."""
        deadline = time.monotonic() + timeout
        pending = [self.port, self.ssl_port]
        while pending:
            if not self.running:
                self._halt(signal.SIGKILL)
                raise DovecotError(f"dovecot exited while starting:\n{self.log_tail()}")
            try:
                self._greeting(pending[0])
                pending.pop(0)
                continue
            except (OSError, ssl.SSLError):
                pass
            if time.monotonic() >= deadline:
                raise DovecotError(f"dovecot not answering on port {pending[0]} after "
                                   f"{timeout} s:\n{self.log_tail()}")
            time.sleep(0.01)

    def _greeting(self, port: int) -> None:
        with socket.create_connection((HOST, port), timeout=2) as raw:
            sock: socket.socket = raw
            if port == self.ssl_port:
                sock = self.ssl_context().wrap_socket(raw, server_hostname=HOST)
            if not sock.recv(100).startswith(b"* OK"):
                raise OSError("no IMAP greeting")

    def stop(self) -> None:
        """Graceful stop (SIGTERM to every Dovecot process: each IMAP client gets
        `* BYE Server shutting down.`); the data stays for `start()`."""
        self._halt(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL of every Dovecot process: clients see their connection close, no BYE."""
        self._halt(signal.SIGKILL)

    def restart(self, *, graceful: bool = False) -> None:
        """Kill (SIGKILL, or SIGTERM when `graceful`) and start again on the same ports with
        the same mail and UIDVALIDITY: every open connection (e.g. one in IDLE) is dropped."""
        self._halt(signal.SIGTERM if graceful else signal.SIGKILL)
        self.start()

    def _halt(self, sig: signal.Signals) -> None:
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        pgid, master = watchdog.pid, self._master  # start_new_session: sh leads the group
        # The whole group, as systemd stops a service: each imap process then says
        # `* BYE Server shutting down.` (a SIGTERM to the master alone leaves them running).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        if sig != signal.SIGKILL:  # until the children are gone (the master lingers a second)
            while (set(_alive_in_group(pgid)) - {master}) and time.monotonic() < deadline:
                time.sleep(0.01)
        while True:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(0.05)
            if watchdog.poll() is not None and not _alive_in_group(pgid):
                break
            if time.monotonic() >= deadline:
                raise DovecotError(f"Dovecot processes {_alive_in_group(pgid)} survive SIGKILL")
        if watchdog.stdin is not None:
            with contextlib.suppress(OSError):
                watchdog.stdin.close()

    def reset(self) -> None:
        """An empty mailbox (INBOX only, UIDs from 1), as if new: stop, remove the mail,
        start. The `dovecot-uidvalidity*` files stay, so each new INBOX gets a new, higher
        UIDVALIDITY than the last (what Dovecot does when a mailbox is recreated)."""
        self._halt(signal.SIGKILL)
        if self.dir is not None and self.maildir.exists():
            for path in self.maildir.iterdir():
                if path.name.startswith("dovecot-uidvalidity"):
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        self.start()

    def close(self) -> None:
        """Stop and remove the temporary directory."""
        with contextlib.suppress(DovecotError):
            self._halt(signal.SIGKILL)
        self._closed = True
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, DovecotError):
            return "(no log)"

    # ------------------------------------------------------------------ the mailbox, as a test sees it
    @contextlib.contextmanager
    def imap(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in stdlib imaplib connection on the plain port (for the test's side)."""
        client = imaplib.IMAP4(HOST, self.port, timeout=IMAP_TIMEOUT_S)
        try:
            _ok(client.login(self.user, self.password), "LOGIN")
            yield client
        finally:
            with contextlib.suppress(Exception):
                client.logout()

    def append(self, raw: bytes, folder: str = "INBOX", flags: Iterable[str] = (),
               date: datetime | None = None) -> int:
        """APPEND one message; its UID (from APPENDUID). imaplib turns bare LF into CRLF,
        and Dovecot returns the message with CRLF line ends."""
        return self.append_many([raw], folder, flags, date)[0]

    def append_many(self, raws: Iterable[bytes], folder: str = "INBOX",
                    flags: Iterable[str] = (), date: datetime | None = None) -> list[int]:
        """APPEND several messages over one connection; their UIDs, in order."""
        flag_list = "(" + " ".join(flags) + ")"
        when = imaplib.Time2Internaldate(date) if date is not None else None
        uids = []
        with self.imap() as client:
            for raw in raws:
                typ, data = client.append(quote(folder), flag_list, when, raw)
                found = _APPENDUID.search(_ok((typ, data), "APPEND")[0] or b"")
                if found is None:
                    raise DovecotError(f"APPEND gave no APPENDUID: {data!r}")
                uids.append(int(found.group(2)))
        return uids

    def uids(self, folder: str = "INBOX") -> list[int]:
        with self.imap() as client:
            return self._uids(client, folder)

    def _uids(self, client: imaplib.IMAP4, folder: str) -> list[int]:
        _ok(client.select(quote(folder), readonly=True), f"EXAMINE {folder}")
        data = _ok(client.uid("SEARCH", "ALL"), "UID SEARCH")
        return sorted(int(u) for u in (data[0] or b"").split())

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.imap() as client:
            data = _ok(client.status(quote(folder), "(UIDVALIDITY)"), f"STATUS {folder}")
        found = _UIDVALIDITY.search(data[0] or b"")
        if found is None:
            raise DovecotError(f"STATUS gave no UIDVALIDITY: {data!r}")
        return int(found.group(1))

    def fetch(self, folder: str = "INBOX") -> list[tuple[int, bytes, set[str], str]]:
        """Every message of `folder` as (UID, raw bytes, flags, INTERNALDATE), by UID."""
        with self.imap() as client:
            return self._fetch(client, folder)

    def _fetch(self, client: imaplib.IMAP4, folder: str,
               uids: str | None = None) -> list[tuple[int, bytes, set[str], str]]:
        if uids is None:
            if not self._uids(client, folder):
                return []
            uids = "1:*"
        else:
            _ok(client.select(quote(folder), readonly=True), f"EXAMINE {folder}")
        data = _ok(client.uid("FETCH", uids, "(UID FLAGS INTERNALDATE BODY.PEEK[])"), "UID FETCH")
        found: list[tuple[int, bytes, set[str], str]] = []
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, raw = item[0], item[1]
            uid, flags, date = _FETCH_UID.search(head), _FETCH_FLAGS.search(head), \
                _FETCH_DATE.search(head)
            if uid is None:
                raise DovecotError(f"FETCH without UID: {head!r}")
            found.append((int(uid.group(1)), bytes(raw),
                          set(flags.group(1).decode().split()) if flags else set(),
                          date.group(1).decode() if date else ""))
        return sorted(found)

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The raw bytes of every message of `folder`, by UID (BODY.PEEK[]: nothing is read)."""
        return [raw for _, raw, _, _ in self.fetch(folder)]

    def message(self, uid: int, folder: str = "INBOX") -> bytes | None:
        with self.imap() as client:
            found = self._fetch(client, folder, str(uid))
        return next((raw for u, raw, _, _ in found if u == uid), None)

    def flags(self, uid: int, folder: str = "INBOX") -> set[str]:
        """The flags of one message (e.g. {"\\\\Seen"}); KeyError if there is no such UID."""
        with self.imap() as client:
            _ok(client.select(quote(folder), readonly=True), f"EXAMINE {folder}")
            data = _ok(client.uid("FETCH", str(uid), "(UID FLAGS)"), "UID FETCH")
        for item in data:
            head = item[0] if isinstance(item, tuple) else item
            if not isinstance(head, bytes):
                continue
            found_uid = _FETCH_UID.search(head)
            if found_uid is not None and int(found_uid.group(1)) == uid:
                found = _FETCH_FLAGS.search(head)
                return set(found.group(1).decode().split()) if found else set()
        raise KeyError(f"no UID {uid} in {folder}")

    def add_flags(self, uid: int, flags: Iterable[str], folder: str = "INBOX") -> None:
        """As a person's mail client would (e.g. marking a message \\Seen)."""
        with self.imap() as client:
            _ok(client.select(quote(folder)), f"SELECT {folder}")
            _ok(client.uid("STORE", str(uid), "+FLAGS.SILENT", "(" + " ".join(flags) + ")"),
                "UID STORE")

    def expunge(self, uids: Iterable[int], folder: str = "INBOX") -> None:
        """Delete messages for good, as a person's mail client would."""
        wanted = ",".join(str(u) for u in uids)
        if not wanted:
            return
        with self.imap() as client:
            _ok(client.select(quote(folder)), f"SELECT {folder}")
            _ok(client.uid("STORE", wanted, "+FLAGS.SILENT", "(\\Deleted)"), "UID STORE")
            _ok(client.uid("EXPUNGE", wanted), "UID EXPUNGE")

    def create_folder(self, name: str) -> None:
        with self.imap() as client:
            _ok(client.create(quote(name)), f"CREATE {name}")

    def folders(self) -> list[str]:
        """Every folder's name (decoded from modified UTF-7), INBOX included."""
        with self.imap() as client:
            data = _ok(client.list('""', '"*"'), "LIST")
        names = []
        for line in data:
            if isinstance(line, tuple):  # a name sent as a literal
                names.append(_unquote(line[1]))
                continue
            found = _LIST_LINE.match(line or b"")
            if found is not None:
                names.append(_unquote(found.group("name")))
        return sorted(names)

    @property
    def separator(self) -> str:
        """The hierarchy separator of the mail namespace ("." with Maildir, by default)."""
        with self.imap() as client:
            data = _ok(client.list('""', '""'), "LIST")
        found = _LIST_LINE.match(data[0] or b"")
        return found.group("sep").decode().strip('"') if found else "."

    def doveadm(self, *args: str) -> str:
        """Run `doveadm -c <conf> ARGS` as Dovecot's user; its stdout."""
        user, group, extra_groups = self._credentials()
        done = subprocess.run([self.doveadm_path, "-c", str(self.conf), *args],
                              capture_output=True, text=True, timeout=30,
                              user=user, group=group, extra_groups=extra_groups)
        if done.returncode != 0:
            raise DovecotError(f"doveadm {' '.join(args)}: exit {done.returncode}: "
                               f"{done.stderr.strip() or done.stdout.strip()}")
        return str(done.stdout)

    def change_uidvalidity(self, folder: str = "INBOX", *, renumber: bool = False) -> int:
        """Give `folder` a new UIDVALIDITY, keeping its messages; the new value.

        `doveadm mailbox update --uid-validity` rewrites the index: the messages keep their
        UIDs under the new UIDVALIDITY. With `renumber`, they are first expunged and
        appended again (same bytes, flags and INTERNALDATE), so they also get new, higher
        UIDs: what a client sees when a mailbox is rebuilt. A session that has the folder
        selected is not told at once, even in IDLE: its next command gets
        `* BYE IMAP session state is inconsistent, please relogin.` and the connection closes.
        """
        old = self.uidvalidity(folder)
        before = self.fetch(folder)
        if renumber and before:
            with self.imap() as client:
                _ok(client.select(quote(folder)), f"SELECT {folder}")
                _ok(client.uid("STORE", "1:*", "+FLAGS.SILENT", "(\\Deleted)"), "UID STORE")
                _ok(client.expunge(), "EXPUNGE")
                for _, raw, flags, date in before:
                    kept = " ".join(f for f in flags if f not in ("\\Recent", "\\Deleted"))
                    _ok(client.append(quote(folder), f"({kept})", f'"{date}"' if date else None,
                                      raw), "APPEND")
        new = old + 1 if old < 0xFFFFFFFF else 1
        self.doveadm("mailbox", "update", "-u", self.user, "--uid-validity", str(new), folder)
        after = self.fetch(folder)
        if self.uidvalidity(folder) != new:
            raise DovecotError(f"UIDVALIDITY of {folder} still {old} after doveadm")
        if sorted(raw for _, raw, _, _ in after) != sorted(raw for _, raw, _, _ in before):
            raise DovecotError(f"the messages of {folder} changed with its UIDVALIDITY")
        return new


def _ok(response: tuple[str, Sequence[Any]], what: str) -> list[Any]:
    """imaplib's data when the command succeeded (bytes lines, (head, literal) tuples)."""
    typ, data = response
    if typ != "OK":
        raise DovecotError(f"{what}: {typ} {data!r}")
    return list(data)


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@atexit.register
def _stop_all() -> None:
    for server in list(_instances):
        with contextlib.suppress(Exception):
            server.close()
