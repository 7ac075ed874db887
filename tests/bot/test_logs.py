"""Axi's logs (bot/logs.py) through the real `logging` machinery: plain lines or one JSON
object per line, and no secret of the settings in either — not in the message, not in
an exception's text or traceback, not in extra fields, not percent-encoded, not as the
token inside a push URL carrying other parameters."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from bot.config import Settings
from bot.logs import configure

SECRETS: dict[str, Any] = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-CleSecreteAnthropic42",  # pragma: allowlist secret
    "AXI_TELEGRAM_TOKEN": "7654321:AAE-jetonSecretTelegram",
    "AXI_DATABASE_URL": "postgresql://axi:Mot%2Fde%2Fpasse42@db.local:5432/axi",  # pragma: allowlist secret
    "AXI_SMTP_PASSWORD": "smtp-MotDePasse-7",  # pragma: allowlist secret
    "AXI_PUSH_URL_VEILLES": "https://kuma.example.fr/api/push/Qz8PushJetonVeilles?status=up&msg=OK&ping=",
}
SHOWN_SECRETS = ("CleSecreteAnthropic42", "jetonSecretTelegram", "Mot/de/passe42",
                 "Mot%2Fde%2Fpasse42", "smtp-MotDePasse-7", "Qz8PushJetonVeilles",
                 "axi_ZZjetonBearerDeLudo0123456789")  # pragma: allowlist secret


def leaks(text: str) -> list[str]:
    return [s for s in SHOWN_SECRETS if s in text]


@pytest.fixture(params=[False, True], ids=["plain", "json"])
def logged(request: pytest.FixtureRequest) -> Iterator[tuple[bool, io.StringIO]]:
    settings = Settings(_env_file=None, AXI_LOG_JSON=request.param,  # type: ignore[call-arg]
                        **SECRETS)
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure(settings, stream=stream)
    try:
        yield request.param, stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def write_everything() -> None:
    log = logging.getLogger("axi.test")
    log.warning("telegram: POST https://api.telegram.org/bot%s/getUpdates failed",
                SECRETS["AXI_TELEGRAM_TOKEN"])
    log.info("HTTP Request: GET https://kuma.example.fr/api/push/Qz8PushJetonVeilles"
             "?status=up&msg=veille+dpe&ping=1234 \"HTTP/1.1 200 OK\"")
    log.warning("client sent Authorization: Bearer axi_ZZjetonBearerDeLudo0123456789")
    log.info("proxy: /api/push/Qz8PushJetonVeilles answered 404")  # the token alone
    try:
        raise ConnectionError("cannot connect to postgresql://axi:Mot/de/passe42@db.local "
                              "(password Mot%2Fde%2Fpasse42, key sk-ant-api03-CleSecreteAnthropic42)")
    except ConnectionError:
        log.exception("database lost with smtp-MotDePasse-7 around")
    log.error("veille failed", extra={"veille": "dpe", "detail": {"jeton": SECRETS[
        "AXI_SMTP_PASSWORD"]}, "essais": 3})


def test_no_secret_reaches_a_log_line(logged: tuple[bool, io.StringIO]) -> None:
    as_json, stream = logged
    write_everything()
    output = stream.getvalue()
    assert leaks(output) == []
    assert output.count("***") >= 9
    lines = output.strip().splitlines()
    if not as_json:
        assert any(line.endswith("axi.test: telegram: POST https://api.telegram.org/bot***/"
                                 "getUpdates failed") for line in lines)
        assert "Traceback" in output
        assert "ConnectionError: cannot connect to postgresql://axi:***@db.local" in output
        return
    entries = [json.loads(line) for line in lines]  # one object per line
    assert len(entries) == 6
    first: dict[str, Any] = entries[0]
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["level"] == "WARNING" and first["logger"] == "axi.test"
    assert first["time"].endswith("+00:00")
    assert entries[1]["message"].startswith("HTTP Request: GET ***?status=up&msg=veille")
    assert entries[3]["message"] == "proxy: /api/push/*** answered 404"
    failure = entries[4]
    assert "ConnectionError: cannot connect to postgresql://axi:***@db.local" in (
        failure["exception"])
    last = entries[5]
    assert (last["veille"], last["essais"], last["detail"]) == ("dpe", 3, {"jeton": "***"})


def test_logging_configured_twice_keeps_one_handler() -> None:
    settings = Settings(_env_file=None, **SECRETS)  # type: ignore[call-arg]
    root = logging.getLogger()
    level, before = root.level, list(root.handlers)
    first = configure(settings, stream=io.StringIO())
    second = configure(settings, stream=io.StringIO())
    try:
        assert first not in root.handlers and root.handlers == [*before, second]
    finally:
        root.removeHandler(second)
        root.setLevel(level)


UVICORN_PROBE = """
import asyncio, logging
from bot.config import Settings
from bot.logs import configure
from channels.web import WebChannel
from tests.channels.test_web_guard import services

async def main():
    token = "7654321:AAE-jetonSecretTelegram"  # pragma: allowlist secret
    configure(Settings(_env_file=None, AXI_TELEGRAM_TOKEN=token))  # pragma: allowlist secret
    web = WebChannel("127.0.0.1", 0)
    await web.start(services())
    logging.getLogger("uvicorn.error").error("uvicorn saw bot7654321:AAE-jetonSecretTelegram")
    await web.stop()

asyncio.run(main())
"""


def test_the_web_servers_own_log_lines_are_redacted_too() -> None:
    """uvicorn logs through Axi's handler (the web channel gives it none of its own)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", UVICORN_PROBE], capture_output=True, text=True,
                       timeout=60, cwd=root, env={"PATH": "/usr/bin:/bin",
                                                  "PYTHONPATH": str(root)})
    assert r.returncode == 0, r.stderr
    assert "uvicorn.error: uvicorn saw bot***" in r.stderr
    assert "jetonSecretTelegram" not in r.stderr
