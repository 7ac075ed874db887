"""What the Telegram channel does once, around its start: check the token for
`axi doctor` (getMe, nothing polled or sent) and register the bot's commands in French,
per chat for the inner circle. Kept apart from the poller and the sender."""

from __future__ import annotations

import contextlib
import logging

from telegram import Bot, BotCommand, BotCommandScopeChat
from telegram.error import InvalidToken, NetworkError, TelegramError
from telegram.request import HTTPXRequest

from bot.channel import ChannelServices, ProbeFailed
from channels.telegram_updates import CHANNEL

log = logging.getLogger(__name__)

COMMANDS = (("start", "Commencer"), ("aide", "Ce que je sais faire"),
            ("local", "Ce message ne quitte jamais le serveur"))
"""Everyone's commands; the inner circle's chats also list the core's (bot/commands.py)."""


async def probe_token(token: str, api_url: str, file_url: str) -> str:
    """For `axi doctor`: the token works (getMe), without polling or sending."""
    if ":" not in token:
        raise ProbeFailed("AXI_TELEGRAM_TOKEN does not look like a bot token",
                          "copy the token @BotFather gave (123456:ABC…) into "
                          "AXI_TELEGRAM_TOKEN")
    bot = Bot(token, base_url=api_url, base_file_url=file_url,
              request=HTTPXRequest(connect_timeout=10.0, read_timeout=15.0))
    try:
        await bot.initialize()  # getMe
        return f"bot @{bot.username}"
    except InvalidToken:
        raise ProbeFailed("Telegram refused the token (401 Unauthorized)",
                          "ask @BotFather for the bot's token (/mybots → API Token), set "
                          "AXI_TELEGRAM_TOKEN, restart Axi") from None
    except NetworkError as exc:
        raise ProbeFailed(f"cannot reach the Telegram Bot API ({exc})",
                          "check the server's internet access (and AXI_TELEGRAM_API_URL "
                          "if set)") from None
    except TelegramError as exc:
        raise ProbeFailed(f"Telegram answered: {exc}",
                          "check AXI_TELEGRAM_TOKEN and AXI_TELEGRAM_API_URL") from None
    finally:
        with contextlib.suppress(Exception):
            await bot.shutdown()


async def register_commands(bot: Bot, services: ChannelServices) -> None:
    """Everyone sees /start, /aide, /local; each inner-circle chat also sees the
    commands its person may use. Failing to register is logged, never fatal."""
    base = [BotCommand(c, d) for c, d in COMMANDS]
    try:
        await bot.set_my_commands(base)
        for relation, menu in sorted(services.commands.items()):
            extra = [BotCommand(name, description) for name, description in menu
                     if name not in dict(COMMANDS)]
            if not extra:
                continue
            for address in await services.addresses_of(CHANNEL, frozenset({relation})):
                if address.lstrip("-").isdigit():
                    await bot.set_my_commands(
                        base + extra, scope=BotCommandScopeChat(int(address)))
    except TelegramError as exc:
        log.warning("Telegram commands not registered: %s", exc)
