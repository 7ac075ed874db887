"""The local chat model: Ollama through `ollama.AsyncClient`.

Ollama silently truncates a prompt longer than `num_ctx`, so every call sends `num_ctx`
and `keep_alive` explicitly, refuses a prompt whose (over)estimate cannot fit with room
for the answer, and checks `prompt_eval_count` afterwards. Every reply carries the
server's own account of the call (tokens from the cache, durations:
`llm/ollama_timings.py`) and the client keeps the measured rates. Library errors are
translated to the llm error tree (`llm/ollama_errors.py`); retries and fallback are the
router's business. What it talks to comes from an `OllamaConfig`, filled by the
composition root.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import ollama

from llm import ollama_errors
from llm.budget import estimate_prompt_tokens, prompt_room, shows_truncation
from llm.config import OllamaConfig
from llm.errors import LLMError, LLMUnavailable, PromptTooLarge
from llm.ollama_timings import MeasuredRates, RateMeter, TimingsClient, read_timings
from llm.protocol import ChatStream, JsonSchema
from llm.types import ChatMessage, Provider, Reply

# Room kept for the answer, per task; also sent as num_predict so the cap is real.
NUM_PREDICT: dict[str, int] = {"conversation": 1024, "extraction": 768, "summary": 768,
                                "warm": 1}  # "warm": a prefix read into the cache, no answer
DEFAULT_NUM_PREDICT = 1024


def _elapsed_ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


class OllamaChat:
    provider: Provider = "ollama"

    def __init__(self, config: OllamaConfig, *, client: ollama.AsyncClient | None = None):
        self.config = config
        self.host = config.host
        self.num_ctx = config.num_ctx
        self.timeout_s = config.timeout_s
        # httpx's timeout bounds connect and each read (so a stalled stream ends too);
        # non-streaming calls are also bounded as a whole in chat().
        # TimingsClient keeps the response fields the library drops (the cached count).
        self._client = client or TimingsClient(host=self.host, timeout=self.timeout_s)
        self._meters: dict[str, RateMeter] = {}  # per model: a 3B and a 7B differ

    async def __aenter__(self) -> OllamaChat:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    async def probe(self) -> dict[str, Any]:
        """Is the server up and the conversation model installed? For `axi llm status`."""
        model = self.model_for("conversation")
        try:
            listing = await asyncio.wait_for(self._client.list(), timeout=5)
        except Exception as exc:
            return {"state": "unreachable", "detail": f"{type(exc).__name__}: {exc}"[:200]}
        names = {m.model for m in listing.models if m.model}
        wanted = [model, *sorted({self.model_for(t) for t in ("extraction", "summary")} - {model})]
        missing = [m for m in wanted if m not in names and f"{m}:latest" not in names]
        if missing:
            return {"state": "model missing", "missing": missing,
                    "detail": "install it with: " + "; ".join(f"ollama pull {m}" for m in missing)}
        return {"state": "ok", "detail": None, "models": sorted(names)}

    def measured_rates(self, task: str = "conversation") -> MeasuredRates:
        """Prompt and generation tokens/s of this process's recent calls to the task's
        model (the server's own durations), for estimating how long a request will take."""
        return self._meter(self.model_for(task)).rates()

    def _meter(self, model: str) -> RateMeter:
        return self._meters.setdefault(model, RateMeter())

    # ------------------------------------------------------------------ helpers
    def model_for(self, task: str) -> str:
        return self.config.model_for(task)

    def num_predict_for(self, task: str) -> int:
        return min(NUM_PREDICT.get(task, DEFAULT_NUM_PREDICT), self.num_ctx // 2)

    def options_for(self, task: str) -> dict[str, Any]:
        return {"num_ctx": self.num_ctx, "num_predict": self.num_predict_for(task)}

    def check_budget(self, messages: list[ChatMessage], task: str) -> int:
        """Raise PromptTooLarge if the prompt cannot fit; return the estimate."""
        estimate = estimate_prompt_tokens(messages)
        room = prompt_room(self.num_ctx, self.num_predict_for(task))
        if estimate > room:
            raise PromptTooLarge(
                f"prompt of ~{estimate} tokens does not fit the local context "
                f"(num_ctx={self.num_ctx}, {room} left after reserving "
                f"{self.num_predict_for(task)} for the answer)",
                estimated_tokens=estimate,
                num_ctx=self.num_ctx,
            )
        return estimate

    def _check_truncation(self, part: Any, task: str) -> None:
        if shows_truncation(
            prompt_eval_count=part.prompt_eval_count,
            eval_count=part.eval_count,
            done_reason=part.done_reason,
            num_ctx=self.num_ctx,
            num_predict=self.num_predict_for(task),
        ):
            raise PromptTooLarge(
                f"Ollama filled its context (prompt_eval_count={part.prompt_eval_count}, "
                f"eval_count={part.eval_count}, done_reason={part.done_reason}, "
                f"num_ctx={self.num_ctx}): the prompt was truncated",
                num_ctx=self.num_ctx,
            )

    def _translate(self, exc: Exception, model: str) -> LLMError:
        translated = ollama_errors.translate(exc, model=model, host=self.host,
                                             timeout_s=self.timeout_s)
        if translated is None:
            raise exc
        return translated

    @staticmethod
    def _wire(messages: list[ChatMessage]) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.content} for m in messages]

    # ------------------------------------------------------------------ protocol
    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        task: str = "conversation",
        json_schema: JsonSchema | None = None,
    ) -> Reply:
        model = self.model_for(task)
        self.check_budget(messages, task)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.chat(
                    model=model,
                    messages=self._wire(messages),
                    options=self.options_for(task),
                    keep_alive=self.config.keep_alive,
                    format=json_schema,
                    stream=False,
                )
        except Exception as exc:
            raise self._translate(exc, model) from exc
        self._check_truncation(response, task)
        return Reply(
            text=response.message.content or "",
            provider="ollama",
            model=response.model or model,
            tokens_in=response.prompt_eval_count or 0,
            tokens_out=response.eval_count or 0,
            latency_ms=_elapsed_ms(start),
            timings=read_timings(response, self._meter(model)),
        )

    def stream(self, messages: list[ChatMessage], *, task: str = "conversation") -> ChatStream:
        return ChatStream(lambda s: self._produce(s, messages, task))

    async def _produce(
        self, out: ChatStream, messages: list[ChatMessage], task: str
    ) -> AsyncIterator[str]:
        model = self.model_for(task)
        self.check_budget(messages, task)
        start = time.perf_counter()
        parts: list[str] = []
        last: Any = None
        try:
            iterator = await self._client.chat(
                model=model,
                messages=self._wire(messages),
                options=self.options_for(task),
                keep_alive=self.config.keep_alive,
                stream=True,
            )
            async for part in iterator:
                last = part
                chunk = part.message.content or ""
                if chunk:
                    parts.append(chunk)
                    yield chunk
        except Exception as exc:
            raise self._translate(exc, model) from exc
        if last is None or not last.done:
            raise LLMUnavailable("Ollama stream ended before its final (done) message")
        self._check_truncation(last, task)
        out.finish(
            Reply(
                text="".join(parts),
                provider="ollama",
                model=last.model or model,
                tokens_in=last.prompt_eval_count or 0,
                tokens_out=last.eval_count or 0,
                latency_ms=_elapsed_ms(start),
                timings=read_timings(last, self._meter(model)),
            )
        )
