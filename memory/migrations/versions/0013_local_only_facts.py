"""Facts learnt from what must never leave the server stay on it.

Why: a message (or a person) marked "never leaves the server" keeps its souvenirs out of
any prompt bound for Claude, but the facts extracted from it went into the system prompt
of later fallbacks ("Ludo aime le golf" learnt from a local-only message). A fact now
carries `jamais_hors_serveur` (as relations do); existing facts take it from their source
souvenir.

Revision ID: 0013
Revises: 0012
"""

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE faits ADD COLUMN jamais_hors_serveur boolean NOT NULL DEFAULT false")
    op.execute(
        "UPDATE faits f SET jamais_hors_serveur = true FROM souvenirs s "
        "WHERE s.id = f.source_souvenir_id "
        "AND coalesce((s.metadata->>'local_only')::boolean, false)"
    )


def downgrade() -> None:
    op.execute("ALTER TABLE faits DROP COLUMN IF EXISTS jamais_hors_serveur")
