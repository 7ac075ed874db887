"""Pure arithmetic for prompts and money: a conservative token estimate (so a prompt is
refused before Ollama silently truncates it), the signs of truncation in Ollama's reply,
and the Claude price table (the only place prices live)."""

from __future__ import annotations

from collections.abc import Sequence

from llm import tokens
from llm.types import ChatMessage

# Claude prices in EUR per million tokens (input, output), by model family prefix.
# Anthropic lists USD (Sonnet 4.5: $3 / $15; Haiku 4.5: $1 / $5; Opus 4.5: $5 / $25);
# converted at USD_TO_EUR. Unknown models are priced as Sonnet, the default fallback.
USD_TO_EUR = 0.93
PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku": (1.0, 5.0),
    "claude-sonnet": (3.0, 15.0),
    "claude-opus": (5.0, 25.0),
}
DEFAULT_PRICE_USD_PER_MTOK = PRICES_USD_PER_MTOK["claude-sonnet"]


def estimate_text_tokens(text: str) -> int:
    return tokens.estimate_text(text)


def estimate_prompt_tokens(messages: Sequence[ChatMessage]) -> int:
    """A deliberately high estimate of how many tokens a chat prompt takes — the same
    estimator the context builder budgets with, so a prompt it built always passes."""
    return tokens.estimate_messages({"role": m.role, "content": m.content} for m in messages)


def prompt_room(num_ctx: int, num_predict: int) -> int:
    """How many prompt tokens fit once the answer's room is set aside."""
    return max(0, num_ctx - num_predict)


def shows_truncation(
    *,
    prompt_eval_count: int | None,
    eval_count: int | None,
    done_reason: str | None,
    num_ctx: int,
    num_predict: int,
) -> bool:
    """Whether Ollama's counters say the context window overflowed.

    `prompt_eval_count` counts only the tokens evaluated for this call (a cached prefix is
    not counted, and the field is omitted when the whole prompt was cached), so it is a lower
    bound: when missing there is no evidence either way and the pre-send budget stands.
    """
    if prompt_eval_count is not None and prompt_eval_count >= num_ctx:
        return True
    if prompt_eval_count is not None and eval_count is not None:
        if prompt_eval_count + eval_count >= num_ctx:
            return True
    # Generation stopped for "length" before num_predict: the context, not the cap, ran out.
    return done_reason == "length" and eval_count is not None and eval_count < num_predict


def claude_cost_eur(model: str, tokens_in: int, tokens_out: int) -> float:
    price_in, price_out = DEFAULT_PRICE_USD_PER_MTOK
    for prefix, prices in PRICES_USD_PER_MTOK.items():
        if model.startswith(prefix):
            price_in, price_out = prices
            break
    usd = (tokens_in * price_in + tokens_out * price_out) / 1_000_000
    return round(usd * USD_TO_EUR, 6)
