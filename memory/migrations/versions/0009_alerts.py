"""Alerts for Ludo (the créateur): one row per alert key, so an alert that a condition
raises again and again (the monthly Claude budget spent, later a broken veille source)
reaches him once, not at every message or every run.

Why: DESIGN "LLM": "a monthly Claude budget cap stops fallbacks and alerts Ludo"; "A
source that breaks alerts Ludo once, not every run". The messages themselves go through
the outbox like any other (one per identity of the créateur); this table only remembers
which alerts were raised, when, and how many messages were queued.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE alertes ("
        " id serial PRIMARY KEY,"
        " cle varchar(200) NOT NULL UNIQUE,"
        " texte text NOT NULL,"
        " messages_mis_en_file integer NOT NULL DEFAULT 0,"
        " cree_le timestamptz NOT NULL DEFAULT now())"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS alertes")
