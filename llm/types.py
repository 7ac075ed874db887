"""Plain values the chat models, the router and the call log exchange.

Pure module (no I/O) so prompt building, logging and tests can use these types without a
server: a message in, a reply out, and one record per attempt for the `appels_llm` log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
Provider = Literal["ollama", "anthropic"]
Task = Literal["conversation", "extraction", "summary"]

ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown chat role {self.role!r} (system, user or assistant)")

    @classmethod
    def system(cls, content: str) -> ChatMessage:
        return cls("system", content)

    @classmethod
    def user(cls, content: str) -> ChatMessage:
        return cls("user", content)

    @classmethod
    def assistant(cls, content: str) -> ChatMessage:
        return cls("assistant", content)


@dataclass(frozen=True)
class ServerTimings:
    """What the local server says a call cost (Ollama's final chunk), so the real server's
    rates and cache hits are known rather than assumed: on a CPU, re-evaluating a prompt
    the cache should have held is what makes a person wait (issue 9).

    `cached_tokens` is the part of the prompt served from the server's KV cache: reported
    by the server (`prompt_eval_cached_count`), or estimated from the prompt duration and
    the measured prompt rate when it reports none (`cached_estimated`), or None when not
    even that is possible. `evaluated_tokens` is what the server really evaluated (the
    prompt minus the cache), whichever way the server counts `prompt_eval_count`. Durations
    are the server's own, in milliseconds (None when it did not send them)."""

    evaluated_tokens: int
    cached_tokens: int | None = None
    cached_estimated: bool = False
    prompt_ms: int | None = None  # prompt_eval_duration
    generation_ms: int | None = None  # eval_duration
    load_ms: int | None = None  # load_duration (includes waiting for the scheduler)
    total_ms: int | None = None  # total_duration (arrival to done, queue included)

    @property
    def prompt_tokens(self) -> int:
        """The whole prompt, cached part included (as far as known)."""
        return self.evaluated_tokens + (self.cached_tokens or 0)


@dataclass(frozen=True)
class Reply:
    """One answer from one provider. `fallback_reason` is set when the router had to go
    past the local model (e.g. "unavailable", "timeout", "prompt_too_large")."""

    text: str
    provider: Provider
    model: str
    tokens_in: int
    tokens_out: int
    latency_ms: int
    fallback_reason: str | None = None
    timings: ServerTimings | None = None  # the local server's own account (Ollama only)

    @property
    def local(self) -> bool:
        return self.provider == "ollama"


@dataclass(frozen=True)
class StructuredReply:
    """A reply whose text parsed as JSON and validated against the requested schema."""

    data: Any
    reply: Reply


@dataclass(frozen=True)
class CallRecord:
    """One attempt (success or failure) against one provider, as written to `appels_llm`."""

    provider: Provider
    model: str
    task: str
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: int = 0
    ok: bool = True
    error: str | None = None
    fallback_reason: str | None = None
    cost_eur: float = 0.0
    timings: ServerTimings | None = None  # the local server's own account (Ollama only)
    queue_ms: int = 0  # waiting in Axi's own queue before the call (the priority gate)
