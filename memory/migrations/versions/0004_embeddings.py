"""Embeddings of souvenirs (hybrid recall): one vector per souvenir, with its model.

`vecteur real[]` is the source of truth and works on any PostgreSQL. When the server
offers pgvector (`vector` in pg_available_extensions, e.g. the embedded PostgreSQL 16 or
the pgvector Docker image), the extension is created too and recall computes cosine
distance with pgvector's `<=>` on a `real[]::vector` cast; without it, recall computes the
dot product of the (unit-length) vectors in plain SQL. No ANN (HNSW) index is created here:
an HNSW index is bound to one dimension and one model, which a migration cannot know.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
from sqlalchemy import text

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATEMENTS = [
    """CREATE TABLE souvenirs_vecteurs (
        souvenir_id INTEGER PRIMARY KEY REFERENCES souvenirs(id) ON DELETE CASCADE,
        modele VARCHAR(100) NOT NULL,
        vecteur REAL[] NOT NULL,
        cree_le TIMESTAMPTZ NOT NULL DEFAULT NOW()
    )""",
    "CREATE INDEX idx_souvenirs_vecteurs_modele ON souvenirs_vecteurs (modele)",
]


def upgrade() -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    bind = op.get_bind()
    available = bind.execute(
        text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    ).scalar()
    if available:
        # Creating an extension may need rights the role lacks: then recall uses plain SQL.
        savepoint = bind.begin_nested()
        try:
            bind.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            savepoint.commit()
        except Exception:
            savepoint.rollback()


def downgrade() -> None:
    # The extension is left in place: other objects may use it.
    op.execute("DROP TABLE IF EXISTS souvenirs_vecteurs")
