"""Slow clients against Axi's real HTTP server (uvicorn, real sockets): a request's head
sent a byte at a time ("slowloris"), or never sent, no longer holds a connection for ever
(channels/web_slow.py); a client that sends its head in time is served as before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import Axi
from channels.web import WebChannel
from channels.web_guard import WebConfig
from memory.database import Database
from tests.bot.test_pipeline import make_settings
from tests.conftest import empty_tables
from tests.fakes.ollama_server import FakeOllama

HEAD_S = 0.5


@pytest.fixture
async def server(db: Database, database_url: str | None, test_data_dir: Path,
                 ollama_server: FakeOllama) -> AsyncIterator[int]:
    await empty_tables(db)
    web = WebChannel(WebConfig(host="127.0.0.1", port=0, head_timeout_s=HEAD_S))
    async with Axi(make_settings(ollama_server, None, database_url, test_data_dir),
                   {"web": web}) as axi:
        await axi.start_channels()
        yield web.port


async def closed_while_dripping(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                                head: bytes, *, within: float) -> float:
    """Send `head`, then one more header byte every 0.1 s (so uvicorn's keep-alive timer,
    cancelled by any byte, never fires); the seconds until the server closes the
    connection (the test fails if it is still open after `within`)."""
    began = time.monotonic()
    writer.write(head)
    while time.monotonic() - began < within:
        try:
            got = await asyncio.wait_for(reader.read(1024), 0.1)
        except TimeoutError:
            writer.write(b"X")  # never the blank line that ends a head
            continue
        assert got == b"", f"answered before its head was whole: {got[:80]!r}"
        return time.monotonic() - began
    raise AssertionError(f"the connection was still open after {within} s")


SLOW = b"GET /health HTTP/1.1\r\nHost: axi\r\nX-A: "


async def test_a_head_sent_a_byte_at_a_time_is_cut(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        took = await closed_while_dripping(reader, writer, SLOW, within=HEAD_S + 5)
    finally:
        writer.close()
    assert took >= HEAD_S * 0.9


async def test_a_connection_that_never_sends_anything_is_closed(server: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        assert await asyncio.wait_for(reader.read(1024), HEAD_S + 5) == b""
    finally:
        writer.close()


async def test_a_head_in_time_is_served_and_a_slow_second_one_is_cut(server: int) -> None:
    """A head in two parts within the deadline is answered; on the same kept-alive
    connection the next request's head has a deadline of its own."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server)
    try:
        writer.write(b"GET /health HTTP/1.1\r\n")
        await asyncio.sleep(HEAD_S / 2)
        writer.write(b"Host: axi\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        await reader.readexactly(length)
        await closed_while_dripping(reader, writer, SLOW, within=HEAD_S + 5)
    finally:
        writer.close()
