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
