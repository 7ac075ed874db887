"""Fixtures for the llm tests: the loopback Ollama and Anthropic servers, settings
pointing at them, the real clients, a call recorder and an injectable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.config import DEFAULT_FALLBACK_MODEL, DEFAULT_LOCAL_MODEL, Settings
from llm.anthropic_chat import AnthropicChat
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import CallRecord
from tests.fakes.anthropic_server import TEST_API_KEY, FakeAnthropic
from tests.fakes.ollama_server import FakeOllama

NUM_CTX = 4096


def make_settings(ollama: FakeOllama, anthropic: FakeAnthropic, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "OLLAMA_HOST": ollama.url,
        "AXI_LOCAL_MODEL": DEFAULT_LOCAL_MODEL,
        "AXI_LOCAL_EXTRACTION_MODEL": "qwen2.5:3b-instruct",
        "AXI_LOCAL_SUMMARY_MODEL": "",
        "AXI_LOCAL_NUM_CTX": NUM_CTX,
        "AXI_LOCAL_KEEP_ALIVE": "45m",
        "AXI_LOCAL_TIMEOUT": 2.0,
        "ANTHROPIC_API_KEY": TEST_API_KEY,
        "ANTHROPIC_BASE_URL": anthropic.url,
        "AXI_FALLBACK_MODEL": DEFAULT_FALLBACK_MODEL,
        "AXI_FALLBACK_TIMEOUT": 5.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> Settings:
    ollama_server.models.append("qwen2.5:3b-instruct")
    return make_settings(ollama_server, anthropic_server)


@pytest.fixture
async def local(settings: Settings) -> AsyncIterator[OllamaChat]:
    async with OllamaChat(settings) as chat:
        yield chat


@pytest.fixture
async def remote(settings: Settings) -> AsyncIterator[AnthropicChat]:
    async with AnthropicChat(settings) as chat:
        yield chat


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    async def __call__(self, record: CallRecord) -> None:
        self.records.append(record)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def router(local: OllamaChat, remote: AnthropicChat, recorder: Recorder, clock: Clock) -> Router:
    return Router(local, remote, record=recorder, clock=clock, breaker_threshold=3,
                  breaker_cooldown_s=60.0)
