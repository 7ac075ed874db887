"""Fixtures of the security suite (tests/security/support.py builds the world):

    world       the whole Axi, Telegram polling, SMTP capture, no mailbox to read
    mail_world  the same, reading a real Dovecot mailbox (the email attacks)
    hook_world  the same with Telegram in webhook mode (the webhook's route exists)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from memory.database import Database
from tests.fakes import mail_fixtures
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.dovecot import Dovecot
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.smtp_capture import SmtpCapture
from tests.fakes.telegram_server import FakeTelegram
from tests.security.support import World, open_world

dovecot_server = mail_fixtures.dovecot_server
dovecot = mail_fixtures.dovecot
smtp_capture_factory = mail_fixtures.smtp_capture_factory
smtp_capture = mail_fixtures.smtp_capture


@pytest.fixture
async def world(db: Database, database_url: str | None, test_data_dir: Path,
                ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
                telegram_server: FakeTelegram, smtp_capture: SmtpCapture
                ) -> AsyncIterator[World]:
    async with open_world(db, database_url, test_data_dir, ollama_server, anthropic_server,
                          telegram_server, smtp_capture) as w:
        yield w


@pytest.fixture
async def mail_world(db: Database, database_url: str | None, test_data_dir: Path,
                     ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
                     telegram_server: FakeTelegram, smtp_capture: SmtpCapture,
                     dovecot: Dovecot) -> AsyncIterator[World]:
    async with open_world(db, database_url, test_data_dir, ollama_server, anthropic_server,
                          telegram_server, smtp_capture, dovecot=dovecot) as w:
        yield w


@pytest.fixture
async def hook_world(db: Database, database_url: str | None, test_data_dir: Path,
                     ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
                     telegram_server: FakeTelegram, smtp_capture: SmtpCapture
                     ) -> AsyncIterator[World]:
    async with open_world(db, database_url, test_data_dir, ollama_server, anthropic_server,
                          telegram_server, smtp_capture, webhook=True) as w:
        yield w
