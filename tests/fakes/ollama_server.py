"""A loopback Ollama server speaking the real HTTP API (`/api/chat` NDJSON streaming and
plain JSON, `/api/tags`, `/api/show`, `/api/embed`, `/api/version`), for driving the real
`ollama` client in tests.

Every request is recorded (`server.requests`, `server.chat_bodies`) so tests can assert on
what was sent (num_ctx, keep_alive, format…). Replies and failures are switchable per test:

    ollama_server.reply = "Bonjour"                   # or a callable(body) -> str
    ollama_server.fail_status = 500                    # every /api/chat answers HTTP 500
    ollama_server.models = []                          # model not installed -> 404
    ollama_server.delay_s = 1.0                        # slow: wait before answering
    ollama_server.chunk_delay_s = 0.1                  # slow writer: between streamed chunks
    ollama_server.error_after_chunks = 2               # error line mid-stream
    ollama_server.prompt_eval_count = None             # omit it (prompt fully cached)
    ollama_server.stop()                               # connection refused; start() again

Like Ollama, the default prompt_eval_count is capped at num_ctx (a longer prompt is
"truncated"), from an estimate of 4 characters per token.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bot.config import DEFAULT_LOCAL_MODEL
from tests.fakes.loopback import LoopbackServer, loopback_fixtures

AUTO = "auto"
ReplyScript = str | Callable[[dict[str, Any]], str]


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def split_words(text: str) -> list[str]:
    """Chunks like a tokenizer would stream them: words with their leading space."""
    chunks: list[str] = []
    for i, word in enumerate(text.split(" ")):
        chunks.append(word if i == 0 else " " + word)
    return [c for c in chunks if c]


class FakeOllama:
    def __init__(self) -> None:
        self.server = LoopbackServer(self._app())
        self.requests: list[Recorded] = []
        self.reset()

    # ------------------------------------------------------------------ control
    def reset(self) -> None:
        self.requests.clear()
        self.models: list[str] = [DEFAULT_LOCAL_MODEL, "nomic-embed-text:latest"]
        self.reply: ReplyScript = "Bonjour, je suis Axi."
        self.fail_status: int | None = None
        self.fail_message = "internal server error"
        self.delay_s = 0.0
        self.chunk_delay_s = 0.0  # between streamed chunks: a model writing slowly
        self.error_after_chunks: int | None = None
        self.stream_error = "an error was encountered while running the model"
        self.prompt_eval_count: int | str | None = AUTO
        self.eval_count: int | str | None = AUTO
        self.durations_ns = {"total_duration": 1_500_000_000, "load_duration": 20_000_000,
                             "prompt_eval_duration": 800_000_000, "eval_duration": 600_000_000}
        """The timings reported in each final chunk (a CPU's, by default; an instant
        model's are tiny, or Axi's wait estimate expects seconds that never come)."""
        self.done_reason = "stop"
        self.embedding: Callable[[str], list[float]] | None = None
        """How /api/embed turns a text into a vector (default: 8 numbers from its length)."""

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path == "/api/chat"]

    # ------------------------------------------------------------------ behaviour
    def _reply_text(self, body: dict[str, Any]) -> str:
        return self.reply(body) if callable(self.reply) else self.reply

    def _prompt_eval_count(self, body: dict[str, Any]) -> int | None:
        if self.prompt_eval_count != AUTO:
            return self.prompt_eval_count  # type: ignore[return-value]
        chars = sum(len(m.get("content", "")) for m in body.get("messages", []))
        tokens = chars // 4 + 10 * len(body.get("messages", []))
        num_ctx = (body.get("options") or {}).get("num_ctx", 2048)  # Ollama's old default
        return min(tokens, num_ctx)

    def _final(self, body: dict[str, Any], model: str, chunks: int) -> dict[str, Any]:
        final: dict[str, Any] = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": self.done_reason,
            **self.durations_ns,
        }
        prompt_eval = self._prompt_eval_count(body)
        if prompt_eval is not None:  # Ollama omits it when the whole prompt was cached
            final["prompt_eval_count"] = prompt_eval
        eval_count = chunks if self.eval_count == AUTO else self.eval_count
        if eval_count is not None:
            final["eval_count"] = eval_count
        return final

    def has_model(self, model: str) -> bool:
        """As Ollama: a name without a tag means its ':latest' tag."""
        name = model if ":" in model else f"{model}:latest"
        return model in self.models or name in self.models

    def _not_found(self, model: str) -> JSONResponse:
        return JSONResponse(
            {"error": f'model "{model}" not found, try pulling it first'}, status_code=404
        )

    async def _record(self, request: Request) -> Any:
        raw = await request.body()
        body = json.loads(raw) if raw else None
        self.requests.append(
            Recorded(request.method, request.url.path, dict(request.headers), body)
        )
        return body

    # ------------------------------------------------------------------ routes
    async def chat(self, request: Request) -> Response:
        body = await self._record(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return JSONResponse({"error": self.fail_message}, status_code=self.fail_status)
        model = body.get("model", "")
        if not self.has_model(model):
            return self._not_found(model)
        text = self._reply_text(body)
        chunks = split_words(text)
        if not body.get("stream", True):
            final = self._final(body, model, len(chunks))
            final["message"] = {"role": "assistant", "content": text}
            return JSONResponse(final)
        return StreamingResponse(
            self._ndjson(body, model, chunks), media_type="application/x-ndjson"
        )

    async def _ndjson(
        self, body: dict[str, Any], model: str, chunks: list[str]
    ) -> AsyncIterator[bytes]:
        for i, chunk in enumerate(chunks):
            if self.error_after_chunks is not None and i == self.error_after_chunks:
                yield (json.dumps({"error": self.stream_error}) + "\n").encode()
                return
            part = {"model": model, "created_at": _now(),
                    "message": {"role": "assistant", "content": chunk}, "done": False}
            yield (json.dumps(part) + "\n").encode()
            await asyncio.sleep(self.chunk_delay_s)
        if self.error_after_chunks is not None and self.error_after_chunks >= len(chunks):
            yield (json.dumps({"error": self.stream_error}) + "\n").encode()
            return
        yield (json.dumps(self._final(body, model, len(chunks))) + "\n").encode()

    async def tags(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"models": [
            {"name": m, "model": m, "modified_at": _now(), "size": 4_368_439_587,
             "digest": "f" * 64,
             "details": {"format": "gguf", "family": "llama", "parameter_size": "7.2B",
                         "quantization_level": "Q4_K_M"}}
            for m in self.models
        ]})

    async def show(self, request: Request) -> Response:
        body = await self._record(request)
        model = body.get("model") or body.get("name", "")
        if not self.has_model(model):
            return self._not_found(model)
        return JSONResponse({
            "modelfile": f"FROM {model}", "parameters": "stop [INST]",
            "template": "[INST] {{ .Prompt }} [/INST]",
            "details": {"format": "gguf", "family": "llama", "parameter_size": "7.2B",
                        "quantization_level": "Q4_K_M"},
            "model_info": {"llama.context_length": 32768},
            "modified_at": _now(),
        })

    async def embed(self, request: Request) -> Response:
        body = await self._record(request)
        if self.fail_status is not None:
            return JSONResponse({"error": self.fail_message}, status_code=self.fail_status)
        model = body.get("model", "")
        if not self.has_model(model):
            return self._not_found(model)
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if self.embedding is not None:
            vectors = [self.embedding(t) for t in inputs]
        else:
            vectors = [[((len(t) + i) % 7) / 7.0 for i in range(8)] for t in inputs]
        return JSONResponse({"model": model, "embeddings": vectors,
                             "total_duration": 5_000_000, "load_duration": 1_000_000,
                             "prompt_eval_count": sum(len(t) // 4 + 1 for t in inputs)})

    async def version(self, request: Request) -> Response:
        await self._record(request)
        return JSONResponse({"version": "0.6.5"})

    def _app(self) -> Starlette:
        return Starlette(routes=[
            Route("/api/chat", self.chat, methods=["POST"]),
            Route("/api/tags", self.tags, methods=["GET"]),
            Route("/api/show", self.show, methods=["POST"]),
            Route("/api/embed", self.embed, methods=["POST"]),
            Route("/api/version", self.version, methods=["GET"]),
        ])


# ---------------------------------------------------------------------- fixtures
ollama_server_session, ollama_server = loopback_fixtures(FakeOllama, "ollama_server")

