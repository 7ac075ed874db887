"""Ollama's library errors in the llm error tree, written once for every Ollama client
(chat and embeddings), so "the model is missing" or "the server is down" reads the same
wherever it happens and the router and the embedder only ever see `LLMError`s."""

from __future__ import annotations

import httpx
import ollama

from llm.errors import LLMError, LLMTimeout, LLMUnavailable, ModelNotFound


def translate(exc: BaseException, *, model: str, host: str, timeout_s: float) -> LLMError | None:
    """The llm error for an exception raised while talking to Ollama at `host` about
    `model`, or None when it is not one the Ollama client can raise (a bug: let it go)."""
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, ollama.ResponseError):
        status = exc.status_code
        if status == 404 or "not found" in str(exc.error).lower():
            return ModelNotFound(model, host)
        if status == -1:
            return LLMUnavailable(f"Ollama stream error: {exc.error}")
        return LLMUnavailable(f"Ollama answered HTTP {status}: {exc.error}")
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return LLMTimeout(f"Ollama at {host} did not answer within {timeout_s}s")
    if isinstance(exc, (ConnectionError, httpx.TransportError)):
        return LLMUnavailable(
            f"cannot reach Ollama at {host} ({type(exc).__name__}: {exc}); "
            "is `ollama serve` running and OLLAMA_HOST right?"
        )
    if isinstance(exc, ValueError):  # a malformed line (json) or response
        return LLMUnavailable(f"Ollama sent an unreadable response: {exc}")
    return None
