"""Operations (issue 13): the record of backups and their verifications.

- operations: one row per backup, verify or restore, per repository (`local` or
  `distant`): start, end, state, the restic snapshot, sizes and the error. `/health`,
  `axi status` and `axi doctor` read the age of the last good backup and verify here, and
  the weekly verify's alerts (once on failure, once on recovery) compare with the
  previous row of the same kind.

Revision ID: 0018
Revises: 0017
"""

from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE operations ("
        " id bigserial PRIMARY KEY,"
        " type text NOT NULL CHECK (type IN ('sauvegarde', 'verification', 'restauration')),"
        " depot text NOT NULL CHECK (depot IN ('local', 'distant')),"
        " debut timestamptz NOT NULL DEFAULT now(),"
        " fin timestamptz,"
        " etat text NOT NULL DEFAULT 'en_cours' CHECK (etat IN ('en_cours', 'ok', 'echec')),"
        " instantane text,"
        " taille_octets bigint,"
        " details jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " erreur text)"
    )
    op.execute("CREATE INDEX operations_type_fin ON operations (type, depot, fin DESC)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS operations")
