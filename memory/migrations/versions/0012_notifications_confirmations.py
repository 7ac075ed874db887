"""Notifications (one row per key, replacing `alertes`) and confirmations.

Why: DESIGN "Reaching people": everything Axi sends on its own goes through `notify`, whose
`key` is unique per notification so a rerun or a retry never sends twice — the
`notifications` row is that key, inserted in the same transaction as the outbound messages
it queued. The budget alerts of `alertes` (migration 0009) are notifications now: their
rows move over and the table goes.

Confirmations ("ne rien lancer sans accord Ludo"): an action with side effects on Ludo's
behalf waits as a row (who asks, whom we ask, what, a JSON payload, the choices, expiry);
the answer comes back through the inbox and the row's state moves once, in the same
transaction as the action's own writes, so the action runs exactly once.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE notifications ("
        " id serial PRIMARY KEY,"
        " cle varchar(300) NOT NULL UNIQUE,"
        " genre varchar(20) NOT NULL DEFAULT 'push',"
        " destinataire text NOT NULL,"
        " sujet text,"
        " texte text NOT NULL,"
        " urgente boolean NOT NULL DEFAULT false,"
        " messages_mis_en_file integer NOT NULL DEFAULT 0,"
        " cree_le timestamptz NOT NULL DEFAULT now())"
    )
    op.execute(
        "INSERT INTO notifications (cle, genre, destinataire, texte, urgente, "
        "messages_mis_en_file, cree_le) SELECT cle, 'push', 'créateur', texte, true, "
        "messages_mis_en_file, cree_le FROM alertes"
    )
    op.execute("DROP TABLE alertes")
    op.execute(
        "CREATE TABLE confirmations ("
        " id serial PRIMARY KEY,"
        " action varchar(100) NOT NULL,"
        " texte text NOT NULL,"
        " payload jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " choix jsonb NOT NULL,"
        " demande_par integer REFERENCES relations(id) ON DELETE SET NULL,"
        " demande_a integer NOT NULL REFERENCES relations(id) ON DELETE CASCADE,"
        " etat varchar(20) NOT NULL DEFAULT 'en_attente' CHECK (etat IN "
        "  ('en_attente', 'executee', 'refusee', 'expiree', 'echouee')),"
        " reponse varchar(100),"
        " resultat text,"
        " repondu_le timestamptz,"
        " expire_le timestamptz NOT NULL,"
        " cree_le timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE INDEX idx_confirmations_en_attente ON confirmations (demande_a, id) "
               "WHERE etat = 'en_attente'")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS confirmations")
    op.execute(
        "CREATE TABLE alertes ("
        " id serial PRIMARY KEY,"
        " cle varchar(200) NOT NULL UNIQUE,"
        " texte text NOT NULL,"
        " messages_mis_en_file integer NOT NULL DEFAULT 0,"
        " cree_le timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("INSERT INTO alertes (cle, texte, messages_mis_en_file, cree_le) "
               "SELECT left(cle, 200), texte, messages_mis_en_file, cree_le FROM notifications "
               "WHERE urgente")
    op.execute("DROP TABLE IF EXISTS notifications")
