"""One conservative token estimator for prompt budgeting, so every part of Axi agrees.

Ollama silently truncates a prompt longer than `num_ctx`, so an estimate that is too low
loses the persona without any error. The estimate therefore errs on the high side for
French text and the Mistral/Llama SentencePiece tokenizers:
- Latin letters, spaces and punctuation: one token per 3 characters (French averages
  closer to 3.5-4 characters per token);
- digits: one token each (these tokenizers split numbers digit by digit, and real-estate
  text is full of prices, postcodes and phone numbers);
- other characters of the Basic Multilingual Plane: one token each; beyond it (emoji):
  four tokens (byte fallback).
Each chat message also pays a fixed overhead for the template's role markers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

CHARS_PER_TOKEN = 3.0
MESSAGE_OVERHEAD = 8  # [INST] … [/INST], </s>, role headers, newlines
PROMPT_OVERHEAD = 8  # BOS and the generation prompt

_LATIN_END = 0x024F  # Latin-1 + Latin Extended-A/B: accents, œ, æ


def _char_weight(ch: str) -> float:
    if ch.isdigit() and ch.isascii():
        return 1.0
    code = ord(ch)
    if code <= _LATIN_END or 0x2000 <= code <= 0x206F:  # general punctuation: ’ … – “ ”
        return 1.0 / CHARS_PER_TOKEN
    if code <= 0xFFFF:
        return 1.0
    return 4.0


def estimate_text(text: str) -> int:
    """Estimated tokens of a bare text (no message overhead)."""
    if not text:
        return 0
    return math.ceil(sum(_char_weight(ch) for ch in text))


def estimate_message(message: Mapping[str, str]) -> int:
    return MESSAGE_OVERHEAD + estimate_text(message["content"])


def estimate_messages(messages: Iterable[Mapping[str, str]]) -> int:
    """Estimated tokens of a whole chat prompt, as the model will evaluate it."""
    return PROMPT_OVERHEAD + sum(estimate_message(m) for m in messages)
