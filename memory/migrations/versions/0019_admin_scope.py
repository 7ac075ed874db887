"""The `admin` scope of bearer tokens (issue 13 §2): an admin token shows the details of
`/health` and `/metrics` to a client that is not on the server itself (Uptime Kuma hosted
elsewhere, Prometheus, Anthony's laptop). Only the créateur or an administrateur may hold
one (checked by `axi tokens create` and again at each request, in bot/web_access.py).

- jetons.portee: the CHECK constraint gains 'admin'. Downgrading deletes the admin tokens
  (the older schema cannot hold them).

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE jetons DROP CONSTRAINT IF EXISTS jetons_portee_check")
    op.execute("ALTER TABLE jetons ADD CONSTRAINT jetons_portee_check "
               "CHECK (portee IN ('chat', 'axis', 'site', 'admin'))")


def downgrade() -> None:
    op.execute("DELETE FROM jetons WHERE portee = 'admin'")
    op.execute("ALTER TABLE jetons DROP CONSTRAINT IF EXISTS jetons_portee_check")
    op.execute("ALTER TABLE jetons ADD CONSTRAINT jetons_portee_check "
               "CHECK (portee IN ('chat', 'axis', 'site'))")
