"""One conservative token estimator for prompt budgeting, so every part of Axi agrees.

It lives in `llm/` because the Ollama client refuses a prompt with it before sending, and
the prompt builder (`bot/prompt_builder.py`) budgets with the very same numbers: a prompt the
builder made always passes the client's check.

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

import re
from collections.abc import Iterable, Mapping

CHARS_PER_TOKEN = 3.0
MESSAGE_OVERHEAD = 8  # [INST] … [/INST], </s>, role headers, newlines
PROMPT_OVERHEAD = 8  # BOS and the generation prompt

_LATIN_END = 0x024F  # Latin-1 + Latin Extended-A/B: accents, œ, æ
_HEAVY = re.compile("[^\x00-\u024f\u2000-\u206f]")  # one token each (BMP), four beyond
_DIGITS = re.compile("[0-9]")


def _char_weight(ch: str) -> float:
    """The weight of one character (the reference the fast count below must equal)."""
    if ch.isdigit() and ch.isascii():
        return 1.0
    code = ord(ch)
    if code <= _LATIN_END or 0x2000 <= code <= 0x206F:  # general punctuation: ’ … – “ ”
        return 1.0 / CHARS_PER_TOKEN
    if code <= 0xFFFF:
        return 1.0
    return 4.0


def estimate_text(text: str) -> int:
    """Estimated tokens of a bare text (no message overhead).

    Counted in thirds of a token with C-speed scans (the prompt builder estimates every
    history turn on every message: a per-character Python loop cost milliseconds)."""
    if not text:
        return 0
    digits = len(_DIGITS.findall(text))
    heavy = _HEAVY.findall(text) if not text.isascii() else []
    astral = sum(1 for ch in heavy if ord(ch) > 0xFFFF)
    light = len(text) - digits - len(heavy)
    thirds = light + 3 * (digits + len(heavy) - astral) + 12 * astral
    return -(-thirds // 3)


def estimate_message(message: Mapping[str, str]) -> int:
    return MESSAGE_OVERHEAD + estimate_text(message["content"])


def estimate_messages(messages: Iterable[Mapping[str, str]]) -> int:
    """Estimated tokens of a whole chat prompt, as the model will evaluate it."""
    return PROMPT_OVERHEAD + sum(estimate_message(m) for m in messages)
