"""chat_json: local answers validated against the schema, retried with a correction,
then handed to the remote model; plus the pure parsing it relies on."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm.errors import InvalidStructuredOutput, LocalOnlyUnavailable
from llm.router import Router
from llm.structured import extract_json_text, parse_structured
from llm.types import ChatMessage
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.llm.conftest import Recorder

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "faits": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sujet": {"type": "string"}, "objet": {"type": "string"}},
                "required": ["sujet", "objet"],
            },
        }
    },
    "required": ["faits"],
}
GOOD = {"faits": [{"sujet": "Ludo", "objet": "Peyrebrune"}]}
ASK = [ChatMessage("system", "Extrais les faits."), ChatMessage("user", "Ludo vit à Peyrebrune.")]


def test_parse_accepts_fenced_and_surrounded_json():
    assert parse_structured("```json\n" + json.dumps(GOOD) + "\n```", SCHEMA) == GOOD
    assert parse_structured("Voici : " + json.dumps(GOOD) + " voilà.", SCHEMA) == GOOD
    assert extract_json_text("  [1, 2] ") == "[1, 2]"


def test_parse_rejects_bad_json_and_schema_violations():
    with pytest.raises(InvalidStructuredOutput, match="not JSON"):
        parse_structured("{faits: oui}", SCHEMA)
    with pytest.raises(InvalidStructuredOutput, match="faits/0"):
        parse_structured('{"faits": [{"sujet": "Ludo"}]}', SCHEMA)


async def test_valid_first_time(router: Router, ollama_server: FakeOllama,
                                anthropic_server: FakeAnthropic):
    ollama_server.reply = json.dumps(GOOD)
    result = await router.chat_json(ASK, SCHEMA)
    assert result.data == GOOD
    assert result.reply.provider == "ollama"
    assert ollama_server.chat_bodies[0]["format"] == SCHEMA
    assert ollama_server.chat_bodies[0]["model"] == "qwen2.5:3b-instruct"  # task=extraction
    assert anthropic_server.requests == []


async def test_retries_with_correction_then_succeeds(
    router: Router, ollama_server: FakeOllama, recorder: Recorder
):
    answers = iter(['{"faits": "aucun"}', json.dumps(GOOD)])
    ollama_server.reply = lambda body: next(answers)
    result = await router.chat_json(ASK, SCHEMA)
    assert result.data == GOOD
    first, second = ollama_server.chat_bodies
    assert len(second["messages"]) == len(first["messages"]) + 2
    assert second["messages"][-2] == {"role": "assistant", "content": '{"faits": "aucun"}'}
    assert "JSON" in second["messages"][-1]["content"]
    assert [r.ok for r in recorder.records] == [False, True]
    assert "InvalidStructuredOutput" in (recorder.records[0].error or "")


async def test_invalid_after_retries_falls_back(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic,
    recorder: Recorder,
):
    ollama_server.reply = "Je ne sais pas faire du JSON."
    anthropic_server.reply = json.dumps(GOOD)
    result = await router.chat_json(ASK, SCHEMA, retries=2)
    assert result.data == GOOD
    assert result.reply.provider == "anthropic"
    assert result.reply.fallback_reason == "invalid_structured_output"
    assert len(ollama_server.chat_bodies) == 3
    assert len(anthropic_server.requests) == 1
    assert "JSON" in anthropic_server.bodies[0]["system"]
    assert [(r.provider, r.ok) for r in recorder.records] == [
        ("ollama", False), ("ollama", False), ("ollama", False), ("anthropic", True)]
    # The invalid local answers do not count against the local server's health.
    assert router.breaker.state == "closed"


async def test_remote_invalid_too_raises(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    ollama_server.reply = "non"
    anthropic_server.reply = '{"faits": 3}'
    with pytest.raises(InvalidStructuredOutput):
        await router.chat_json(ASK, SCHEMA, retries=0)
    assert len(ollama_server.chat_bodies) == 1
    assert len(anthropic_server.requests) == 1


async def test_local_down_skips_retries(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    ollama_server.fail_status = 500
    anthropic_server.reply = json.dumps(GOOD)
    result = await router.chat_json(ASK, SCHEMA)
    assert result.reply.fallback_reason == "unavailable"
    assert len(ollama_server.chat_bodies) == 1


async def test_local_only_invalid_output_waits(
    router: Router, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
):
    ollama_server.reply = "pas du JSON"
    with pytest.raises(LocalOnlyUnavailable, match="invalid_structured_output"):
        await router.chat_json(ASK, SCHEMA, local_only=True)
    assert len(ollama_server.chat_bodies) == 3
    assert anthropic_server.requests == []
