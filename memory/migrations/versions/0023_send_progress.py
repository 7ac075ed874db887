"""envois_commences remembers how far a send in parts got (issue 8: replies over 4,096
characters, pushes with attachments).

Why: a message Telegram gets in several parts (a long reply, a digest and its files) is
sent one part a second; between two parts it goes back to the outbox (a pace, not a
failure). Where the sent parts were counted only in the process's memory, a restart in
that second sent part 1 again; a SIGKILL during a part left a marker that stopped the
rest for ever. Now the marker says how many parts were delivered (`parties`) and whether
a request for the next one may have left (`en_vol`): a restart resumes after the
delivered parts, and only a part that may have arrived is uncertain (bot/pipeline.py).

Revision ID: 0023
Revises: 0022
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE envois_commences "
               "ADD COLUMN parties integer NOT NULL DEFAULT 0, "
               "ADD COLUMN en_vol boolean NOT NULL DEFAULT true")


def downgrade() -> None:
    op.execute("ALTER TABLE envois_commences DROP COLUMN parties, DROP COLUMN en_vol")
