"""The local model's own account of each call: cache hits, durations, waiting.

Why: on the server's CPU, a person's wait is decided by what Ollama really did — how much
of the prompt it took from its KV cache and how much it had to evaluate again, at what rate,
and how long the call queued. `appels_llm` only held token counts and the latency seen by
Axi; these columns keep Ollama's figures (issue 9) so `axi llm status` can show the measured
rates, the share of prompt tokens served from the cache and the queue wait. All nullable:
older rows and Claude's calls have none of them.

- jetons_caches: prompt tokens served from the cache; caches_estimes: true when the server
  did not report it and it was estimated from the prompt duration and the measured rate
- jetons_evalues: prompt tokens really evaluated (the prompt minus the cache)
- duree_prompt_ms, duree_generation_ms, duree_chargement_ms, duree_totale_ms: Ollama's
  prompt_eval_duration, eval_duration, load_duration and total_duration
- attente_ms: the wait in Axi's own queue before the call (the priority gate)

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = {
    "jetons_caches": "integer",
    "caches_estimes": "boolean",
    "jetons_evalues": "integer",
    "duree_prompt_ms": "integer",
    "duree_generation_ms": "integer",
    "duree_chargement_ms": "integer",
    "duree_totale_ms": "integer",
    "attente_ms": "integer",
}


def upgrade() -> None:
    for name, kind in COLUMNS.items():
        op.execute(f"ALTER TABLE appels_llm ADD COLUMN {name} {kind}")


def downgrade() -> None:
    for name in COLUMNS:
        op.execute(f"ALTER TABLE appels_llm DROP COLUMN IF EXISTS {name}")
