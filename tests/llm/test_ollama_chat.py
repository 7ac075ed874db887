"""OllamaChat against the loopback Ollama server: options always sent, prompt budget
before and after the call, and every failure mode translated to its typed error."""

from __future__ import annotations

import ollama
import pytest

from bot.config import DEFAULT_LOCAL_MODEL
from llm.config import OllamaConfig
from llm.errors import LLMTimeout, LLMUnavailable, ModelNotFound, PromptTooLarge
from llm.ollama_chat import OllamaChat
from llm.types import ChatMessage
from tests.fakes.loopback import closed_port
from tests.fakes.ollama_server import FakeOllama
from tests.llm.conftest import EXTRACTION_MODEL, NUM_CTX, local_config

HELLO = [ChatMessage("system", "Tu es Axi."), ChatMessage("user", "Bonjour !")]


async def test_chat_returns_reply_with_counts(local: OllamaChat, ollama_server: FakeOllama):
    ollama_server.reply = "Bonjour Ludo, que puis-je faire ?"
    reply = await local.chat(HELLO)
    assert reply.text == "Bonjour Ludo, que puis-je faire ?"
    assert reply.provider == "ollama"
    assert reply.model == DEFAULT_LOCAL_MODEL
    assert reply.tokens_in > 0
    assert reply.tokens_out == 6
    assert reply.fallback_reason is None
    body = ollama_server.chat_bodies[-1]
    assert body["messages"] == [
        {"role": "system", "content": "Tu es Axi."}, {"role": "user", "content": "Bonjour !"}
    ]
    assert body["stream"] is False


async def test_num_ctx_and_keep_alive_always_sent(local: OllamaChat, ollama_server: FakeOllama):
    await local.chat(HELLO)
    await local.chat(HELLO, task="extraction", json_schema={"type": "object"})
    await local.stream(HELLO).collect()
    await local.stream(HELLO, task="summary").collect()
    bodies = ollama_server.chat_bodies
    assert len(bodies) == 4
    for body in bodies:
        assert body["options"]["num_ctx"] == NUM_CTX
        assert body["keep_alive"] == "45m"
        assert 0 < body["options"]["num_predict"] <= NUM_CTX // 2


async def test_model_chosen_per_task(local: OllamaChat, ollama_server: FakeOllama):
    await local.chat(HELLO, task="extraction")
    await local.chat(HELLO, task="summary")
    await local.chat(HELLO, task="conversation")
    models = [b["model"] for b in ollama_server.chat_bodies]
    assert models == ["qwen2.5:3b-instruct", DEFAULT_LOCAL_MODEL, DEFAULT_LOCAL_MODEL]


async def test_json_schema_sent_as_format(local: OllamaChat, ollama_server: FakeOllama):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    ollama_server.reply = '{"ok": true}'
    reply = await local.chat(HELLO, json_schema=schema)
    assert reply.text == '{"ok": true}'
    assert ollama_server.chat_bodies[-1]["format"] == schema


async def test_prompt_too_large_refused_before_sending(
    local: OllamaChat, ollama_server: FakeOllama
):
    huge = [ChatMessage("user", "mot " * (NUM_CTX * 2))]
    with pytest.raises(PromptTooLarge) as info:
        await local.chat(huge)
    assert info.value.num_ctx == NUM_CTX
    assert info.value.estimated_tokens and info.value.estimated_tokens > NUM_CTX
    with pytest.raises(PromptTooLarge):
        await local.stream(huge).collect()
    assert ollama_server.chat_bodies == []


async def test_prompt_that_fits_minus_answer_room_is_refused(
    local: OllamaChat, ollama_server: FakeOllama
):
    # Fits num_ctx on its own but not with the answer's room (num_predict) set aside.
    almost = [ChatMessage("user", "x" * int((NUM_CTX - 200) * 3))]
    with pytest.raises(PromptTooLarge):
        await local.chat(almost)
    assert ollama_server.chat_bodies == []


async def test_prompt_eval_count_at_num_ctx_means_truncated(
    local: OllamaChat, ollama_server: FakeOllama
):
    ollama_server.prompt_eval_count = NUM_CTX
    with pytest.raises(PromptTooLarge, match="truncated"):
        await local.chat(HELLO)
    with pytest.raises(PromptTooLarge):
        await local.stream(HELLO).collect()
    assert len(ollama_server.chat_bodies) == 2


async def test_context_filled_by_prompt_plus_answer_means_truncated(
    local: OllamaChat, ollama_server: FakeOllama
):
    ollama_server.prompt_eval_count = NUM_CTX - 3
    ollama_server.reply = "un deux trois quatre cinq"
    with pytest.raises(PromptTooLarge):
        await local.chat(HELLO)


async def test_length_stop_before_num_predict_means_truncated(
    local: OllamaChat, ollama_server: FakeOllama
):
    ollama_server.done_reason = "length"
    with pytest.raises(PromptTooLarge):
        await local.chat(HELLO)


async def test_missing_prompt_eval_count_cached_prompt_is_fine(
    local: OllamaChat, ollama_server: FakeOllama
):
    ollama_server.prompt_eval_count = None  # Ollama omits it when the prompt was cached
    reply = await local.chat(HELLO)
    assert reply.text == "Bonjour, je suis Axi."
    assert reply.tokens_in == 0
    streamed = await local.stream(HELLO).collect()
    assert streamed.text == "Bonjour, je suis Axi."


async def test_model_not_found_gives_pull_command(local: OllamaChat, ollama_server: FakeOllama):
    ollama_server.models = []
    with pytest.raises(ModelNotFound) as info:
        await local.chat(HELLO)
    assert f"ollama pull {DEFAULT_LOCAL_MODEL}" in str(info.value)
    assert info.value.pull_command == f"ollama pull {DEFAULT_LOCAL_MODEL}"
    with pytest.raises(ModelNotFound, match="ollama pull"):
        await local.stream(HELLO).collect()


async def test_server_error_is_unavailable(local: OllamaChat, ollama_server: FakeOllama):
    ollama_server.fail_status = 500
    with pytest.raises(LLMUnavailable, match="500"):
        await local.chat(HELLO)
    with pytest.raises(LLMUnavailable):
        await local.stream(HELLO).collect()


async def test_slow_server_times_out(ollama_server: FakeOllama):
    ollama_server.delay_s = 1.5
    async with OllamaChat(local_config(ollama_server, timeout_s=0.3)) as local:
        with pytest.raises(LLMTimeout):
            await local.chat(HELLO)
        with pytest.raises(LLMTimeout):
            await local.stream(HELLO).collect()


async def test_connection_refused_is_unavailable(ollama_server: FakeOllama):
    config = local_config(ollama_server, host=f"http://127.0.0.1:{closed_port()}")
    async with OllamaChat(config) as local:
        with pytest.raises(LLMUnavailable, match="cannot reach Ollama"):
            await local.chat(HELLO)
        with pytest.raises(LLMUnavailable, match="cannot reach Ollama"):
            await local.stream(HELLO).collect()


async def test_stopped_server_is_unavailable_then_back(
    local: OllamaChat, ollama_server: FakeOllama
):
    assert (await local.chat(HELLO)).text
    ollama_server.stop()
    with pytest.raises(LLMUnavailable):
        await local.chat(HELLO)
    ollama_server.start()
    assert (await local.chat(HELLO)).text


async def test_stream_yields_chunks_then_reply(local: OllamaChat, ollama_server: FakeOllama):
    ollama_server.reply = "Il fait beau à Vergt aujourd'hui."
    stream = local.stream(HELLO)
    chunks = [c async for c in stream]
    assert len(chunks) == 6
    assert "".join(chunks) == "Il fait beau à Vergt aujourd'hui."
    assert stream.reply is not None
    assert stream.reply.text == "".join(chunks)
    assert stream.reply.tokens_out == 6
    assert ollama_server.chat_bodies[-1]["stream"] is True


async def test_error_line_mid_stream_is_unavailable(
    local: OllamaChat, ollama_server: FakeOllama
):
    ollama_server.reply = "un deux trois quatre"
    ollama_server.error_after_chunks = 2
    stream = local.stream(HELLO)
    received: list[str] = []
    with pytest.raises(LLMUnavailable, match="stream error"):
        async for chunk in stream:
            received.append(chunk)
    assert received == ["un", " deux"]
    assert stream.reply is None


async def test_config_model_for_is_used(local_cfg: OllamaConfig):
    local = OllamaChat(local_cfg)
    assert local.model_for("extraction") == EXTRACTION_MODEL
    assert local.model_for("summary") == local.model_for("conversation") == DEFAULT_LOCAL_MODEL
    await local.aclose()


async def test_fake_server_speaks_the_other_endpoints(ollama_server: FakeOllama):
    client = ollama.AsyncClient(host=ollama_server.url)
    try:
        assert (await client.list()).models[0].model == DEFAULT_LOCAL_MODEL
        shown = await client.show(DEFAULT_LOCAL_MODEL)
        assert shown.details is not None and shown.details.quantization_level == "Q4_K_M"
        embedded = await client.embed(model="nomic-embed-text:latest", input=["a", "bb"])
        assert len(embedded.embeddings) == 2
        version = await client._request_raw("GET", "/api/version")
        assert version.json()["version"]
        with pytest.raises(ollama.ResponseError) as info:
            await client.show("absent:latest")
        assert info.value.status_code == 404
    finally:
        await client.close()
    paths = [r.path for r in ollama_server.requests]
    assert paths == ["/api/tags", "/api/show", "/api/embed", "/api/version", "/api/show"]
