"""Veilles: who already received each item (issue 12, "a rerun repeats nothing").

- elements_veille.envoye_a: the recipients (a short hash of role and name, as the
  digest's notify key ends) whose digest with this item is queued. An item is reported
  once every configured recipient has it; until then each run sends it only to those who
  miss it, so a recipient that cannot be reached (a misspelt name) never makes the others
  receive the same items again.

Revision ID: 0020
Revises: 0019
"""

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE elements_veille ADD COLUMN envoye_a text[] NOT NULL DEFAULT '{}'")


def downgrade() -> None:
    op.execute("ALTER TABLE elements_veille DROP COLUMN IF EXISTS envoye_a")
