"""pytest fixtures for the email channel's tests: a real Dovecot and a real SMTP server.

    dovecot_server        session: one Dovecot for the run (started on first use)
    dovecot               function: that server, reset to an empty INBOX (UIDs from 1)
    smtp_capture          function: a plain SMTP capture, no auth
    smtp_capture_factory  function: SmtpCapture(**options), started; all stopped afterwards

A conftest.py (e.g. tests/channels/conftest.py) makes them available by importing them;
a module with tests assigns them instead (`dovecot = mail_fixtures.dovecot`): an import
statement there trips ruff's F811 on each test's parameter.

When Dovecot is not installed, a test that needs it is skipped with the reason, except
under CI=true (the same test as deploy/local.py's, which installs dovecot-imapd there):
then it fails, so a broken install cannot pass as skips.

None of these fixtures touches the database: tests/conftest.py marks their tests `nodb`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fakes.dovecot import Dovecot, doveadm_binary, dovecot_binary
from tests.fakes.smtp_capture import SmtpCapture


def in_ci() -> bool:
    """The same test as deploy/local.py's."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_dovecot() -> None:
    """Skip the calling test when Dovecot is missing (fail instead under CI=true)."""
    if dovecot_binary() and doveadm_binary():
        return
    reason = ("Dovecot is not installed (Debian package dovecot-imapd: "
              "`python3 deploy/local.py test` installs it)")
    if in_ci():
        pytest.fail(f"{reason}; under CI=true it must be", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    require_dovecot()
    server = Dovecot()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def dovecot(dovecot_server: Dovecot) -> Dovecot:
    """The session's Dovecot with an empty INBOX: the server is restarted with its mail
    removed (connections from an earlier test are cut), on the same ports and password."""
    dovecot_server.reset()
    return dovecot_server


@pytest.fixture
def smtp_capture_factory() -> Iterator[Callable[..., SmtpCapture]]:
    """`smtp_capture_factory(tls="starttls", auth=True, ...)`: a started SmtpCapture."""
    started: list[SmtpCapture] = []

    def make(**options: Any) -> SmtpCapture:
        capture = SmtpCapture(**options)
        capture.start()
        started.append(capture)
        return capture

    try:
        yield make
    finally:
        for capture in started:
            capture.stop()


@pytest.fixture
def smtp_capture(smtp_capture_factory: Callable[..., SmtpCapture]) -> SmtpCapture:
    """A plain SMTP server (no TLS, no AUTH) that keeps what it receives."""
    return smtp_capture_factory()
