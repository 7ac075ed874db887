"""A thread with an event loop of its own, for the Telegram poller's fast path.

Why: the first thing a person sees after writing is the "…" placeholder, sent as soon as
`getUpdates` returns. On Axi's one event loop, each of the ~10 awaits between the poll's
response and the placeholder leaving (PTB, httpx, httpcore, anyio checkpoints) waited for
every other ready task first: workers, the outbox, drafts streaming. bench/telegram.py
measured it: 2.5× a bare echo bot's time at p95. Here the long poll and the placeholders
run on a loop nobody else uses; only the interpreter lock is shared. Storing the batch
stays on Axi's loop, where the database is: `call` awaits a coroutine run here.

Nothing here knows Telegram: it is a loop in a thread, started and stopped explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

STOP_TIMEOUT_S = 5.0


class IntakeLoop:
    def __init__(self, name: str):
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.tasks: set[asyncio.Task[Any]] = set()
        """Tasks started on this loop that nobody awaits (the placeholders): cancelled
        at stop."""

    def start(self) -> None:
        if self.running:
            return
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on this loop and await its result from the caller's loop; cancelling
        the caller cancels it here."""
        if self.loop is None or not self.running:
            coro.close()
            raise RuntimeError(f"{self.name}: the intake loop is not running")
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Start `coro` as a task of this loop; called from this loop's own thread."""
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def stop(self) -> None:
        """Cancel what runs here, close the loop, join the thread (bounded)."""
        thread, loop = self._thread, self.loop
        if thread is None or loop is None:
            return
        with contextlib.suppress(RuntimeError):  # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(STOP_TIMEOUT_S)
        self._thread = None
        self.loop = None
        self._ready.clear()
