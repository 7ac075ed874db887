"""An index of the turns that make a conversation's history (answered inbound messages
and replies, not notices), by conversation and id.

Why: reading the last 40 turns and the conversation's length scanned every message of the
conversation (3 ms for 1,400 messages, growing without bound for Ludo's daily chat). With
this partial index the last turns are a short backward index scan and the length an
index-only count.

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

HISTORY_TURN = ("(sens = 'entrant' AND etat = 'traite') OR "
                "(sens = 'sortant' AND NOT coalesce((metadata->>'avis')::boolean, false))")


def upgrade() -> None:
    op.execute(f"CREATE INDEX idx_messages_historique ON messages (conversation, id) "
               f"WHERE {HISTORY_TURN}")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_messages_historique")
