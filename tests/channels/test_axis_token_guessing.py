"""Guessing tokens on Axis's endpoints (revB): /briefing, /memory and /mcp looked up
every bearer token they were shown, from one IP, without any limit (the token API counts
a client's IP before any lookup). Past `rate_per_minute` refused tokens from one IP,
429 with Retry-After and no lookup; Axis's own token, from another IP, still works."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from memory.database import Database
from tests.channels.axis_support import AxisWeb, axis_axi
from tests.fakes.ollama_server import FakeOllama

RATE = 30


@pytest.fixture
async def box(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama) -> AsyncIterator[AxisWeb]:
    async with axis_axi(db, database_url, test_data_dir, ollama_server,
                        rate_per_minute=RATE) as b:
        yield b


@pytest.mark.parametrize("path", ["/briefing", "/memory", "/mcp"])
async def test_guessed_tokens_are_limited_per_ip(box: AxisWeb, path: str) -> None:
    method = "POST" if path == "/mcp" else "GET"
    async with httpx.AsyncClient(base_url=box.url, timeout=15) as client:
        codes = []
        for i in range(RATE + 10):
            response = await client.request(method, path, json={} if method == "POST" else None,
                                            headers={"Authorization": f"Bearer axi_devine-{i}",
                                                     "CF-Connecting-IP": "203.0.113.5",
                                                     "Accept": "application/json, "
                                                               "text/event-stream"})
            codes.append(response.status_code)
        assert codes[:RATE] == [401] * RATE and set(codes[RATE:]) == {429}
        assert int(response.headers["Retry-After"]) >= 1
        if path == "/briefing":  # Axis itself, from elsewhere, is not affected
            ok = await client.get(path, headers={**box.auth("axis"),
                                                 "CF-Connecting-IP": "203.0.113.6"})
            assert ok.status_code == 200
