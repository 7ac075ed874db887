"""From Axi's settings to the LLM layer's own config objects, and from the router's call
records to the memory's call log: the only place where `Settings` meets `llm/`.

`llm/` and `memory/` sit below the core and know nothing of each other or of
`bot.config`; the composition root (`bot/app.py`) builds the clients with these values
and hands the router `call_recorder(store)` as its `record=` callback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from bot.config import Settings
from llm.config import AnthropicConfig, EmbedConfig, OllamaConfig
from llm.router import RecordFn
from llm.types import CallRecord
from memory.database import lost_connection
from memory.store import MemoryStore

log = logging.getLogger(__name__)


def ollama_config(settings: Settings) -> OllamaConfig:
    """The local chat model (OLLAMA_HOST, AXI_LOCAL_*)."""
    return OllamaConfig(
        host=settings.ollama_host,
        model=settings.local_model,
        extraction_model=settings.local_extraction_model,
        summary_model=settings.local_summary_model,
        num_ctx=settings.local_num_ctx,
        timeout_s=settings.local_timeout_s,
        keep_alive=settings.local_keep_alive,
    )


def anthropic_config(settings: Settings) -> AnthropicConfig | None:
    """The Claude fallback (ANTHROPIC_*, AXI_FALLBACK_*), or None when no API key is set."""
    key = settings.anthropic_api_key
    if key is None or not key.get_secret_value():
        return None
    return AnthropicConfig(
        api_key=key.get_secret_value(),
        base_url=settings.anthropic_base_url,
        model=settings.fallback_model,
        timeout_s=settings.fallback_timeout_s,
    )


def embed_config(settings: Settings) -> EmbedConfig | None:
    """The embedding model on the local Ollama server, or None when AXI_EMBED_MODEL
    turns embeddings off (the default)."""
    if not settings.embed_model:
        return None
    return EmbedConfig(
        host=settings.ollama_host,
        model=settings.embed_model,
        timeout_s=settings.local_timeout_s,
        keep_alive=settings.local_keep_alive,
    )


def call_recorder(store: MemoryStore, *,
                  observe: Callable[[CallRecord], None] | None = None) -> RecordFn:
    """The router's `record=` callback: each attempt written to the `appels_llm` log,
    with the local server's timings when the reply carried them; `observe` (the metrics'
    counters, bot/metrics.py) sees each attempt first, even when the database is away."""

    async def record(call: CallRecord) -> int:
        if observe is not None:
            try:
                observe(call)
            except Exception as exc:  # counting must never break a reply
                log.warning("could not count an LLM call: %s", type(exc).__name__)
        timings = call.timings
        try:
            return await _write(call, timings)
        except Exception as exc:
            if not lost_connection(exc):
                raise  # a bug: the router logs it with its traceback
            log.warning("could not record an LLM call: the database is out of reach "
                        "(%s: %s)", type(exc).__name__, exc)
            return 0

    async def _write(call: CallRecord, timings: Any) -> int:
        return await store.record_llm_call(
            provider=call.provider,
            model=call.model,
            task=call.task,
            tokens_in=call.tokens_in,
            tokens_out=call.tokens_out,
            latency_ms=call.latency_ms,
            ok=call.ok,
            error=call.error,
            fallback_reason=call.fallback_reason,
            cost_eur=call.cost_eur,
            cached_tokens=timings.cached_tokens if timings else None,
            cached_estimated=(timings.cached_estimated if timings and timings.cached_tokens
                              is not None else None),
            evaluated_tokens=timings.evaluated_tokens if timings else None,
            prompt_ms=timings.prompt_ms if timings else None,
            generation_ms=timings.generation_ms if timings else None,
            load_ms=timings.load_ms if timings else None,
            total_ms=timings.total_ms if timings else None,
            queue_ms=call.queue_ms,
        )

    return record
