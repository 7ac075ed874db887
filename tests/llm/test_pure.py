"""The pure pieces: token estimate, truncation signs, prices, breaker state machine,
message types."""

from __future__ import annotations

import pytest

from llm.breaker import CircuitBreaker
from llm.budget import (
    claude_cost_eur,
    estimate_prompt_tokens,
    estimate_text_tokens,
    prompt_room,
    shows_truncation,
)
from llm.errors import LLMError, LocalOnlyUnavailable, ModelNotFound
from llm.types import ChatMessage
from tests.llm.conftest import Clock


def test_estimate_is_conservative_for_french():
    text = "Bonjour Ludo, la maison de Vergt a un DPE de classe F : c'est une passoire."
    assert estimate_text_tokens(text) >= -(-len(text) // 3)
    assert estimate_text_tokens(text) > len(text) / 4
    two = [ChatMessage("system", "a" * 30), ChatMessage("user", "b" * 30)]
    assert estimate_prompt_tokens(two) > estimate_text_tokens("a" * 60)


def test_prompt_room():
    assert prompt_room(4096, 1024) == 3072
    assert prompt_room(512, 1024) == 0


@pytest.mark.parametrize(
    ("pec", "ec", "reason", "expected"),
    [(4096, 10, "stop", True), (4000, 96, "stop", True), (3000, 100, "stop", False),
     (None, 100, "stop", False), (1000, 100, "length", True), (1000, 1024, "length", False),
     (None, None, "stop", False)],
)
def test_shows_truncation(pec, ec, reason, expected):
    assert shows_truncation(prompt_eval_count=pec, eval_count=ec, done_reason=reason,
                            num_ctx=4096, num_predict=1024) is expected


def test_claude_cost():
    assert claude_cost_eur("claude-sonnet-4-5", 1_000_000, 0) == pytest.approx(3 * 0.93)
    assert claude_cost_eur("claude-haiku-4-5", 0, 1_000_000) == pytest.approx(5 * 0.93)
    assert claude_cost_eur("unknown-model", 1000, 1000) == claude_cost_eur(
        "claude-sonnet-4-5", 1000, 1000)


def test_breaker_states():
    clock = Clock()
    breaker = CircuitBreaker(threshold=2, cooldown_s=10, clock=clock)
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    clock.advance(10)
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failure()
    assert breaker.state == "open"
    clock.advance(10)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.failures == 0


def test_chat_message_roles():
    assert ChatMessage.user("x") == ChatMessage("user", "x")
    with pytest.raises(ValueError):
        ChatMessage("tool", "x")  # type: ignore[arg-type]


def test_errors_speak_french_to_people_and_say_how_to_fix():
    err = ModelNotFound("mistral:7b-instruct-q4_K_M", "http://127.0.0.1:11434")
    assert "ollama pull mistral:7b-instruct-q4_K_M" in str(err)
    assert isinstance(err, LLMError)
    assert "serveur" in LocalOnlyUnavailable("x").user_message
