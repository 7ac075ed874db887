"""Files people send Axi on Telegram, fetched (`getFile`, then the download) before their
message is stored, so the content is kept with it: Telegram's download links expire after
an hour, and a file id alone is a promise, not the file.

Fetched only for known, unblocked people (a stranger could fill the disk; their files
stay on Telegram, by id) and only up to `max_bytes` each (the Bot API serves at most
20 MB); several files of a batch are fetched at once, each within `timeout_s`. A file
that cannot be fetched is no reason to lose the message: it is stored without the
content, and `missing` says why (shown to nobody but the record).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from telegram import Bot

from bot.inbound import Attachment, Inbound

log = logging.getLogger(__name__)

TOO_LARGE = "trop volumineux pour être téléchargé"
NOT_FETCHED_FOR_STRANGERS = "expéditeur inconnu : laissé sur Telegram"
FAILED = "téléchargement impossible"
AT_ONCE = 4


async def fetch_one(bot: Bot, attachment: Attachment, *, max_bytes: int,
                    timeout_s: float) -> Attachment:
    """The attachment with its content, or with why it has none."""
    if attachment.ref is None or attachment.data is not None:
        return attachment
    if attachment.size > max_bytes:
        return replace(attachment, missing=TOO_LARGE)
    try:
        async with asyncio.timeout(timeout_s):
            remote = await bot.get_file(attachment.ref)
            if remote.file_size is not None and remote.file_size > max_bytes:
                return replace(attachment, missing=TOO_LARGE)
            data = bytes(await remote.download_as_bytearray())
    except Exception as exc:  # whatever it is, the message must still be stored
        log.warning("Telegram file %s not fetched (kept by id): %s", attachment.ref, exc)
        return replace(attachment, missing=FAILED)
    if len(data) > max_bytes:
        return replace(attachment, missing=TOO_LARGE)
    return replace(attachment, data=data, size=len(data))


async def with_files(bot: Bot, inbounds: list[Inbound], *, max_bytes: int, timeout_s: float,
                     wanted: Callable[[str], Awaitable[bool]],
                     at_once: int = AT_ONCE) -> list[Inbound]:
    """The batch, its known senders' files fetched (`at_once` at a time: the bot's
    connection pool also carries the replies). A batch without files is returned as it
    is, at once: nothing to gather, so storing it waits for nothing."""
    if not any(item.attachments for item in inbounds):
        return inbounds
    gate = asyncio.Semaphore(at_once)

    async def fetch(a: Attachment) -> Attachment:
        async with gate:
            return await fetch_one(bot, a, max_bytes=max_bytes, timeout_s=timeout_s)

    async def one(item: Inbound) -> Inbound:
        if not item.attachments:
            return item
        if not await wanted(item.sender):
            return replace(item, attachments=tuple(
                replace(a, missing=NOT_FETCHED_FOR_STRANGERS) for a in item.attachments))
        files = await asyncio.gather(*(fetch(a) for a in item.attachments))
        return replace(item, attachments=tuple(files))

    return list(await asyncio.gather(*(one(i) for i in inbounds)))
