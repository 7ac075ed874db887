"""Index the souvenirs whose facts are still to be extracted (the background queue).

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX idx_souvenirs_extraction_a_faire ON souvenirs (id) "
        "WHERE metadata->>'extraction' = 'a_faire'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_souvenirs_extraction_a_faire")
