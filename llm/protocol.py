"""The one interface every chat model implements (Ollama, Anthropic, and the router
itself), so the pipeline never knows which model answered.

Streaming returns a `ChatStream`: an async iterator of text chunks whose `reply` (the
full `Reply`, with token counts and latency) is set once the iteration has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, runtime_checkable

from llm.types import ChatMessage, Provider, Reply

JsonSchema = dict[str, Any]


class ChatStream:
    """Async iterator of text chunks; `reply` is available after the last chunk.

    Built from a producer: an async generator function that receives this stream, yields
    chunks and calls `stream.finish(reply)` before returning.
    """

    def __init__(self, produce: Callable[[ChatStream], AsyncIterator[str]]):
        self.reply: Reply | None = None
        self._chunks = produce(self)

    def finish(self, reply: Reply) -> None:
        self.reply = reply

    def __aiter__(self) -> ChatStream:
        return self

    async def __anext__(self) -> str:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()

    async def collect(self) -> Reply:
        """Consume the whole stream and return the final reply."""
        async for _ in self:
            pass
        if self.reply is None:
            raise RuntimeError("stream ended without a final reply")
        return self.reply


@runtime_checkable
class ChatModel(Protocol):
    provider: Provider

    def model_for(self, task: str) -> str:
        """The model name this client uses for a task (for logging failed attempts)."""
        ...

    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        task: str = "conversation",
        json_schema: JsonSchema | None = None,
    ) -> Reply: ...

    def stream(self, messages: list[ChatMessage], *, task: str = "conversation") -> ChatStream:
        ...
