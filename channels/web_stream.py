"""Live replies for the web: the worker shows a reply's chunks as the model writes them
(`Channel.live`), and the request that sent the message streams them to its client
(Server-Sent Events, channels/web_sse.py). Keyed by the inbound message's thread
reference, which the web API makes unique per request (`web-<uuid4>`).

A request registers a `Listener` BEFORE its message is accepted (so no chunk can come
before anyone listens), and releases it when its response ends, whatever the client did.
The worker calls the chunk function synchronously in the same event loop: it never
blocks and never raises (a full queue drops the chunk and counts it: the final `reply`
event carries the whole text anyway). A message answered a second time (a retry after a
failure mid-stream) gets a fresh chunk function, and the listener sees `RESTART` first,
so its client forgets the partial text it was shown.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from typing import Final

from bot.channel import ChunkFn

RESTART: Final = object()
"""Queued when a message's reply starts over: what was streamed so far is void."""

MAX_QUEUED = 4096
MAX_LISTENERS = 10_000


class Listener:
    """One request waiting for one message's reply chunks."""

    def __init__(self, thread_ref: str, max_queued: int = MAX_QUEUED):
        self.thread_ref = thread_ref
        self.queue: asyncio.Queue[str | object] = asyncio.Queue(maxsize=max(1, max_queued))
        self.attempts = 0
        self.dropped = 0
        self.closed = False

    def _put(self, item: str | object) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped += 1

    def chunk_fn(self) -> ChunkFn:
        """A new attempt at the reply: its chunk function (never blocks, never raises)."""
        self.attempts += 1
        if self.attempts > 1:
            self._put(RESTART)

        def push(text: str) -> None:
            with contextlib.suppress(Exception):
                if isinstance(text, str) and text:
                    self._put(text)

        return push

    async def next(self) -> list[str | object]:
        """Wait for at least one item, then take every item queued (in order)."""
        items = [await self.queue.get()]
        items.extend(self.drain())
        return items

    def drain(self) -> list[str | object]:
        items: list[str | object] = []
        while True:
            try:
                items.append(self.queue.get_nowait())
            except asyncio.QueueEmpty:
                return items


class LiveStreams:
    """The listeners of this process, by thread reference; bounded (the oldest is
    dropped past `max_listeners`: its request then gets the reply without chunks)."""

    def __init__(self, *, max_listeners: int = MAX_LISTENERS, max_queued: int = MAX_QUEUED):
        self.max_listeners = max_listeners
        self.max_queued = max_queued
        self._listeners: OrderedDict[str, Listener] = OrderedDict()

    def listen(self, thread_ref: str) -> Listener:
        listener = Listener(thread_ref, self.max_queued)
        old = self._listeners.pop(thread_ref, None)
        if old is not None:
            old.closed = True
        self._listeners[thread_ref] = listener
        while len(self._listeners) > self.max_listeners:
            _, evicted = self._listeners.popitem(last=False)
            evicted.closed = True
        return listener

    def release(self, listener: Listener) -> None:
        listener.closed = True
        if self._listeners.get(listener.thread_ref) is listener:
            del self._listeners[listener.thread_ref]

    def live(self, conversation: str, thread_ref: str | None) -> ChunkFn | None:
        """A chunk function when a request listens for this message, else None (the
        worker then asks the model without streaming)."""
        if not thread_ref:
            return None
        listener = self._listeners.get(thread_ref)
        return listener.chunk_fn() if listener is not None else None

    def __len__(self) -> int:
        return len(self._listeners)
