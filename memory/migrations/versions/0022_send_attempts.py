"""envois_commences: a send that began and whose outcome is not committed yet (issue 14).

Why: the outbox holds its row's lock in one transaction across the channel's send and the
"sent" mark. Killed after Telegram accepted a message but before that commit, the row
came back `a_envoyer` and the reply went out twice (Telegram has no idempotency key). So
for a channel that cannot take the same delivery twice, the outbox first commits this
marker in a transaction of its own, then sends, then deletes it with the outcome. A
marker found when the row is claimed again means "it may have been delivered": the rule
for an uncertain send applies (bot/pipeline.py), never a blind resend.

A table of its own, not a column: the claimed row is locked FOR UPDATE until the outcome
commits, so no other transaction may update it — nor reference it by a foreign key
(FOR KEY SHARE waits on FOR UPDATE). A marker left for a message forgotten meanwhile
names no row and is harmless.

Revision ID: 0022
Revises: 0021
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE envois_commences ("
               "message_id BIGINT PRIMARY KEY, "
               "commence_le TIMESTAMPTZ NOT NULL DEFAULT now())")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS envois_commences")
