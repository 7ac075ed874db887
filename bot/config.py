"""Axi's settings: one pydantic-settings class, loaded once and passed down.

Every value comes from the environment or a `.env` file in the working directory;
secrets are `SecretStr` so they never print. `.env.example` documents each one.
"""

from __future__ import annotations

import ipaddress
import re
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_LOCAL_MODEL = "mistral:7b-instruct-q4_K_M"
DEFAULT_FALLBACK_MODEL = "claude-sonnet-4-6"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org/bot"
DEFAULT_EMBED_MODEL = "nomic-embed-text"


class MailTLS(StrEnum):
    ssl = "ssl"
    starttls = "starttls"
    none = "none"


def default_data_dir() -> Path:
    """The platform user data dir (e.g. ~/.local/share/axi): Axi's permanent home."""
    return Path(platformdirs.user_data_dir("axi", appauthor=False))


class ConfigError(Exception):
    """The configuration is invalid; the message says which setting and how to fix it."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        env_ignore_empty=True,
    )

    # Memory
    database_url: SecretStr | None = Field(default=None, alias="AXI_DATABASE_URL")
    data_dir: Path = Field(default_factory=default_data_dir, alias="AXI_DATA_DIR")

    # LLM
    ollama_host: str = Field(default="http://127.0.0.1:11434", alias="OLLAMA_HOST")
    local_model: str = Field(default=DEFAULT_LOCAL_MODEL, alias="AXI_LOCAL_MODEL")
    local_extraction_model: str | None = Field(default=None, alias="AXI_LOCAL_EXTRACTION_MODEL")
    local_summary_model: str | None = Field(default=None, alias="AXI_LOCAL_SUMMARY_MODEL")
    local_num_ctx: int = Field(default=8192, ge=512, le=131072, alias="AXI_LOCAL_NUM_CTX")
    local_timeout_s: float = Field(default=120.0, gt=0, alias="AXI_LOCAL_TIMEOUT")
    local_keep_alive: str = Field(default="30m", alias="AXI_LOCAL_KEEP_ALIVE")
    local_slots: int = Field(default=1, ge=1, le=16, alias="AXI_LOCAL_SLOTS")
    # the prompt caches the server keeps (OLLAMA_NUM_PARALLEL with OLLAMA_MULTIUSER_CACHE=1):
    # the wait estimate guesses a prompt's cached part from as many recent prompts
    local_caches: int = Field(default=1, ge=1, le=64, alias="AXI_LOCAL_CACHES")
    background_quiet_s: float = Field(default=20.0, ge=0, le=3600,
                                      alias="AXI_BACKGROUND_QUIET")
    background_max_s: float = Field(default=120.0, gt=0, le=3600, alias="AXI_BACKGROUND_MAX")
    local_max_wait_s: float = Field(default=120.0, gt=0, le=86400, alias="AXI_LOCAL_MAX_WAIT")
    # off by default: while an inner-circle person used the local model within this many
    # seconds, clients' live messages go to the fallback (if allowed) and emails wait
    local_reserve_s: float = Field(default=0.0, ge=0, le=86400, alias="AXI_LOCAL_RESERVE_S")
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str | None = Field(default=None, alias="ANTHROPIC_BASE_URL")
    fallback_model: str = Field(default=DEFAULT_FALLBACK_MODEL, alias="AXI_FALLBACK_MODEL")
    fallback_timeout_s: float = Field(default=60.0, gt=0, alias="AXI_FALLBACK_TIMEOUT")
    # off by default: hybrid recall costs the CPU-only server an embedding per souvenir and
    # per message (and ~5 ms of ANN search per reply on a 2-core test machine); opt in
    # with a model pulled into Ollama (DEFAULT_EMBED_MODEL is the suggestion)
    embed_model: str | None = Field(default=None, alias="AXI_EMBED_MODEL")
    embed_min_similarity: float = Field(default=0.5, ge=-1.0, le=1.0,
                                        alias="AXI_EMBED_MIN_SIMILARITY")
    claude_monthly_budget_eur: float = Field(default=20.0, ge=0, alias="AXI_CLAUDE_MONTHLY_BUDGET")

    # Telegram
    telegram_token: SecretStr | None = Field(default=None, alias="AXI_TELEGRAM_TOKEN")
    telegram_api_url: str = Field(default=DEFAULT_TELEGRAM_API_URL, alias="AXI_TELEGRAM_API_URL")
    telegram_file_url: str | None = Field(default=None, alias="AXI_TELEGRAM_FILE_URL")
    telegram_webhook_url: str | None = Field(default=None, alias="AXI_TELEGRAM_WEBHOOK_URL")
    telegram_groups: str | None = Field(default=None, alias="AXI_TELEGRAM_GROUPS")
    telegram_max_file_mb: float = Field(default=20.0, gt=0, le=2000,
                                        alias="AXI_TELEGRAM_MAX_FILE_MB")

    # Email
    imap_host: str | None = Field(default=None, alias="AXI_IMAP_HOST")
    imap_port: int | None = Field(default=None, ge=1, le=65535, alias="AXI_IMAP_PORT")
    imap_user: str | None = Field(default=None, alias="AXI_IMAP_USER")
    imap_password: SecretStr | None = Field(default=None, alias="AXI_IMAP_PASSWORD")
    imap_tls: MailTLS = Field(default=MailTLS.ssl, alias="AXI_IMAP_TLS")
    smtp_host: str | None = Field(default=None, alias="AXI_SMTP_HOST")
    smtp_port: int | None = Field(default=None, ge=1, le=65535, alias="AXI_SMTP_PORT")
    smtp_user: str | None = Field(default=None, alias="AXI_SMTP_USER")
    smtp_password: SecretStr | None = Field(default=None, alias="AXI_SMTP_PASSWORD")
    smtp_tls: MailTLS = Field(default=MailTLS.starttls, alias="AXI_SMTP_TLS")
    email_address: str | None = Field(default=None, alias="AXI_EMAIL_ADDRESS")
    mail_authserv_id: str | None = Field(default=None, alias="AXI_MAIL_AUTHSERV_ID")
    imap_folder: str = Field(default="INBOX", min_length=1, max_length=200,
                             alias="AXI_IMAP_FOLDER")
    imap_done_folder: str | None = Field(default=None, max_length=200,
                                         alias="AXI_IMAP_DONE_FOLDER")
    email_max_per_sender_hour: int = Field(default=5, ge=0, le=10_000,
                                           alias="AXI_EMAIL_MAX_PER_SENDER_HOUR")
    email_max_per_hour: int = Field(default=50, ge=0, le=100_000, alias="AXI_EMAIL_MAX_PER_HOUR")
    email_max_attachment_mb: float = Field(default=10.0, gt=0, le=200,
                                           alias="AXI_EMAIL_MAX_ATTACHMENT_MB")

    # HTTP
    http_host: str = Field(default="127.0.0.1", alias="AXI_HTTP_HOST")
    http_port: int = Field(default=5000, ge=1, le=65535, alias="AXI_HTTP_PORT")
    public_host: str = Field(default="axi.icidordogne.fr", min_length=1, max_length=253,
                             alias="AXI_PUBLIC_HOST")
    """The public name Axi is reached by (the Cloudflare tunnel): MCP's allowed host and
    OAuth's issuer."""
    site_origins: str = Field(default="", max_length=4000, alias="AXI_SITE_ORIGINS")
    """The agency sites allowed by CORS on /chat-proxy and /contact, comma-separated
    origins (e.g. https://www.icidordogne.fr)."""
    web_reply_timeout_s: float = Field(default=90.0, ge=1, le=600,
                                       alias="AXI_WEB_REPLY_TIMEOUT_S")
    web_max_request_kb: int = Field(default=64, ge=1, le=10_240, alias="AXI_WEB_MAX_REQUEST_KB")
    web_rate_per_minute: int = Field(default=30, ge=1, le=100_000,
                                     alias="AXI_WEB_RATE_PER_MINUTE")
    """Requests per minute allowed per token and per client IP (the API, the site)."""
    trusted_proxies: str = Field(default="127.0.0.0/8,::1/128", max_length=4000,
                                 alias="AXI_TRUSTED_PROXIES")
    """The peers whose `CF-Connecting-IP` header is believed (the Cloudflare tunnel's
    cloudflared as Axi sees it): comma-separated IPs or networks. Loopback by default; in
    Docker, cloudflared reaches Axi through the bridge's gateway (e.g. 172.18.0.1)."""
    visitor_retention_days: int = Field(default=365, ge=1, le=36_500,
                                        alias="AXI_VISITOR_RETENTION_DAYS")

    # Veilles and backups
    ademe_api_url: str = Field(
        default="https://data.ademe.fr/data-fair/api/v1/datasets", alias="AXI_ADEME_API_URL"
    )
    geo_api_url: str = Field(default="https://geo.api.gouv.fr", alias="AXI_GEO_API_URL")
    annuaire_api_url: str = Field(
        default="https://api-lannuaire.service-public.fr/api/explore/v2.1",
        alias="AXI_ANNUAIRE_API_URL")
    """The public "annuaire de l'administration" (town halls' phone and email)."""
    dvf_url: str = Field(
        default="https://files.data.gouv.fr/geo-dvf/latest/csv/{year}/departements/24.csv.gz",
        alias="AXI_DVF_URL")
    """Where `axi dvf import` fetches geo-DVF by default; `{year}` is each of the last
    five years."""
    trello_key: SecretStr | None = Field(default=None, alias="AXI_TRELLO_KEY")
    trello_token: SecretStr | None = Field(default=None, alias="AXI_TRELLO_TOKEN")
    trello_list_id: str | None = Field(default=None, max_length=100, alias="AXI_TRELLO_LIST_ID")
    trello_api_url: str = Field(default="https://api.trello.com/1", alias="AXI_TRELLO_API_URL")
    veille_user_agent: str = Field(
        default="Axi/1.0 (veille ICI Dordogne; +https://axi.icidordogne.fr)", max_length=300,
        alias="AXI_VEILLE_USER_AGENT")
    veille_allowed_networks: str = Field(default="", max_length=4000,
                                         alias="AXI_VEILLE_ALLOWED_NETWORKS")
    """Non-public networks the competitor veille may fetch all the same (comma-separated
    IPs or networks). Empty by default: competitors' pages, their redirects and their
    next pages are read only at public addresses, never the LAN, the Proxmox admin,
    Ollama, Axi itself or a metadata address (jobs/fetch_guard.py)."""
    backup_repository: str | None = Field(default=None, alias="AXI_BACKUP_REPOSITORY")
    """The local restic repository (e.g. a directory on a second disk); restic reads
    RESTIC_PASSWORD / RESTIC_PASSWORD_FILE itself."""
    backup_remote_repository: str | None = Field(default=None,
                                                 alias="AXI_BACKUP_REMOTE_REPOSITORY")
    """An optional remote restic repository (b2:, s3:, sftp:, rest:…), configured through
    restic's own variables (B2_ACCOUNT_ID, AWS_ACCESS_KEY_ID…)."""
    backup_schedule: str = Field(default="30 3 * * *", max_length=100,
                                 alias="AXI_BACKUP_SCHEDULE")
    """When `axi run` takes the daily backup (a 5-field cron line, Europe/Paris)."""
    backup_verify_schedule: str = Field(default="0 5 * * 0", max_length=100,
                                        alias="AXI_BACKUP_VERIFY_SCHEDULE")
    """When `axi run` verifies the backups by restoring the latest (weekly by default)."""

    # Monitoring (Uptime Kuma push monitors: pinged after each success)
    push_url_backup: SecretStr | None = Field(default=None, alias="AXI_PUSH_URL_BACKUP")
    push_url_verify: SecretStr | None = Field(default=None, alias="AXI_PUSH_URL_VERIFY")
    push_url_veilles: SecretStr | None = Field(default=None, alias="AXI_PUSH_URL_VEILLES")

    # Reaching people
    agency_email: str | None = Field(default=None, alias="AXI_AGENCY_EMAIL")
    agency_cc: str | None = Field(default=None, alias="AXI_AGENCY_CC")
    quiet_hours: str = Field(default="21:00-07:30", alias="AXI_QUIET_HOURS")

    # Pipeline
    timezone: str = Field(default="Europe/Paris", alias="AXI_TIMEZONE")
    worker_concurrency: int = Field(default=4, ge=1, le=64, alias="AXI_WORKER_CONCURRENCY")
    log_level: str = Field(default="INFO", alias="AXI_LOG_LEVEL")
    log_json: bool = Field(default=False, alias="AXI_LOG_JSON")
    """One JSON object per log line (for a log collector) instead of plain text."""

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("database_url")
    @classmethod
    def _valid_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_database_url(value.get_secret_value())
        return value

    @field_validator("embed_model", mode="before")
    @classmethod
    def _embeddings_off(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "off", "none"}):
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _empty_dir_is_default(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return default_data_dir()
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (e.g. Europe/Paris)") from exc
        return value

    @field_validator("telegram_api_url", "telegram_file_url", "telegram_webhook_url",
                     "ademe_api_url", "geo_api_url", "annuaire_api_url", "trello_api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None if value is None or not value.strip() else value
        value = value.strip()
        if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
            raise ValueError(f"must be an http(s) URL, not {value!r}")
        return value

    @field_validator("imap_tls")
    @classmethod
    def _imap_tls(cls, value: MailTLS) -> MailTLS:
        if value == MailTLS.starttls:
            # aioimaplib cannot upgrade a connection to TLS: refuse rather than send the
            # password in clear
            raise ValueError("starttls is not supported for IMAP (the IMAP library cannot "
                             "upgrade a connection): use ssl (port 993), or none on a "
                             "loopback server only")
        return value

    @field_validator("email_address", "imap_done_folder", "mail_authserv_id", "imap_host",
                     "smtp_host", "imap_user", "smtp_user")
    @classmethod
    def _blank_is_none(cls, value: str | None) -> str | None:
        return value.strip() if value is not None and value.strip() else None

    @field_validator("telegram_groups")
    @classmethod
    def _group_ids(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for part in value.replace(";", ",").split(","):
            part = part.strip()
            if part and not part.lstrip("-").isdigit():
                raise ValueError(f"group ids are numbers (e.g. -1001234567890), not {part!r}")
        return value.strip()

    @property
    def telegram_group_ids(self) -> frozenset[int]:
        parts = (self.telegram_groups or "").replace(";", ",").split(",")
        return frozenset(int(p.strip()) for p in parts if p.strip())

    @property
    def telegram_files_url(self) -> str:
        """AXI_TELEGRAM_FILE_URL, else derived from the API URL (…/bot → …/file/bot)."""
        if self.telegram_file_url:
            return self.telegram_file_url
        base = self.telegram_api_url
        return base[: -len("/bot")] + "/file/bot" if base.endswith("/bot") else base + "/file/bot"

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        from bot.quiet_hours import QuietHours

        QuietHours.parse(value)  # ValueError says what a valid value looks like
        return value.strip()

    @property
    def site_origin_list(self) -> tuple[str, ...]:
        return tuple(o.strip().rstrip("/") for o in self.site_origins.split(",") if o.strip())

    @field_validator("site_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in (o.strip() for o in value.split(",")):
            if origin and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:\d{1,5})?/?", origin):
                raise ValueError(f"not an origin (scheme://host[:port]): {origin!r}")
        return value.strip()

    @property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                              ...]:
        return tuple(ipaddress.ip_network(p.strip(), strict=False)
                     for p in self.trusted_proxies.split(",") if p.strip())

    @property
    def veille_allowed_network_list(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                   ...]:
        return tuple(ipaddress.ip_network(p.strip(), strict=False)
                     for p in self.veille_allowed_networks.split(",") if p.strip())

    @field_validator("trusted_proxies", "veille_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        for network in (p.strip() for p in value.split(",")):
            if not network:
                continue
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network (e.g. 127.0.0.1, "
                                 f"172.16.0.0/12): {network!r}") from None
        return value.strip()

    @field_validator("public_host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip().lower()
        if not re.fullmatch(r"[a-z0-9.-]+(:\d{1,5})?", value):
            raise ValueError(f"a host name (e.g. axi.icidordogne.fr), not {value!r}")
        return value

    @field_validator("agency_email")
    @classmethod
    def _one_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if value.count("@") != 1 or " " in value or value.startswith("@") or value.endswith("@"):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None


def check_database_url(url: str) -> None:
    """Raise ValueError (never showing the password) unless `url` is a PostgreSQL URL
    whose ports are numbers from 1 to 65535."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    example = "expected e.g. postgresql://user:password@host:5432/axi"
    try:
        parsed = make_url(url.strip())
        port = parsed.port
    except (ArgumentError, ValueError, TypeError):
        # make_url parses the port with int() and says so with the raw URL: not shown
        raise ValueError(f"not a valid URL (check the host and port); {example}") from None
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise ValueError(f"not a PostgreSQL URL ({parsed.get_backend_name()!r}); {example}")
    query_ports = parsed.query.get("port") or ()
    if isinstance(query_ports, str):
        query_ports = (query_ports,)
    ports = [str(port)] if port is not None else []
    ports += [p for q in query_ports for p in q.split(",")]
    for p in ports:
        if not (p.strip().isascii() and p.strip().isdigit() and 1 <= int(p) <= 65535):
            raise ValueError(f"the port must be a number from 1 to 65535, not {p!r}; {example}")


def load_settings(**overrides: Any) -> Settings:
    """Load settings once; turn validation errors into one readable ConfigError (one line:
    each invalid setting by its environment variable, then what is wrong with it)."""
    try:
        return Settings(**overrides)
    except UnicodeDecodeError as exc:  # pydantic-settings reads .env as UTF-8
        raise ConfigError(f"the .env file in {Path.cwd()} is not UTF-8 text (byte "
                          f"{exc.object[exc.start]:#04x} at offset {exc.start:,})") from None
    except OSError as exc:
        where = exc.filename or ".env"
        raise ConfigError(f"cannot read {where} in {Path.cwd()}: {exc.strerror or exc}") from None
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "?"
            msg = " ".join(str(err["msg"]).removeprefix("Value error, ").split())
            problems.append(f"{loc}: {msg}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def redacted(settings: Settings) -> dict[str, str]:
    """Effective settings by environment variable name, secrets replaced by a marker."""
    out: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        key = field.alias or name.upper()
        if isinstance(value, SecretStr):
            out[key] = "********" if value.get_secret_value() else "(empty)"
        elif value is None:
            out[key] = "(not set)"
        elif isinstance(value, Enum):
            out[key] = str(value.value)
        else:
            out[key] = str(value)
    if settings.database_url is not None:
        out["AXI_DATABASE_URL"] = redact_url(settings.database_url.get_secret_value())
    return out


def redact_url(url: str) -> str:
    """postgresql://user:pw@host/db -> postgresql://user:***@host/db (the password only)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "(unparseable URL)"
    return parsed.render_as_string(hide_password=True)
