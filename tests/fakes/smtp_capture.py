"""A real SMTP server that keeps what it receives, for the email channel's tests and
benchmark: Axi's outgoing mail goes through aiosmtplib to a real SMTP conversation
(EHLO, STARTTLS or implicit TLS, AUTH, MAIL/RCPT/DATA), not to a mocked send function.

`SmtpCapture` runs aiosmtpd's `Controller` (its own thread and event loop) on a free
127.0.0.1 port. Options: `tls="ssl"` (implicit TLS), `tls="starttls"` (offered, and
required before MAIL with `require_starttls=True`), `auth=True` (AUTH PLAIN and LOGIN
with `user`/`password`, a random password per instance; required before MAIL). The
certificate is `tests.fakes.mail_tls.shared_tls()`'s: clients trust `cafile`.

What arrives is in `messages` (`Captured`: envelope, raw bytes, the parsed message). The
failure modes a sender must survive: `fail_next(451, ...)` answers the next DATA (or
MAIL/RCPT) with that code, `down()` closes the port (connections refused) and `up()`
opens it again on the same port. `wait_for(n)` (async) and `wait_for_sync(n)` wait for
the n-th message, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import threading
import time
import warnings
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.fakes.dovecot import free_port
from tests.fakes.mail_tls import TlsFiles, shared_tls

HOST = "127.0.0.1"
USER = "axi@icidordogne.fr"
Stage = Literal["mail", "rcpt", "data"]
TlsMode = Literal["none", "ssl", "starttls"]


@dataclass(frozen=True)
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    message: EmailMessage
    received_at: float  # time.time()
    tls: bool  # the session was encrypted (implicit TLS or after STARTTLS)
    auth_user: str | None  # the login the client authenticated with, if any


@dataclass
class _Failure:
    stage: Stage
    code: int
    text: str
    times: int


@dataclass
class _Handler:
    capture: SmtpCapture
    failures: list[_Failure] = field(default_factory=list)

    def _failure(self, stage: Stage) -> str | None:
        with self.capture._lock:
            for failure in self.failures:
                if failure.stage == stage:
                    failure.times -= 1
                    if failure.times <= 0:
                        self.failures.remove(failure)
                    self.capture.failures_answered += 1
                    return f"{failure.code} {failure.text}"
        return None

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        if (answer := self._failure("mail")) is not None:
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if (answer := self._failure("rcpt")) is not None:
            return answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if (answer := self._failure("data")) is not None:
            return answer
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        message = BytesParser(policy=policy.default).parsebytes(raw)
        login = session.auth_data
        auth_user = login.login.decode("utf-8", "replace") \
            if isinstance(login, LoginPassword) else None
        captured = Captured(
            mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos), raw=raw,
            message=message, received_at=time.time(),
            tls=server.transport is not None
            and server.transport.get_extra_info("ssl_object") is not None,
            auth_user=auth_user,
        )
        with self.capture._lock:
            self.capture.messages.append(captured)
            self.capture._arrived.notify_all()
        return "250 Message accepted for delivery"


class _Controller(Controller):
    def factory(self) -> SMTP:
        # aiosmtpd warns when AUTH does not require STARTTLS, even under implicit TLS
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            return super().factory()


class SmtpCapture:
    """See the module docstring. `start()`/`stop()`, or use it as a context manager."""

    def __init__(self, *, tls: TlsMode = "none", require_starttls: bool = False,
                 auth: bool = False, user: str = USER, auth_require_tls: bool | None = None,
                 tls_files: TlsFiles | None = None, hostname: str = "smtp.axi.test"):
        if tls not in ("none", "ssl", "starttls"):
            raise ValueError(f"tls must be none, ssl or starttls, not {tls!r}")
        if require_starttls and tls != "starttls":
            raise ValueError("require_starttls needs tls='starttls'")
        self.tls = tls
        self.require_starttls = require_starttls
        self.auth = auth
        self.user = user
        self.password = secrets.token_urlsafe(18)  # a test-only secret, new per instance
        # AUTH only once encrypted (as real servers do), unless the server has no TLS at all
        self.auth_require_tls = (tls != "none") if auth_require_tls is None else auth_require_tls
        self.hostname = hostname
        self.host = HOST
        self.port = 0
        self.messages: list[Captured] = []
        self.failures_answered = 0
        self.auth_failures = 0
        self._tls_files = tls_files or shared_tls()
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self._handler = _Handler(self)
        self._controller: Controller | None = None

    @property
    def cafile(self) -> Path:
        return self._tls_files.cafile

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname checked) that trusts this server."""
        return self._tls_files.client_context()

    @property
    def running(self) -> bool:
        return self._controller is not None

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            login, password = auth_data.login, auth_data.password
            if login.decode("utf-8", "replace") == self.user \
                    and password.decode("utf-8", "replace") == self.password:
                return AuthResult(success=True, auth_data=auth_data)
        with self._lock:
            self.auth_failures += 1
        return AuthResult(success=False, handled=False)

    def _controller_for(self, port: int) -> Controller:
        server_context = self._tls_files.server_context()
        kwargs: dict[str, Any] = {
            "hostname": HOST, "port": port, "server_hostname": self.hostname,
            "ident": "Axi test SMTP capture", "enable_SMTPUTF8": True,
            "decode_data": False, "ready_timeout": 10.0,
        }
        if self.tls == "ssl":
            kwargs["ssl_context"] = server_context
        elif self.tls == "starttls":
            kwargs["tls_context"] = server_context
            kwargs["require_starttls"] = self.require_starttls
        if self.auth:
            # aiosmtpd counts only STARTTLS as TLS for `auth_require_tls`: under implicit TLS
            # the session is encrypted from the start, so AUTH is offered at once
            kwargs.update(authenticator=self._authenticate, auth_required=True,
                          auth_require_tls=self.auth_require_tls and self.tls != "ssl")
        else:
            kwargs["auth_require_tls"] = False
        return _Controller(self._handler, **kwargs)

    def start(self) -> None:
        """Listen (on a new free port the first time, on the same port afterwards)."""
        if self._controller is not None:
            return
        if self.port == 0:
            self.port = free_port()
        controller = self._controller_for(self.port)
        controller.start()
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def down(self) -> None:
        """Close the port: open sessions end, new connections are refused."""
        self.stop()

    def up(self) -> None:
        """Listen again on the same port."""
        self.start()

    def __enter__(self) -> SmtpCapture:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, code: int, text: str = "Try again later", times: int = 1,
                  at: Stage = "data") -> None:
        """Answer the next `times` DATA (or MAIL, RCPT with `at`) commands with `code`:
        4xx is a temporary failure (e.g. 451 greylisting), 5xx a permanent one (550)."""
        if at not in ("mail", "rcpt", "data"):
            raise ValueError(f"at must be mail, rcpt or data, not {at!r}")
        if not 400 <= code <= 599:
            raise ValueError(f"an SMTP failure code is 4xx or 5xx, not {code}")
        with self._lock:
            self._handler.failures.append(_Failure(at, code, text, times))

    def clear(self) -> None:
        """Forget the captured messages and pending failures."""
        with self._lock:
            self.messages.clear()
            self._handler.failures.clear()

    def wait_for_sync(self, n: int = 1, timeout: float = 10.0) -> list[Captured]:
        """The captured messages once there are at least `n` (blocks this thread: from an
        async test, use `await wait_for(...)` so the sender's event loop keeps running)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(f"{len(self.messages)} message(s) captured after "
                                     f"{timeout} s, expected {n}")
            return list(self.messages)

    async def wait_for(self, n: int = 1, timeout: float = 10.0,  # noqa: ASYNC109 (the sync twin's API)
                       ) -> list[Captured]:
        """The captured messages once there are at least `n`."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self.messages) >= n:
                    return list(self.messages)
                count = len(self.messages)
            if time.monotonic() >= deadline:
                raise AssertionError(f"{count} message(s) captured after {timeout} s, "
                                     f"expected {n}")
            await asyncio.sleep(0.01)
