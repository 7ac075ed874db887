"""`POST /api/chat` with `Accept: text/event-stream`: the reply as Server-Sent Events.

Events, each `data:` a JSON object: `accepted` {message_id} first; `notice` {text} for
each notice Axi sends about the message, as it appears (the outcome is read about every
second: that is the honest "waiting for the model" state); `chunk` {text} pieces of the
reply as the model writes them (when this process answers it, through LiveStreams);
`restart` {} when the reply starts over (a retry after a failure mid-stream: forget the
chunks so far); `reply` {reply, message_id, reply_id, notices} last (reply null when
Axi will not answer); or `pending` {message_id} when the wait ends first (then `GET
api/messages/ID`). While nothing else is sent, a `: keep-alive` comment goes at least
every `keepalive_s` (the Cloudflare tunnel drops a request silent for 100 s).

A client that disconnects ends only its stream: the message is accepted already and
will be answered; the listener is released whatever happened.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from bot.channel import ReplyOutcome
from channels.web_stream import RESTART, Listener

log = logging.getLogger(__name__)

KEEPALIVE = b": keep-alive\n\n"
POLL_S = 1.0
PENDING = "en_attente"

WaitReply = Callable[[int, float], Awaitable[ReplyOutcome]]


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One event (JSON never holds a raw newline, so one `data:` line is enough)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def chunk_events(items: list[str | object]) -> list[bytes]:
    """Queued items as events: consecutive texts joined into one `chunk`."""
    out: list[bytes] = []
    text: list[str] = []
    for item in items:
        if item is RESTART:
            if text:
                out.append(sse("chunk", {"text": "".join(text)}))
                text = []
            out.append(sse("restart", {}))
        elif isinstance(item, str):
            text.append(item)
    if text:
        out.append(sse("chunk", {"text": "".join(text)}))
    return out


def final_reply(outcome: ReplyOutcome) -> dict[str, Any]:
    return {"reply": outcome.reply, "message_id": outcome.message_id,
            "reply_id": outcome.reply_id, "notices": list(outcome.notices)}


def settled(outcome: ReplyOutcome) -> bool:
    """Answered, or closed without an answer (ignored, given up, held)."""
    return outcome.reply is not None or outcome.state != PENDING


async def reply_events(wait_reply: WaitReply, listener: Listener, message_id: int, *,
                       timeout_s: float, keepalive_s: float, poll_s: float = POLL_S
                       ) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    keepalive_s = max(0.01, keepalive_s)
    yield sse("accepted", {"message_id": message_id})
    last_sent = loop.time()
    told = 0
    getter: asyncio.Future[Any] | None = None
    waiter: asyncio.Future[Any] | None = None
    try:
        while True:
            now = loop.time()
            if waiter is None:
                waiter = asyncio.ensure_future(
                    wait_reply(message_id, max(0.0, min(poll_s, deadline - now))))
            if getter is None:
                getter = asyncio.ensure_future(listener.next())
            done, _ = await asyncio.wait({waiter, getter}, return_when=asyncio.FIRST_COMPLETED,
                                         timeout=max(0.0, last_sent + keepalive_s - now))
            out: list[bytes] = []
            if getter in done:
                out.extend(chunk_events(getter.result()))
                getter = None
            if waiter in done:
                try:
                    outcome = waiter.result()
                except Exception as exc:  # the database: the client asks again later
                    log.warning("reading the outcome of message #%s failed: %s",
                                message_id, exc)
                    yield b"".join([*out, sse("pending", {"message_id": message_id})])
                    return
                waiter = None
                out.extend(sse("notice", {"text": n}) for n in outcome.notices[told:])
                told = max(told, len(outcome.notices))
                if settled(outcome):
                    if getter is not None and getter.done():
                        out.extend(chunk_events(getter.result()))
                    elif getter is not None:
                        getter.cancel()  # an item it was woken for stays queued
                    getter = None
                    out.extend(chunk_events(listener.drain()))
                    out.append(sse("reply", final_reply(outcome)))
                    yield b"".join(out)
                    return
                if loop.time() >= deadline:
                    out.append(sse("pending", {"message_id": message_id}))
                    yield b"".join(out)
                    return
            if out:
                yield b"".join(out)
                last_sent = loop.time()
            elif loop.time() - last_sent >= keepalive_s * 0.999:
                yield KEEPALIVE
                last_sent = loop.time()
    finally:
        for task in (getter, waiter):
            if task is not None and not task.done():
                task.cancel()


class EventStream(StreamingResponse):
    """An SSE response that runs `on_close` when it ends, however it ends (even when the
    client left before the first event)."""

    def __init__(self, events: AsyncIterator[bytes], on_close: Callable[[], None]):
        super().__init__(events, media_type="text/event-stream", headers={
            "Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
