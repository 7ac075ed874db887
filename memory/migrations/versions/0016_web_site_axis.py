"""The web: API tokens, the site's contact requests, the Axis mailbox, OAuth for Axis.

Why (issue 11): Axi answers on axi.icidordogne.fr, serves the agency's website and talks
with Axis (Ludo's Claude.ai assistant) both ways.

- jetons: bearer tokens of the HTTP API. Only a SHA-256 of the token is kept (the token is
  printed once). A token belongs to a person (`relation_id`) and has a scope: `chat` (the
  web chat and /api), `axis` (MCP, /briefing, /memory) or `site`. `expire_le` is set for
  the tokens issued through OAuth (Claude.ai's connector); `revoque_le` ends a token
  without forgetting it existed.
- oauth_etats: the OAuth 2.1 authorization server's state for Axis's connector — clients
  registered dynamically, authorization codes, refresh tokens, pending approvals — one row
  per (genre, cle) with its JSON and expiry; codes and tokens are stored hashed.
- boite_axis: what Axi has for Axis (a question it cannot answer, a result Ludo asked to
  share), read and acknowledged by Axis through MCP; `cle` makes a repeated write a no-op.
- demandes_contact: the site's contact form, stored before it is relayed to the agency by
  email (through the outbox), and deleted with the visitors' other data after
  AXI_VISITOR_RETENTION_DAYS.

Revision ID: 0016
Revises: 0015
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE jetons ("
        " id serial PRIMARY KEY,"
        " relation_id integer NOT NULL REFERENCES relations(id) ON DELETE CASCADE,"
        " portee varchar(10) NOT NULL CHECK (portee IN ('chat', 'axis', 'site')),"
        " nom text,"
        " empreinte char(64) NOT NULL UNIQUE,"
        " client_oauth text,"
        " cree_le timestamptz NOT NULL DEFAULT now(),"
        " utilise_le timestamptz,"
        " expire_le timestamptz,"
        " revoque_le timestamptz)"
    )
    op.execute("CREATE INDEX idx_jetons_relation ON jetons (relation_id)")
    op.execute(
        "CREATE TABLE oauth_etats ("
        " genre varchar(20) NOT NULL,"
        " cle text NOT NULL,"
        " client_id text,"
        " donnees jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " cree_le timestamptz NOT NULL DEFAULT now(),"
        " expire_le timestamptz,"
        " PRIMARY KEY (genre, cle))"
    )
    op.execute(
        "CREATE TABLE boite_axis ("
        " id bigserial PRIMARY KEY,"
        " texte text NOT NULL,"
        " source text,"
        " cle text UNIQUE,"
        " cree_le timestamptz NOT NULL DEFAULT now(),"
        " lu_le timestamptz)"
    )
    op.execute("CREATE INDEX idx_boite_axis_non_lus ON boite_axis (id) WHERE lu_le IS NULL")
    op.execute(
        "CREATE TABLE demandes_contact ("
        " id bigserial PRIMARY KEY,"
        " site text,"
        " nom text NOT NULL,"
        " email text NOT NULL,"
        " telephone text,"
        " message text NOT NULL,"
        " bien text,"
        " ip text,"
        " cree_le timestamptz NOT NULL DEFAULT now(),"
        " relaye_le timestamptz)"
    )
    op.execute("CREATE INDEX idx_demandes_contact_cree_le ON demandes_contact (cree_le)")


def downgrade() -> None:
    for table in ("demandes_contact", "boite_axis", "oauth_etats", "jetons"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
