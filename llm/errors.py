"""The LLM error tree: what can go wrong talking to a chat model, translated at the
client boundary (`raise LLMUnavailable(...) from exc`) so the router and the pipeline
never see a library exception.

`str(exc)` is for operators (English, says how to fix). `exc.user_message` is what a person
may be told (French). `exc.reason` is the short code stored as `raison_repli` when the
router falls back because of this error.
"""

from __future__ import annotations


class LLMError(Exception):
    reason: str = "error"
    user_message: str = (
        "Je n'arrive pas à réfléchir correctement pour le moment ; je réessaierai un peu plus tard."
    )


class LLMUnavailable(LLMError):
    """Server down, connection refused, 5xx, or the stream broke."""

    reason = "unavailable"


class LLMTimeout(LLMError):
    reason = "timeout"


class ModelNotFound(LLMError):
    """The local model is not installed on the Ollama server."""

    reason = "model_not_found"

    def __init__(self, model: str, host: str | None = None):
        where = f" on the Ollama server at {host}" if host else ""
        super().__init__(
            f"model {model!r} is not installed{where}; install it with: ollama pull {model}"
        )
        self.model = model
        self.pull_command = f"ollama pull {model}"


class PromptTooLarge(LLMError):
    """The prompt cannot fit the local context window (with room left for the answer)."""

    reason = "prompt_too_large"

    def __init__(self, message: str, *, estimated_tokens: int | None = None,
                 num_ctx: int | None = None):
        super().__init__(message)
        self.estimated_tokens = estimated_tokens
        self.num_ctx = num_ctx


class InvalidStructuredOutput(LLMError):
    """The model's answer is not JSON matching the requested schema."""

    reason = "invalid_structured_output"

    def __init__(self, message: str, *, text: str = ""):
        super().__init__(message)
        self.text = text


class BudgetExceeded(LLMError):
    """The monthly Claude budget is spent: no more fallbacks this month."""

    reason = "budget_exceeded"
    user_message = (
        "Le budget mensuel de Claude est atteint : je ne peux pas utiliser le modèle de "
        "secours avant le mois prochain. Ludo est prévenu."
    )


class LocalOnlyUnavailable(LLMError):
    """The message must never leave the server and the local model is down: it waits."""

    reason = "local_only_unavailable"
    user_message = (
        "Le modèle local est momentanément indisponible et ce message ne doit pas quitter "
        "le serveur : il est mis en attente et sera traité dès son retour."
    )


class AuthError(LLMError):
    """The remote API rejected our key (401/403)."""

    reason = "auth"


class RateLimited(LLMError):
    reason = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Overloaded(LLMError):
    """The remote API is overloaded (HTTP 529 / overloaded_error)."""

    reason = "overloaded"


class LocalTooBusy(LLMError):
    """The local model would make a person wait longer than AXI_LOCAL_MAX_WAIT: their
    message goes to the fallback instead (never one that must stay on the server)."""

    reason = "local_busy"


class LocalReserved(LocalTooBusy):
    """The local model is kept for the inner circle (AXI_LOCAL_RESERVE_S): a client's live
    message goes to the fallback instead (never one that must stay on the server)."""

    reason = "local_reserved"
