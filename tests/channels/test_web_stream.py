"""LiveStreams (channels/web_stream.py): the worker's chunk function reaches only a request
that listens, never blocks or raises, is bounded, and a reply that starts over says so;
and how queued chunks become Server-Sent Events (channels/web_sse.py)."""

from __future__ import annotations

from channels.web_sse import chunk_events
from channels.web_stream import RESTART, LiveStreams


async def test_live_streams_listen_push_restart_bound_and_release() -> None:
    streams = LiveStreams(max_listeners=2, max_queued=3)
    assert streams.live("web:personne-1", "web-a") is None  # nobody listens
    assert streams.live("web:personne-1", None) is None
    listener = streams.listen("web-a")
    push = streams.live("web:personne-1", "web-a")
    assert push is not None
    push("Bon")
    push("jour")
    push("")  # nothing
    push(None)  # type: ignore[arg-type]  # never raises
    assert await listener.next() == ["Bon", "jour"]
    for piece in ("a", "b", "c", "d"):
        push(piece)  # one too many for the queue: dropped, counted
    assert listener.dropped == 1 and listener.drain() == ["a", "b", "c"]
    again = streams.live("web:personne-1", "web-a")  # the reply starts over
    assert again is not None
    again("Re")
    assert listener.drain() == [RESTART, "Re"]
    assert [e.decode() for e in chunk_events(["x", "y", RESTART, "z"])] == [
        'event: chunk\ndata: {"text": "xy"}\n\n', "event: restart\ndata: {}\n\n",
        'event: chunk\ndata: {"text": "z"}\n\n']
    streams.release(listener)
    assert streams.live("web:personne-1", "web-a") is None
    again("late")  # a worker still holding it: harmless
    assert listener.drain() == []
    first, _, _ = streams.listen("1"), streams.listen("2"), streams.listen("3")
    assert len(streams) == 2 and first.closed  # bounded: the oldest goes
