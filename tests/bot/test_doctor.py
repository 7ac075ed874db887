"""`axi doctor` as Anthony runs it (a subprocess on the test database) against working
and broken set-ups: the loopback Ollama and Anthropic API, the loopback Telegram Bot API,
a real Dovecot over IMAPS and a real SMTP server with AUTH. Each problem is named with its
fix, the exit code says whether anything is wrong, and no secret is ever printed."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes import mail_fixtures
from tests.fakes.anthropic_server import TEST_API_KEY, FakeAnthropic
from tests.fakes.dovecot import Dovecot
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.smtp_capture import SmtpCapture
from tests.fakes.telegram_server import FakeTelegram

dovecot_server = mail_fixtures.dovecot_server
dovecot = mail_fixtures.dovecot
smtp_capture_factory = mail_fixtures.smtp_capture_factory



def doctor(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot.cli", "doctor", "--json"], env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)


def by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    assert "Traceback" not in result.stderr, result.stderr
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


@pytest.fixture
def full_env(cli_env: dict[str, str], ollama_server: FakeOllama,
             anthropic_server: FakeAnthropic, telegram_server: FakeTelegram,
             dovecot: Dovecot, smtp_capture_factory, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    smtp: SmtpCapture = smtp_capture_factory(auth=True, auth_require_tls=False)
    return {**cli_env,
            "ANTHROPIC_API_KEY": TEST_API_KEY, "ANTHROPIC_BASE_URL": anthropic_server.url,
            "AXI_TELEGRAM_TOKEN": FakeTelegram.TOKEN,
            "AXI_TELEGRAM_API_URL": telegram_server.base_url,
            "AXI_TELEGRAM_FILE_URL": telegram_server.base_file_url,
            "AXI_EMAIL_ADDRESS": "axi@icidordogne.fr", "AXI_IMAP_HOST": dovecot.host,
            "AXI_IMAP_PORT": str(dovecot.ssl_port), "AXI_IMAP_TLS": "ssl",
            "AXI_IMAP_USER": dovecot.user, "AXI_IMAP_PASSWORD": dovecot.password,
            "SSL_CERT_FILE": str(dovecot.cafile),
            "AXI_SMTP_HOST": smtp.host, "AXI_SMTP_PORT": str(smtp.port), "AXI_SMTP_TLS": "none",
            "AXI_SMTP_USER": smtp.user, "AXI_SMTP_PASSWORD": smtp.password,
            "AXI_AGENCY_EMAIL": "agence@icidordogne.fr",
            "AXI_BACKUP_REPOSITORY": str(tmp_path / "depot"),
            "RESTIC_PASSWORD": RESTIC_PASSWORD}


RESTIC_PASSWORD = secrets.token_urlsafe(12)


def restic_init(env: dict[str, str]) -> None:
    subprocess.run(["restic", "init", "--repo", env["AXI_BACKUP_REPOSITORY"]], check=True,
                   env={**env, "RESTIC_PASSWORD": RESTIC_PASSWORD}, capture_output=True,
                   timeout=120)


def test_a_working_set_up_passes_every_check(full_env: dict[str, str], tmp_path: Path,
                                             ollama_server: FakeOllama) -> None:
    ollama_server.models = [full_env.get("AXI_LOCAL_MODEL", "mistral:7b-instruct-q4_K_M"),
                            "nomic-embed-text:latest"]
    restic_init(full_env)
    result = doctor(full_env, tmp_path)
    checks = by_name(result)
    assert result.returncode == 0, checks
    for name in ("configuration", "database", "migrations", "local model", "Claude fallback",
                 "telegram", "email", "disk (data)"):
        assert checks[name]["state"] == "ok", checks[name]
    assert "bot @" in checks["telegram"]["detail"]
    assert "IMAP" in checks["email"]["detail"] and "SMTP" in checks["email"]["detail"]
    assert checks["backups (local)"]["state"] == "warn"  # opened; no backup taken yet
    assert "no backup yet" in checks["backups (local)"]["detail"]


def test_each_broken_part_is_named_with_its_fix_and_no_secret_leaks(
        full_env: dict[str, str], tmp_path: Path, ollama_server: FakeOllama,
        anthropic_server: FakeAnthropic) -> None:
    ollama_server.models = ["llama3:8b"]
    restic_init(full_env)
    secrets_ = ["sk-ant-wrong-key-123456", "wrong-imap-pass-987", "wrong-smtp-pass-654",
               "999:WRONG-telegram-token", "wrong-restic-pass-321"]
    env = {**full_env, "ANTHROPIC_API_KEY": secrets_[0], "AXI_IMAP_PASSWORD": secrets_[1],
           "AXI_SMTP_PASSWORD": secrets_[2], "AXI_TELEGRAM_TOKEN": secrets_[3],
           "AXI_BACKUP_SCHEDULE": "*/5 * * * *", "RESTIC_PASSWORD": secrets_[4]}
    result = doctor(env, tmp_path)
    assert result.returncode == 1
    checks = by_name(result)
    expected = {
        "configuration": ("AXI_BACKUP_SCHEDULE", "fix AXI_BACKUP_SCHEDULE"),
        "local model": ("mistral:7b-instruct-q4_K_M", "ollama pull mistral:7b-instruct-q4_K_M"),
        "Claude fallback": ("401", "ANTHROPIC_API_KEY"),
        "telegram": ("refused the token", "@BotFather"),
        "email": ("IMAP refused the login", "AXI_IMAP_PASSWORD"),
        "backups (local)": ("", "RESTIC_PASSWORD"),
    }
    for name, (detail, fix) in expected.items():
        assert checks[name]["state"] == "fail", checks[name]
        assert detail in checks[name]["detail"] and fix in checks[name]["fix"], checks[name]
    assert checks["database"]["state"] == "ok"
    for secret in secrets_:
        assert secret not in result.stdout + result.stderr

    # the IMAP login right, the SMTP one wrong: the next problem shows
    env["AXI_IMAP_PASSWORD"] = full_env["AXI_IMAP_PASSWORD"]
    checks = by_name(doctor(env, tmp_path))
    assert "SMTP refused the login" in checks["email"]["detail"]
    assert "AXI_SMTP_PASSWORD" in checks["email"]["fix"]


def test_an_unreachable_database_or_ollama_and_a_bad_setting(cli_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    url = "postgresql://axi:pw-not-shown@127.0.0.1:1/axi"  # pragma: allowlist secret
    env = {**cli_env, "AXI_DATABASE_URL": url,
           "OLLAMA_HOST": "http://127.0.0.1:1"}
    result = doctor(env, tmp_path)
    checks = by_name(result)
    assert result.returncode == 1
    assert checks["database"]["state"] == "fail" and "AXI_DATABASE_URL" in checks["database"]["fix"]
    assert checks["local model"]["state"] == "fail"
    assert "start Ollama" in checks["local model"]["fix"]
    assert checks["Claude fallback"]["state"] == "off"
    assert checks["telegram"]["state"] == checks["email"]["state"] == "off"
    assert "pw-not-shown" not in result.stdout + result.stderr

    bad = subprocess.run([sys.executable, "-m", "bot.cli", "doctor"],
                         env={**cli_env, "AXI_LOCAL_NUM_CTX": "lots"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "AXI_LOCAL_NUM_CTX" in bad.stdout and "fail" in bad.stdout
