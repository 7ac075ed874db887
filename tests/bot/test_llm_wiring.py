"""The translation from Axi's settings to the llm layer's config objects, and the call
recorder that maps the router's records onto the memory's call log."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from bot.config import DEFAULT_FALLBACK_MODEL, DEFAULT_LOCAL_MODEL, Settings
from bot.llm_wiring import anthropic_config, call_recorder, embed_config, ollama_config
from llm.types import CallRecord
from memory.store import MemoryStore

KEY = "sk-ant-wiring-test-0123456789"


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_ollama_config_from_settings() -> None:
    config = ollama_config(_settings(
        OLLAMA_HOST="http://ollama.lan:11434", AXI_LOCAL_EXTRACTION_MODEL="qwen2.5:3b-instruct",
        AXI_LOCAL_NUM_CTX=4096, AXI_LOCAL_TIMEOUT=30, AXI_LOCAL_KEEP_ALIVE="1h"))
    assert config.host == "http://ollama.lan:11434"
    assert config.model_for("conversation") == DEFAULT_LOCAL_MODEL
    assert config.model_for("extraction") == "qwen2.5:3b-instruct"
    assert config.model_for("summary") == DEFAULT_LOCAL_MODEL  # unset: the main model
    assert (config.num_ctx, config.timeout_s, config.keep_alive) == (4096, 30.0, "1h")


def test_anthropic_config_only_with_a_key() -> None:
    assert anthropic_config(_settings()) is None
    assert anthropic_config(_settings(ANTHROPIC_API_KEY="")) is None
    config = anthropic_config(_settings(ANTHROPIC_API_KEY=KEY, AXI_FALLBACK_TIMEOUT=12))
    assert config is not None
    assert config.api_key == KEY and config.model == DEFAULT_FALLBACK_MODEL
    assert config.timeout_s == 12.0 and config.base_url is None
    assert KEY not in repr(config)


@pytest.mark.parametrize("value", [None, "", "off", "None"])
def test_embeddings_off(value: str | None) -> None:
    values = {} if value is None else {"AXI_EMBED_MODEL": value}
    assert embed_config(_settings(**values)) is None


def test_embed_config_shares_the_local_server() -> None:
    config = embed_config(_settings(AXI_EMBED_MODEL="nomic-embed-text",
                                    OLLAMA_HOST="http://ollama.lan:11434",
                                    AXI_LOCAL_KEEP_ALIVE="1h"))
    assert config is not None
    assert (config.model, config.host, config.keep_alive) == (
        "nomic-embed-text", "http://ollama.lan:11434", "1h")


async def test_call_recorder_writes_every_field(store: MemoryStore) -> None:
    record = call_recorder(store)
    await record(CallRecord(provider="anthropic", model="claude-sonnet-4-6", task="summary",
                            tokens_in=120, tokens_out=30, latency_ms=450, ok=False,
                            error="Overloaded: busy", fallback_reason="timeout",
                            cost_eur=0.25))
    async with store.db.sessions() as session:
        row = (await session.execute(text(
            "SELECT fournisseur, modele, tache, jetons_entree, jetons_sortie, latence_ms, "
            "succes, erreur, raison_repli, cout_eur FROM appels_llm"))).one()
    assert tuple(row) == ("anthropic", "claude-sonnet-4-6", "summary", 120, 30, 450, False,
                          "Overloaded: busy", "timeout", 0.25)
