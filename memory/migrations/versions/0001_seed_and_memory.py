"""Seed tables (souvenirs, faits, relations) plus identities, consignes, messages,
channel cursors, fact validity and accent-insensitive French search.

Revision ID: 0001
Revises:
"""

from alembic import op

from memory.text import fold_sql_function

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SEED = """
CREATE TABLE souvenirs (
    id SERIAL PRIMARY KEY,
    timestamp TIMESTAMPTZ DEFAULT NOW(),
    type VARCHAR(50) NOT NULL,
    source VARCHAR(100),
    contenu TEXT NOT NULL,
    resume TEXT,
    importance INTEGER DEFAULT 5,
    metadata JSONB DEFAULT '{}'::jsonb
);
CREATE INDEX idx_souvenirs_timestamp ON souvenirs (timestamp DESC);
CREATE INDEX idx_souvenirs_type ON souvenirs (type);
CREATE INDEX idx_souvenirs_source ON souvenirs (source);
CREATE INDEX idx_souvenirs_importance ON souvenirs (importance DESC);
CREATE INDEX idx_souvenirs_contenu_fts ON souvenirs USING gin (to_tsvector('french', contenu));

CREATE TABLE relations (
    id SERIAL PRIMARY KEY,
    personne VARCHAR(200) NOT NULL,
    relation VARCHAR(100),
    details JSONB DEFAULT '{}'::jsonb,
    comment_interagir TEXT,
    cree_le TIMESTAMPTZ DEFAULT NOW()
);

CREATE TABLE faits (
    id SERIAL PRIMARY KEY,
    sujet VARCHAR(200) NOT NULL,
    predicat VARCHAR(200) NOT NULL,
    objet TEXT NOT NULL,
    source_souvenir_id INTEGER REFERENCES souvenirs(id),
    confiance FLOAT DEFAULT 1.0,
    cree_le TIMESTAMPTZ DEFAULT NOW(),
    maj_le TIMESTAMPTZ DEFAULT NOW()
);
CREATE INDEX idx_faits_sujet ON faits (sujet);
CREATE INDEX idx_faits_predicat ON faits (predicat);
"""

AXI = """
-- people: one name per person, blocked flag, never-leaves-the-server flag
CREATE UNIQUE INDEX uq_relations_personne ON relations (lower(personne));
ALTER TABLE relations
    ADD COLUMN bloque BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN jamais_hors_serveur BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE identites (
    id SERIAL PRIMARY KEY,
    relation_id INTEGER NOT NULL REFERENCES relations(id) ON DELETE CASCADE,
    canal VARCHAR(30) NOT NULL,
    adresse VARCHAR(320) NOT NULL,
    cree_le TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    CONSTRAINT uq_identites_canal_adresse UNIQUE (canal, adresse)
);
CREATE INDEX idx_identites_relation ON identites (relation_id);

-- souvenirs: who it concerns, visibility, accent-insensitive search vector
ALTER TABLE souvenirs
    ADD COLUMN relation_id INTEGER REFERENCES relations(id) ON DELETE SET NULL,
    ADD COLUMN public BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN recherche TSVECTOR
        GENERATED ALWAYS AS (
            to_tsvector('french'::regconfig, contenu)
            || to_tsvector('french'::regconfig, axi_pli(contenu))
        ) STORED;
CREATE INDEX idx_souvenirs_recherche ON souvenirs USING gin (recherche);
CREATE INDEX idx_souvenirs_relation ON souvenirs (relation_id, timestamp DESC);

-- faits: validity and supersession (never silently overwritten)
ALTER TABLE faits
    ADD COLUMN valide_depuis TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    ADD COLUMN valide_jusqu_a TIMESTAMPTZ,
    ADD COLUMN remplace_par INTEGER REFERENCES faits(id) ON DELETE SET NULL,
    ADD COLUMN relation_id INTEGER REFERENCES relations(id) ON DELETE SET NULL,
    ADD COLUMN public BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX idx_faits_sujet_pli ON faits (axi_pli(sujet)) WHERE valide_jusqu_a IS NULL;
CREATE INDEX idx_faits_relation ON faits (relation_id) WHERE valide_jusqu_a IS NULL;
CREATE INDEX idx_faits_source ON faits (source_souvenir_id);

CREATE TABLE consignes (
    id SERIAL PRIMARY KEY,
    texte TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT true,
    source VARCHAR(100),
    cree_le TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    maj_le TIMESTAMPTZ NOT NULL DEFAULT NOW()
);

-- the durable inbox/outbox of the conversation pipeline
CREATE TABLE messages (
    id BIGSERIAL PRIMARY KEY,
    sens VARCHAR(10) NOT NULL CHECK (sens IN ('entrant', 'sortant')),
    canal VARCHAR(30) NOT NULL,
    adresse VARCHAR(320) NOT NULL,
    verifie BOOLEAN NOT NULL DEFAULT false,
    relation_id INTEGER REFERENCES relations(id) ON DELETE SET NULL,
    conversation VARCHAR(400) NOT NULL,
    identifiant_externe VARCHAR(200),
    reference_fil VARCHAR(400),
    texte TEXT NOT NULL,
    pieces_jointes JSONB NOT NULL DEFAULT '[]'::jsonb,
    metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
    etat VARCHAR(20) NOT NULL,
    tentatives INTEGER NOT NULL DEFAULT 0,
    prochain_essai TIMESTAMPTZ,
    erreur TEXT,
    en_reponse_a BIGINT REFERENCES messages(id) ON DELETE SET NULL,
    recu_le TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    cree_le TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    maj_le TIMESTAMPTZ NOT NULL DEFAULT NOW()
);
CREATE UNIQUE INDEX uq_messages_entrant_externe
    ON messages (canal, identifiant_externe) WHERE sens = 'entrant';
CREATE INDEX idx_messages_a_traiter ON messages (etat, prochain_essai, id)
    WHERE etat IN ('en_attente', 'a_envoyer');
CREATE INDEX idx_messages_conversation ON messages (conversation, id);

CREATE TABLE curseurs_canal (
    canal VARCHAR(30) NOT NULL,
    cle VARCHAR(200) NOT NULL,
    valeur TEXT NOT NULL,
    maj_le TIMESTAMPTZ NOT NULL DEFAULT NOW(),
    PRIMARY KEY (canal, cle)
);
"""


def _statements(script: str) -> list[str]:
    """asyncpg runs one statement per call: split a script on its semicolons."""
    lines = [line for line in script.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def upgrade() -> None:
    op.execute(fold_sql_function())
    for statement in _statements(SEED) + _statements(AXI):
        op.execute(statement)


def downgrade() -> None:
    op.execute(
        "DROP TABLE IF EXISTS curseurs_canal, messages, consignes, identites, faits, "
        "souvenirs, relations CASCADE"
    )
    op.execute("DROP FUNCTION IF EXISTS axi_pli(text)")
