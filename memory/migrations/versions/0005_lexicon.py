"""The lexicon: how many souvenirs hold each lexeme of the French search vector.

Recall weighs query words by rarity and sizes its search from their frequencies. Counting
a word's matches at query time costs a GIN bitmap plus a heap visit per match (2-5 ms for
a word found in a few thousand souvenirs, 67 ms measured for one message made of such
words), and pg_stats only keeps the top ~1,000 lexemes. `lexique` holds every lexeme's
document count, built by ts_stat() and brought up to date incrementally (see
memory/lexicon.py); `lexique_etat` says up to which souvenir id it counts.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

STATEMENTS = [
    """CREATE TABLE lexique (
        lexeme TEXT PRIMARY KEY,
        nb INTEGER NOT NULL CHECK (nb >= 0)
    )""",
    """CREATE TABLE lexique_etat (
        id SMALLINT PRIMARY KEY DEFAULT 1 CHECK (id = 1),
        jusqu_a BIGINT NOT NULL,
        souvenirs BIGINT NOT NULL,
        reconstruit_le TIMESTAMPTZ NOT NULL,
        maj_le TIMESTAMPTZ NOT NULL
    )""",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS lexique_etat")
    op.execute("DROP TABLE IF EXISTS lexique")
