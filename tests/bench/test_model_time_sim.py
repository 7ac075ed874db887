"""bench/model_time_sim.SharedCpuOllama as Ollama's runner behaves when a client leaves:
a prompt being evaluated is read to its end (sharing the CPU, holding its slot) and stays
cached; a request still queued for a slot is dropped at once. Driven by the real
`ollama` client, as bench/model_time.py's Axi drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from ollama import AsyncClient

from bench.model_time_sim import SharedCpuOllama
from bot.config import DEFAULT_LOCAL_MODEL
from tests.fakes.cpu_model import CpuConfig
from tests.waiting import until

MODEL = DEFAULT_LOCAL_MODEL
SCALE = 0.005  # a simulated second takes 5 ms
CTX = {"num_ctx": 4096}
LONG = " ".join(f"mot{i}" for i in range(3000))  # ~3,000 tokens: 50 simulated seconds


@pytest.fixture
async def server() -> AsyncIterator[SharedCpuOllama]:
    cpu = SharedCpuOllama(CpuConfig(time_scale=SCALE, load_s=0.0, num_parallel=1,
                                    reply_tokens=5), tick_s=0.25)
    cpu.start()
    yield cpu
    cpu.stop()


async def _cancel_after(server: SharedCpuOllama, client: AsyncClient, prompt: str,
                        wall_s: float) -> None:
    """Ask, wait until the server holds the request and `wall_s` more, then leave."""
    before = len(server.records)
    task = asyncio.ensure_future(client.chat(MODEL, [{"role": "user", "content": prompt}],
                                             stream=False, options=CTX))
    await until(lambda: len(server.records) > before, within=5)
    await asyncio.sleep(wall_s)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_prompt_cut_while_read_is_read_to_its_end_and_stays_cached(
        server: SharedCpuOllama) -> None:
    client = AsyncClient(host=server.url, timeout=10)
    try:
        await _cancel_after(server, client, LONG, 2 * SCALE)  # 2 of its ~50 simulated seconds
        cut = server.records[0]
        await until(lambda: not server.computing, within=5)
        assert cut.finished_s is None  # nobody took its reply
        # its whole prompt is in the slot's cache: asked again, nothing is read again
        again = await client.chat(MODEL, [{"role": "user", "content": LONG}], options=CTX)
        assert server.records[1].cached_tokens >= cut.prompt_tokens - 1
        assert again.message.content
    finally:
        await client.close()


async def test_the_cut_prompt_holds_its_slot_until_read(server: SharedCpuOllama) -> None:
    client = AsyncClient(host=server.url, timeout=10)
    try:
        await _cancel_after(server, client, LONG, 2 * SCALE)
        await client.chat(MODEL, [{"role": "user", "content": "Bonjour"}], options=CTX)
        cut, short = server.records
        read_end = cut.arrival_s + cut.prompt_tokens / server.config.prompt_rate
        assert short.arrival_s < read_end - 10  # came while the cut prompt was read...
        assert short.arrival_s + short.queue_s >= read_end - 1  # ... and waited for it
    finally:
        await client.close()


async def test_a_request_cut_while_queued_is_dropped(server: SharedCpuOllama) -> None:
    client = AsyncClient(host=server.url, timeout=10)
    try:
        first = asyncio.ensure_future(client.chat(
            MODEL, [{"role": "user", "content": LONG}], options=CTX))
        await until(lambda: server.computing, within=5)
        await _cancel_after(server, client, LONG + " encore", 2 * SCALE)  # queued behind it
        await first
        assert len(server.records) == 2
        assert server.records[1].slot is None and server.records[1].finished_s is None
    finally:
        await client.close()
