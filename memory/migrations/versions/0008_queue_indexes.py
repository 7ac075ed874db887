"""Small indexes of the work queues: inbound messages waiting for a worker, replies
waiting to be sent, each in id order.

Why: the claim queries ask for the oldest waiting message (ORDER BY id LIMIT 1). With
only the primary key to give that order, PostgreSQL walked every message ever stored
when none was waiting (8,640 rows, 18 ms, measured; and the worker asks every second),
and the (etat, prochain_essai, id) index cannot give id order. These partial indexes
hold only the waiting messages.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX idx_messages_entrants_en_attente ON messages (id) "
               "WHERE sens = 'entrant' AND etat = 'en_attente'")
    op.execute("CREATE INDEX idx_messages_sortants_a_envoyer ON messages (id) "
               "WHERE sens = 'sortant' AND etat = 'a_envoyer'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_messages_sortants_a_envoyer")
    op.execute("DROP INDEX IF EXISTS idx_messages_entrants_en_attente")
