"""LLM call log: one row per attempt against a chat model (local or Claude), so the share
answered locally and the Claude spend are visible.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = """
CREATE TABLE appels_llm (
    id BIGSERIAL PRIMARY KEY,
    cree_le TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    fournisseur VARCHAR(20) NOT NULL,
    modele VARCHAR(200) NOT NULL,
    tache VARCHAR(50) NOT NULL,
    jetons_entree INTEGER NOT NULL DEFAULT 0,
    jetons_sortie INTEGER NOT NULL DEFAULT 0,
    latence_ms INTEGER NOT NULL DEFAULT 0,
    succes BOOLEAN NOT NULL,
    erreur TEXT,
    raison_repli TEXT,
    cout_eur NUMERIC(12, 6) NOT NULL DEFAULT 0
);
CREATE INDEX idx_appels_llm_cree_le ON appels_llm (cree_le);
"""


def _statements(script: str) -> list[str]:
    """asyncpg runs one statement per call: split a script on its semicolons."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def upgrade() -> None:
    for statement in _statements(SCHEMA):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS appels_llm")
