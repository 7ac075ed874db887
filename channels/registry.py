"""The composition root of the channels: the one place that turns `Settings` into the
channels `axi run` runs (console, the HTTP server, and, as they are built, Telegram,
email, MCP) and, later, the scheduler's jobs. Imported lazily, only by the commands that
run channels, so `axi --help` or `axi people list` load no transport library.

Each channel module is imported here, inside the function that needs it: a channel that
is not configured costs nothing.
"""

from __future__ import annotations

from typing import TextIO

from bot.channel import Channel, ChannelSet
from bot.config import Settings


def configured_channels(settings: Settings) -> frozenset[str]:
    names = {"console", "web"}
    if settings.telegram_token is not None:
        names.add("telegram")
    if settings.imap_host and settings.smtp_host:
        names.add("email")
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
    # email and MCP join here as their issues land; the HTTP server starts last so every
    # channel's routes are mounted before it listens.
    channels["web"] = WebChannel(settings.http_host, settings.http_port)
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
