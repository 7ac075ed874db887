"""Who may assert what, and who reads which consigne.

`faits.selon`: NULL for a fact (said by the person it is about, or by the inner circle);
otherwise the row is only a claim, attributed to whoever made it ("Mme Durand (client)",
"Interlocuteur inconnu (web)"). A claim never supersedes a fact, is never superseded by
one, and is never shown as truth in a prompt. Existing rows stay facts.

`consignes.audience`: 'interne' (the inner circle only: the default everywhere, existing
rows included) or 'tous' (every prompt, clients' and strangers' too).

Revision ID: 0011
Revises: 0010
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE faits ADD COLUMN selon text "
               "CONSTRAINT ck_faits_selon_non_vide CHECK (selon IS NULL OR btrim(selon) <> '')")
    op.execute("ALTER TABLE consignes ADD COLUMN audience varchar(10) NOT NULL "
               "DEFAULT 'interne' CONSTRAINT ck_consignes_audience "
               "CHECK (audience IN ('interne', 'tous'))")


def downgrade() -> None:
    op.execute("ALTER TABLE consignes DROP COLUMN IF EXISTS audience")
    op.execute("ALTER TABLE faits DROP COLUMN IF EXISTS selon")
