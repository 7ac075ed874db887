"""The remote fallback chat model: Claude through `anthropic.AsyncAnthropic`.

Used only when the router decides local cannot answer. The SDK's own retries are off
(`max_retries=0`): retry and fallback policy lives in the router alone. Library errors are
translated to the llm error tree here.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from llm.config import AnthropicConfig
from llm.errors import (
    AuthError,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    Overloaded,
    PromptTooLarge,
    RateLimited,
)
from llm.protocol import ChatStream, JsonSchema
from llm.structured import schema_instruction
from llm.types import ChatMessage, Provider, Reply

MAX_TOKENS: dict[str, int] = {"conversation": 1024, "extraction": 1024, "summary": 1024}
DEFAULT_MAX_TOKENS = 1024


def to_anthropic(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """System messages joined into the `system` parameter; the rest as alternating turns
    (consecutive same-role messages merged; the Messages API wants user first)."""
    system = "\n\n".join(m.content for m in messages if m.role == "system")
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system":
            continue
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += "\n\n" + m.content
        else:
            turns.append({"role": m.role, "content": m.content})
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": "(début de la conversation)"})
    return system, turns


def _retry_after(exc: anthropic.APIStatusError) -> float | None:
    value = exc.response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def translate(exc: BaseException) -> LLMError | None:
    """The llm error for an Anthropic SDK exception, or None if it is not one."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMTimeout(f"Anthropic did not answer in time: {exc}")
    if isinstance(exc, anthropic.APIConnectionError):
        return LLMUnavailable(f"cannot reach the Anthropic API: {exc}")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        kind = getattr(exc, "type", None)
        if kind is None and isinstance(exc.body, dict):
            error = exc.body.get("error")
            kind = error.get("type") if isinstance(error, dict) else None
        if status in (401, 403) or kind in ("authentication_error", "permission_error"):
            return AuthError(
                f"Anthropic rejected the API key (HTTP {status}); check ANTHROPIC_API_KEY"
            )
        if status == 429 or kind == "rate_limit_error":
            return RateLimited(
                f"Anthropic rate limit reached (HTTP {status})", retry_after_s=_retry_after(exc)
            )
        if status == 529 or kind == "overloaded_error":
            return Overloaded(f"Anthropic is overloaded (HTTP {status})")
        if status == 413 or "prompt is too long" in str(exc).lower():
            return PromptTooLarge(f"prompt too large for Claude: {exc}")
        if status >= 500 or status == 200:  # 200: an error event mid-stream
            return LLMUnavailable(f"Anthropic API error (HTTP {status}): {exc}")
        return LLMError(f"Anthropic refused the request (HTTP {status}): {exc}")
    if isinstance(exc, anthropic.AnthropicError):
        return LLMUnavailable(f"Anthropic client error: {exc}")
    return None


class AnthropicChat:
    provider: Provider = "anthropic"

    def __init__(self, config: AnthropicConfig, *,
                 client: anthropic.AsyncAnthropic | None = None):
        if client is None:
            client = anthropic.AsyncAnthropic(
                api_key=config.api_key,
                base_url=config.base_url,
                max_retries=0,
                timeout=config.timeout_s,
            )
        self.config = config
        self.model = config.model
        self._client = client

    async def __aenter__(self) -> AnthropicChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    def model_for(self, task: str) -> str:
        return self.model

    async def probe(self) -> dict[str, Any]:
        """Is the key accepted and the model known? (`GET /v1/models/{id}`: costs nothing.)
        For `axi doctor`: state ok, key refused, model unknown or unreachable."""
        try:
            await self._client.models.retrieve(self.model, timeout=15.0)
        except anthropic.AuthenticationError:
            return {"state": "key refused", "detail": "the API refused ANTHROPIC_API_KEY (401)"}
        except anthropic.PermissionDeniedError:
            return {"state": "key refused", "detail": "the key may not use the API (403)"}
        except anthropic.NotFoundError:
            return {"state": "model unknown", "detail": f"no model {self.model!r} (404)"}
        except anthropic.APIError as exc:
            return {"state": "unreachable", "detail": f"{type(exc).__name__}: {exc}"[:200]}
        return {"state": "ok", "detail": None}

    def _params(
        self, messages: list[ChatMessage], task: str, json_schema: JsonSchema | None
    ) -> dict[str, Any]:
        system, turns = to_anthropic(messages)
        if json_schema is not None:
            system = (system + "\n\n" if system else "") + schema_instruction(json_schema)
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": MAX_TOKENS.get(task, DEFAULT_MAX_TOKENS),
            "messages": turns,
        }
        if system:
            params["system"] = system
        return params

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        task: str = "conversation",
        json_schema: JsonSchema | None = None,
    ) -> Reply:
        start = time.perf_counter()
        try:
            message = await self._client.messages.create(
                **self._params(messages, task, json_schema)
            )
        except Exception as exc:
            translated = translate(exc)
            if translated is None:
                raise
            raise translated from exc
        text = "".join(b.text for b in message.content if getattr(b, "type", "") == "text")
        return Reply(
            text=text,
            provider="anthropic",
            model=message.model or self.model,
            tokens_in=message.usage.input_tokens,
            tokens_out=message.usage.output_tokens,
            latency_ms=int((time.perf_counter() - start) * 1000),
        )

    def stream(self, messages: list[ChatMessage], *, task: str = "conversation") -> ChatStream:
        return ChatStream(lambda s: self._produce(s, messages, task))

    async def _produce(
        self, out: ChatStream, messages: list[ChatMessage], task: str
    ) -> AsyncIterator[str]:
        start = time.perf_counter()
        parts: list[str] = []
        try:
            async with self._client.messages.stream(**self._params(messages, task, None)) as s:
                async for text in s.text_stream:
                    if text:
                        parts.append(text)
                        yield text
                final = await s.get_final_message()
        except Exception as exc:
            translated = translate(exc)
            if translated is None:
                raise
            raise translated from exc
        out.finish(
            Reply(
                text="".join(parts),
                provider="anthropic",
                model=final.model or self.model,
                tokens_in=final.usage.input_tokens,
                tokens_out=final.usage.output_tokens,
                latency_ms=int((time.perf_counter() - start) * 1000),
            )
        )
