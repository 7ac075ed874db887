"""Recall's full-text indexes without a GIN pending list (fastupdate off).

Why: with fastupdate on (PostgreSQL's default), new entries go to an unsorted pending
list that EVERY search scans in full, until the list reaches gin_pending_list_limit
(4 MB) or a vacuum merges it. On a large memory autovacuum seldom comes (20 % of the
table must be inserted first), so the list hovers between 0 and 4 MB, and every recall
paid for it. Measured on one million souvenirs: an all-words search read 480 buffers in
3.2 ms with a 448-page pending list, 28 buffers in 0.27 ms once merged. Without the
list, inserts update the index directly: 13,900 → 8,300 souvenirs/s in bulk, a single
conversation turn unchanged (p50 0.8 ms), and no insert pays for merging the list.
The seed index idx_souvenirs_contenu_fts is left as the seed made it (recall does not
search it).

Revision ID: 0010
Revises: 0009
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEXES = ("idx_souvenirs_recherche", "idx_souvenirs_recherche_public")


def upgrade() -> None:
    for index in INDEXES:
        op.execute(f"ALTER INDEX {index} SET (fastupdate = off)")
        op.execute(f"SELECT gin_clean_pending_list('{index}'::regclass)")


def downgrade() -> None:
    for index in INDEXES:
        op.execute(f"ALTER INDEX {index} RESET (fastupdate)")
