"""Fixtures for the llm tests: the loopback Ollama and Anthropic servers, the llm layer's
own config objects pointing at them, the real clients, a call recorder and an injectable
clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest

from bot.config import DEFAULT_FALLBACK_MODEL, DEFAULT_LOCAL_MODEL
from llm.anthropic_chat import AnthropicChat
from llm.config import AnthropicConfig, OllamaConfig
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.types import CallRecord
from tests.fakes.anthropic_server import TEST_API_KEY, FakeAnthropic
from tests.fakes.ollama_server import FakeOllama

NUM_CTX = 4096
EXTRACTION_MODEL = "qwen2.5:3b-instruct"


def local_config(ollama: FakeOllama, **overrides: Any) -> OllamaConfig:
    config = OllamaConfig(
        host=ollama.url,
        model=DEFAULT_LOCAL_MODEL,
        extraction_model=EXTRACTION_MODEL,
        num_ctx=NUM_CTX,
        keep_alive="45m",
        timeout_s=2.0,
    )
    return replace(config, **overrides)


def remote_config(anthropic: FakeAnthropic, **overrides: Any) -> AnthropicConfig:
    config = AnthropicConfig(
        api_key=TEST_API_KEY,
        base_url=anthropic.url,
        model=DEFAULT_FALLBACK_MODEL,
        timeout_s=5.0,
    )
    return replace(config, **overrides)


@pytest.fixture
def local_cfg(ollama_server: FakeOllama) -> OllamaConfig:
    ollama_server.models.append(EXTRACTION_MODEL)
    return local_config(ollama_server)


@pytest.fixture
def remote_cfg(anthropic_server: FakeAnthropic) -> AnthropicConfig:
    return remote_config(anthropic_server)


@pytest.fixture
async def local(local_cfg: OllamaConfig) -> AsyncIterator[OllamaChat]:
    async with OllamaChat(local_cfg) as chat:
        yield chat


@pytest.fixture
async def remote(remote_cfg: AnthropicConfig) -> AsyncIterator[AnthropicChat]:
    async with AnthropicChat(remote_cfg) as chat:
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
