"""A loopback Anthropic Messages API (`POST /v1/messages`, plain JSON and SSE streaming
with the real event sequence), for driving the real `anthropic` client in tests.

Every request is recorded (`server.requests`, `server.bodies`, with headers, so the API
key can be checked). Replies and failures are switchable per test:

    anthropic_server.reply = "Bonjour"          # or a callable(body) -> str
    anthropic_server.fail_status = 401          # 401, 429, 529, 500… with the real error body
    anthropic_server.stream_error_after = 1     # SSE `error` event after N text deltas
    anthropic_server.delay_s = 1.0              # slow
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer, loopback_fixtures
from tests.fakes.ollama_server import Recorded, split_words

ReplyScript = str | Callable[[dict[str, Any]], str]
TEST_API_KEY = "sk-ant-test-key"

ERROR_TYPES = {
    400: ("invalid_request_error", "invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "your API key does not have permission"),
    404: ("not_found_error", "model not found"),
    413: ("request_too_large", "request exceeds the maximum allowed size"),
    429: ("rate_limit_error", "rate limit exceeded"),
    500: ("api_error", "internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class FakeAnthropic:
    def __init__(self) -> None:
        self.server = LoopbackServer(Starlette(routes=[
            Route("/v1/messages", self.messages, methods=["POST"]),
            Route("/v1/models/{model_id:path}", self.model, methods=["GET"]),
        ]))
        self.requests: list[Recorded] = []
        self.reset()

    def reset(self) -> None:
        self.requests.clear()
        self.reply: ReplyScript = "Bonjour, ici Claude en secours."
        self.fail_status: int | None = None
        self.delay_s = 0.0
        self.stream_error_after: int | None = None
        self.api_key = TEST_API_KEY
        self.input_tokens: int | None = None  # None: estimated from the prompt

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    # ------------------------------------------------------------------ behaviour
    def _error(self, status: int) -> JSONResponse:
        kind, message = ERROR_TYPES.get(status, ("api_error", "error"))
        headers = {"retry-after": "30"} if status == 429 else {}
        return JSONResponse(
            {"type": "error", "error": {"type": kind, "message": message}},
            status_code=status, headers=headers,
        )

    @staticmethod
    def key_of(request: Request | Recorded) -> str | None:
        """The API key a request carried (`x-api-key`, or `Authorization: Bearer`, which
        recent SDKs send)."""
        headers = request.headers
        if headers.get("x-api-key"):
            return headers["x-api-key"]
        auth = headers.get("authorization", "")
        return auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None

    def _usage_in(self, body: dict[str, Any]) -> int:
        if self.input_tokens is not None:
            return self.input_tokens
        system = body.get("system") or ""
        chars = len(system if isinstance(system, str) else json.dumps(system))
        chars += sum(len(json.dumps(m.get("content", ""))) for m in body.get("messages", []))
        return max(1, chars // 4)

    KNOWN_MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-1")

    async def model(self, request: Request) -> Response:
        """`GET /v1/models/{id}` (the SDK's `models.retrieve`), as the API answers it."""
        self.requests.append(Recorded(request.method, request.url.path, dict(request.headers), {}))
        if self.fail_status is not None:
            return self._error(self.fail_status)
        if self.key_of(request) != self.api_key:
            return self._error(401)
        model_id = request.path_params["model_id"]
        if model_id not in self.KNOWN_MODELS:
            return JSONResponse({"type": "error", "error": {
                "type": "not_found_error", "message": f"model: {model_id}"}}, status_code=404)
        return JSONResponse({"type": "model", "id": model_id, "display_name": model_id,
                             "created_at": "2025-01-01T00:00:00Z"})

    async def messages(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(
            Recorded(request.method, request.url.path, dict(request.headers), body)
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_status is not None:
            return self._error(self.fail_status)
        if self.key_of(request) != self.api_key:
            return self._error(401)
        text = self.reply(body) if callable(self.reply) else self.reply
        msg_id = "msg_" + secrets.token_hex(12)
        model = body["model"]
        chunks = split_words(text)
        if body.get("stream"):
            return StreamingResponse(
                self._events(msg_id, model, chunks, self._usage_in(body)),
                media_type="text/event-stream",
            )
        return JSONResponse({
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": self._usage_in(body), "output_tokens": len(chunks),
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }, headers={"request-id": "req_" + secrets.token_hex(8)})

    async def _events(
        self, msg_id: str, model: str, chunks: list[str], input_tokens: int
    ) -> AsyncIterator[bytes]:
        yield _sse("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
        yield _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}})
        yield _sse("ping", {"type": "ping"})
        for i, chunk in enumerate(chunks):
            if self.stream_error_after is not None and i == self.stream_error_after:
                yield _sse("error", {"type": "error", "error": {
                    "type": "overloaded_error", "message": "Overloaded"}})
                return
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": chunk}})
            await asyncio.sleep(0)
        yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield _sse("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                     "usage": {"output_tokens": len(chunks)}})
        yield _sse("message_stop", {"type": "message_stop"})


# ---------------------------------------------------------------------- fixtures
anthropic_server_session, anthropic_server = loopback_fixtures(FakeAnthropic, "anthropic_server")
