"""What the LLM clients need to know, as small frozen values of their own.

`llm/` sits below the core and must not import `bot.config.Settings` (nor pydantic-settings):
the composition root translates the settings into these objects (`bot/llm_wiring.py`) and
hands them to `OllamaChat`, `AnthropicChat` and `OllamaEmbedder`. Tests and benches can build
them directly. Validation of the values (ranges, "off" spellings) stays with the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"


@dataclass(frozen=True)
class OllamaConfig:
    """The local chat model: one Ollama server, a model per task, one context size."""

    model: str
    host: str = DEFAULT_OLLAMA_HOST
    extraction_model: str | None = None
    summary_model: str | None = None
    num_ctx: int = 8192
    timeout_s: float = 120.0
    keep_alive: str = "30m"

    def model_for(self, task: str) -> str:
        """The local model for a task: conversation, extraction or summary."""
        if task == "extraction" and self.extraction_model:
            return self.extraction_model
        if task == "summary" and self.summary_model:
            return self.summary_model
        return self.model


@dataclass(frozen=True)
class AnthropicConfig:
    """The remote fallback (Claude). The key is a plain string kept out of `repr`."""

    api_key: str = field(repr=False)
    model: str
    base_url: str | None = None
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.api_key:
            raise ValueError("an Anthropic API key is required for the remote fallback")


@dataclass(frozen=True)
class EmbedConfig:
    """Text embeddings from Ollama's /api/embed."""

    model: str
    host: str = DEFAULT_OLLAMA_HOST
    timeout_s: float = 120.0
    keep_alive: str = "30m"
