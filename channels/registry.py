"""The composition root of the channels: the one place that turns `Settings` into the
channels `axi run` runs (console, the HTTP server, and, as they are built, Telegram,
email, MCP) and, later, the scheduler's jobs. Imported lazily, only by the commands that
run channels, so `axi --help` or `axi people list` load no transport library.

Each channel module is imported here, inside the function that needs it: a channel that
is not configured costs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from bot.channel import Channel, ChannelSet
from bot.config import Settings

if TYPE_CHECKING:
    from channels.web_guard import WebConfig


def configured_channels(settings: Settings) -> frozenset[str]:
    names = {"console", "web"}
    names.add("axis")  # the mailbox Axis reads over MCP (channels/axis_channel.py)
    if settings.telegram_token is not None:
        names.add("telegram")
    if settings.email_address and settings.smtp_host:
        names.add("email")  # sending; reading too when AXI_IMAP_HOST is set
    return frozenset(names)


def _console(out: TextIO | None, *, interactive: bool, stream: bool) -> Channel:
    from channels.console import ConsoleChannel

    return ConsoleChannel(out, interactive=interactive, stream=stream)


def for_run(settings: Settings) -> ChannelSet:
    """`axi run`: every configured channel and the HTTP server."""
    from channels.console import OPERATOR_ADDRESS
    from channels.web import WebChannel

    channels: dict[str, Channel] = {
        "console": _console(None, interactive=False, stream=False),
    }
    if settings.telegram_token is not None:
        channels["telegram"] = telegram_channel(settings)
    if settings.email_address and settings.smtp_host:
        channels["email"] = email_channel(settings)
    channels["axis"] = axis_channel()  # what the outbox has for Axis: its mailbox
    # MCP joins here as its issue lands; the HTTP server starts last so every channel's
    # routes are mounted before it listens.
    from channels.site import SiteChannel

    channels["site"] = SiteChannel()  # the site's visitors read their replies in the request
    channels["web"] = WebChannel(web_config(settings))
    return ChannelSet(channels, configured_channels(settings), ("console", OPERATOR_ADDRESS))


def for_terminal(settings: Settings, out: TextIO | None = None, *, stream: bool = False
                 ) -> ChannelSet:
    """`axi ask`, `axi chat`, `axi confirm answer`: the console only (what they queue
    for other channels waits for `axi run`)."""
    from channels.console import OPERATOR_ADDRESS

    return ChannelSet({"console": _console(out, interactive=True, stream=stream)},
                      configured_channels(settings), ("console", OPERATOR_ADDRESS))


def console_address(person_id: int | None) -> str:
    """The console address of the operator, or of a person (`--as`)."""
    from channels.console import OPERATOR_ADDRESS, person_address

    return OPERATOR_ADDRESS if person_id is None else person_address(person_id)


def console_person(address: str) -> int | None:
    """The person a console address speaks as (`--as`), or None for the operator."""
    from channels.console import ConsoleChannel

    return ConsoleChannel.person_of_address(address)


def telegram_channel(settings: Settings) -> Channel:
    from channels.telegram import TelegramChannel, TelegramConfig

    assert settings.telegram_token is not None
    return TelegramChannel(TelegramConfig(
        token=settings.telegram_token.get_secret_value(), api_url=settings.telegram_api_url,
        file_url=settings.telegram_files_url, groups=settings.telegram_group_ids,
        max_file_bytes=int(settings.telegram_max_file_mb * 1024 * 1024),
        webhook_url=settings.telegram_webhook_url))


def axis_channel() -> Channel:
    """The Axis mailbox as a channel (MCP itself is served by the HTTP server)."""
    from channels.axis_channel import AxisChannel

    return AxisChannel()


def email_channel(settings: Settings) -> Channel:
    from channels.email import EmailChannel, EmailConfig, SmtpConfig
    from channels.email_imap import ImapConfig

    assert settings.email_address is not None and settings.smtp_host is not None
    imap = None
    if settings.imap_host:
        tls = settings.imap_tls.value
        imap = ImapConfig(
            host=settings.imap_host, port=settings.imap_port or (993 if tls == "ssl" else 143),
            user=settings.imap_user or settings.email_address,
            password=settings.imap_password.get_secret_value() if settings.imap_password else "",
            tls=tls, folder=settings.imap_folder)
    smtp_tls = settings.smtp_tls.value
    smtp = SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port or {"ssl": 465, "starttls": 587}.get(smtp_tls, 25),
        user=settings.smtp_user,
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        tls=smtp_tls)
    return EmailChannel(EmailConfig(
        address=settings.email_address, authserv_id=settings.mail_authserv_id, imap=imap,
        smtp=smtp, max_per_sender_hour=settings.email_max_per_sender_hour,
        max_per_hour=settings.email_max_per_hour,
        max_attachment_bytes=int(settings.email_max_attachment_mb * 1024 * 1024),
        done_folder=settings.imap_done_folder))


def web_config(settings: Settings) -> WebConfig:
    from channels.web_guard import WebConfig

    return WebConfig(
        host=settings.http_host, port=settings.http_port, public_host=settings.public_host,
        site_origins=settings.site_origin_list, reply_timeout_s=settings.web_reply_timeout_s,
        max_request_bytes=settings.web_max_request_kb * 1024,
        rate_per_minute=settings.web_rate_per_minute, agency_email=settings.agency_email,
        agency_cc=tuple(a.strip() for a in (settings.agency_cc or "").split(",") if a.strip()),
        trusted_proxies=settings.trusted_proxy_networks)
