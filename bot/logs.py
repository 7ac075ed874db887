"""Axi's logging: plain lines or one JSON object per line (AXI_LOG_JSON=true, for a log
collector), and never a secret in either (issue 13 §2).

Why here, once: every command configures logging through `configure` (bot/cli_chat.py),
and the one handler it installs on the root logger formats every record — Axi's, the
libraries', uvicorn's (the web channel hands uvicorn no handler of its own) — so the
redaction cannot be bypassed by a module that logs differently. A secret is any value of
a `SecretStr` setting (tokens, passwords, API keys, push URLs), the database URL's
password (also percent-encoded), the token part of an Uptime Kuma push URL (a request log
shows the URL with other query parameters), the password variables restic and its
backends read from the environment, and anything shaped like an Axi bearer token
(`axi_…`) or following `Bearer `. The message, its arguments, the exception's text and
traceback and the extra fields are all redacted. A secret shorter than MIN_SECRET_CHARS
is not looked for (it would blank ordinary words; such a value is no secret anyway).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import quote, urlsplit

from pydantic import SecretStr

from bot.config import Settings

MASK = "***"
MIN_SECRET_CHARS = 6
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
NOISY = ("httpx", "httpcore", "uvicorn.error")
ENV_SECRETS = ("RESTIC_PASSWORD", "B2_ACCOUNT_KEY", "AWS_SECRET_ACCESS_KEY",
               "AZURE_ACCOUNT_KEY", "OS_PASSWORD", "RESTIC_REST_PASSWORD")
"""Secrets read from the environment by restic and its backends, not by Axi's settings."""
PATTERNS = (
    (re.compile(r"\baxi_[A-Za-z0-9_-]{16,}"), "axi_" + MASK),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
)
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def secrets_of(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """Every secret value the settings and the environment hold (pure)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    environ = dict(os.environ) if environ is None else environ
    found: list[str] = [environ[name] for name in ENV_SECRETS if environ.get(name)]
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if not isinstance(value, SecretStr) or not value.get_secret_value():
            continue
        secret = value.get_secret_value().strip()
        found.append(secret)
        if name == "database_url":
            try:
                password = make_url(secret).password
            except (ArgumentError, ValueError):
                password = None
            if password:
                found.append(str(password))
        elif name.startswith("push_url"):
            parts = urlsplit(secret)
            found.append(f"{parts.scheme}://{parts.netloc}{parts.path}")
            token = parts.path.rstrip("/").rsplit("/", 1)[-1]
            if token:
                found.append(token)
    return found


class Redactor:
    """Replaces every secret (and its percent-encoded form) by MASK."""

    def __init__(self, secrets: Iterable[str]):
        values = {s for s in secrets if len(s) >= MIN_SECRET_CHARS}
        values |= {quote(s, safe="") for s in values}
        self.secrets = sorted(values, key=len, reverse=True)  # a URL before its token

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self(value)
        if isinstance(value, dict):
            return {k: self.deep(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.deep(v) for v in value]
        return value


class PlainFormatter(logging.Formatter):
    def __init__(self, redact: Redactor):
        super().__init__(PLAIN_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the
    record's extra fields, and `exception` / `stack` when there are."""

    def __init__(self, redact: Redactor):
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_") and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        plain = json.loads(json.dumps(entry, ensure_ascii=False, default=str))
        return json.dumps(self.redact.deep(plain), ensure_ascii=False)


class _AxiHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Axi's root handler (replaced, not stacked, when logging is configured again)."""


def configure(settings: Settings, *, quiet: bool = False, level: int | str | None = None,
              stream: TextIO | None = None) -> logging.Handler:
    """Install Axi's one root handler: JSON or plain, redacting every secret. `quiet`:
    warnings and above only (one-shot commands); `level` overrides both."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _AxiHandler):
            root.removeHandler(handler)
    redact = Redactor(secrets_of(settings))
    handler = _AxiHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if settings.log_json else PlainFormatter(redact))
    root.addHandler(handler)
    root.setLevel(level if level is not None else
                  logging.WARNING if quiet else settings.log_level)
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
