"""AnthropicChat against the loopback Messages API: request shape, JSON and SSE replies,
and each HTTP failure translated to its typed error (no SDK retries)."""

from __future__ import annotations

import pytest

from bot.config import DEFAULT_FALLBACK_MODEL
from llm.anthropic_chat import AnthropicChat, to_anthropic
from llm.config import AnthropicConfig
from llm.errors import AuthError, LLMTimeout, LLMUnavailable, Overloaded, RateLimited
from llm.types import ChatMessage
from tests.fakes.anthropic_server import TEST_API_KEY, FakeAnthropic
from tests.fakes.loopback import closed_port
from tests.llm.conftest import remote_config

CONVO = [
    ChatMessage("system", "Tu es Axi."),
    ChatMessage("system", "Consigne : sois bref."),
    ChatMessage("user", "Bonjour !"),
    ChatMessage("assistant", "Bonjour Ludo."),
    ChatMessage("user", "Quel temps ?"),
]


async def test_chat_sends_system_separately(remote: AnthropicChat, anthropic_server: FakeAnthropic):
    anthropic_server.reply = "Beau temps sur Le Bugue."
    reply = await remote.chat(CONVO)
    assert reply.text == "Beau temps sur Le Bugue."
    assert reply.provider == "anthropic"
    assert reply.model == DEFAULT_FALLBACK_MODEL
    assert reply.tokens_in > 0
    assert reply.tokens_out == 5
    [request] = anthropic_server.requests
    assert FakeAnthropic.key_of(request) == TEST_API_KEY
    body = request.body
    assert body["model"] == DEFAULT_FALLBACK_MODEL
    assert body["system"] == "Tu es Axi.\n\nConsigne : sois bref."
    assert body["messages"] == [
        {"role": "user", "content": "Bonjour !"},
        {"role": "assistant", "content": "Bonjour Ludo."},
        {"role": "user", "content": "Quel temps ?"},
    ]
    assert body["max_tokens"] > 0
    assert not body.get("stream")


def test_to_anthropic_merges_and_starts_with_user():
    system, turns = to_anthropic([
        ChatMessage("assistant", "Salut."), ChatMessage("user", "a"), ChatMessage("user", "b"),
    ])
    assert system == ""
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[-1]["content"] == "a\n\nb"


async def test_json_schema_instruction_goes_to_system(
    remote: AnthropicChat, anthropic_server: FakeAnthropic
):
    schema = {"type": "object", "required": ["ville"]}
    await remote.chat([ChatMessage("user", "Où ?")], json_schema=schema)
    system = anthropic_server.bodies[-1]["system"]
    assert "JSON" in system and '"required": ["ville"]' in system


async def test_stream_yields_text_and_usage(remote: AnthropicChat, anthropic_server: FakeAnthropic):
    anthropic_server.reply = "Une maison à Vergt, classe D."
    stream = remote.stream(CONVO)
    chunks = [c async for c in stream]
    assert "".join(chunks) == "Une maison à Vergt, classe D."
    assert len(chunks) == 6
    assert stream.reply is not None
    assert stream.reply.tokens_out == 6 and stream.reply.tokens_in > 0
    assert anthropic_server.bodies[-1]["stream"] is True
    assert anthropic_server.bodies[-1]["system"].startswith("Tu es Axi.")


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthError), (403, AuthError), (429, RateLimited), (529, Overloaded),
     (500, LLMUnavailable)],
)
async def test_http_errors_are_typed_and_not_retried(
    remote: AnthropicChat, anthropic_server: FakeAnthropic, status: int, error: type
):
    anthropic_server.fail_status = status
    with pytest.raises(error):
        await remote.chat(CONVO)
    with pytest.raises(error):
        await remote.stream(CONVO).collect()
    assert len(anthropic_server.requests) == 2  # max_retries=0: one request per call


async def test_rate_limit_carries_retry_after(remote: AnthropicChat, anthropic_server: FakeAnthropic):
    anthropic_server.fail_status = 429
    with pytest.raises(RateLimited) as info:
        await remote.chat(CONVO)
    assert info.value.retry_after_s == 30


async def test_wrong_key_is_auth_error(anthropic_server: FakeAnthropic):
    async with AnthropicChat(remote_config(anthropic_server, api_key="sk-wrong")) as remote:
        with pytest.raises(AuthError, match="ANTHROPIC_API_KEY"):
            await remote.chat(CONVO)


async def test_error_event_mid_stream(remote: AnthropicChat, anthropic_server: FakeAnthropic):
    anthropic_server.reply = "un deux trois"
    anthropic_server.stream_error_after = 1
    received: list[str] = []
    with pytest.raises(Overloaded):
        async for chunk in remote.stream(CONVO):
            received.append(chunk)
    assert received == ["un"]


async def test_connection_refused_is_unavailable(anthropic_server: FakeAnthropic):
    config = remote_config(anthropic_server, base_url=f"http://127.0.0.1:{closed_port()}")
    async with AnthropicChat(config) as remote:
        with pytest.raises(LLMUnavailable):
            await remote.chat(CONVO)
        with pytest.raises(LLMUnavailable):
            await remote.stream(CONVO).collect()


async def test_slow_api_times_out(anthropic_server: FakeAnthropic):
    anthropic_server.delay_s = 1.5
    async with AnthropicChat(remote_config(anthropic_server, timeout_s=0.3)) as remote:
        with pytest.raises(LLMTimeout):
            await remote.chat(CONVO)


def test_config_needs_a_key_and_never_shows_it():
    with pytest.raises(ValueError, match="API key"):
        AnthropicConfig(api_key="", model=DEFAULT_FALLBACK_MODEL)
    config = AnthropicConfig(api_key=TEST_API_KEY, model=DEFAULT_FALLBACK_MODEL)
    assert TEST_API_KEY not in repr(config) and TEST_API_KEY not in str(config)
