"""Files people send Axi are kept, not only named.

Why: a photo, a PDF or a voice note sent on Telegram (and, soon, an email's attachments)
was recorded by name, type and size only; Telegram's download links expire, so the content
was as good as lost. `fichiers_recus` holds the bytes of each received file up to the
channel's configured size, stored in the same transaction as the message (a redelivered
message stores nothing twice), with a SHA-256 to recognise the same file sent again.

Revision ID: 0014
Revises: 0013
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE fichiers_recus ("
        " id bigserial PRIMARY KEY,"
        " message_id bigint NOT NULL REFERENCES messages(id) ON DELETE CASCADE,"
        " rang integer NOT NULL CHECK (rang >= 0),"
        " nom text NOT NULL,"
        " type_mime text NOT NULL,"
        " taille bigint NOT NULL CHECK (taille >= 0),"
        " sha256 text NOT NULL,"
        " contenu bytea NOT NULL,"
        " cree_le timestamptz NOT NULL DEFAULT now(),"
        " UNIQUE (message_id, rang))"
    )
    op.execute("CREATE INDEX idx_fichiers_recus_sha256 ON fichiers_recus (sha256)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS fichiers_recus")
