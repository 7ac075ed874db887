"""What the scheduled jobs (`jobs/`: the veilles, later backups and maintenance) get from
the core: one `JobServices` object, handed over by `Axi` when it starts the jobs the
composition root built (`ChannelSet.jobs`), and by the `axi veille` commands. Like the
channel contract, it lets `jobs/` (which imports httpx and APScheduler) stay out of the
core: the core never imports `jobs/`; `jobs/` imports `memory/`, `bot.config` and this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bot.config import Settings
from memory.store import MemoryStore

NotifyFn = Callable[..., Awaitable[list[int]]]


@dataclass
class JobServices:
    store: MemoryStore
    settings: Settings
    notify: NotifyFn
    """bot/notify.Notifier.notify: `notify(to, text, *, key, subject=None, html=None,
    attachments=(), cc=(), reply_to=None, kind="push"|"notice", urgent=False)`; `key`
    makes a repeated notification a no-op."""
    lock: Callable[[str], AbstractAsyncContextManager[Any]]
    """A PostgreSQL advisory try-lock held for the block: truthy when this process holds
    it, falsy when another process does."""
    clock: Callable[[], datetime]
    summarize: Callable[[str], Awaitable[str | None]] | None = None
    """An optional short French summary of a digest by the local model, as background
    work (it yields to people); None, or a None result: the digest goes out without it."""


class Job(Protocol):
    """A scheduled job set (the veilles' scheduler): started and stopped by `Axi`."""

    name: str

    async def start(self, services: JobServices) -> None: ...

    async def run(self) -> None:
        """Supervised like a channel's loop; return at once when there is none."""
        ...

    async def stop(self) -> None: ...
