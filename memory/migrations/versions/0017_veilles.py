"""Veilles: the agency's scheduled watches, their runs, the items they saw, DVF sales.

Why (issue 12): the earlier Axi's veilles kept nothing between runs, so a failed or late
run lost items and a rerun repeated them. Now:

- veilles: one row per watch (nom, type, config JSON, cron `horaire` in Europe/Paris,
  `destinataires` JSON, active). Seeded: `dpe` (08:00), `concurrence` (07:00, inactive
  until competitors are configured) and `dvf` (Mondays 09:00, after the releases).
- passages_veille: each run (start, end, state, items seen/new, error, what triggered it,
  the schedule it was for): the catch-up after a downtime is computed from these rows.
- elements_veille: every source item once per veille (unique `cle`); `signale_le` is set
  only when the digest that reports it is committed to the outbox.
- etat_sources: per veille and source, whether it is broken and since when, and when Ludo
  was last alerted (once when it breaks, once when it recovers).
- ventes_dvf: geo-DVF sales, one row per sale (a sale spans several CSV rows), keyed by a
  hash of date, price, parcels and disposition (`id_mutation` is not stable across
  releases).
- cache_communes: the geo and annuaire answers for a commune (its town hall), cached.

Watermarks (the DPE's last reception date) live in `curseurs_canal` (canal `veille:<nom>`).

Revision ID: 0017
Revises: 0016
"""

import json

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

DPE_CONFIG = {
    "dataset": "dpe03existant",
    "codes_postaux": ["24510", "24150", "24480", "24260", "24620", "24220",
                      "24330", "24110", "24520", "24140", "24380", "24750"],
    "prix_m2": {"24260": 1800, "24150": 1500, "24480": 1400, "24510": 1600, "24620": 1700,
                "24220": 1500, "24330": 1400, "24110": 1300, "24520": 1200, "24140": 1400,
                "24380": 1300, "24750": 1600},
    "fourchette": 0.15,
    "recouvrement_jours": 60,
    "poids": {"passoire": 50, "classe_e": 20, "recu_30j": 30, "recu_60j": 15,
              "vente_avant_2022": 20, "aucune_vente": 10},
    "seuils": {"P1": 80, "P2": 50},
    "ras": True,
    "taille_page": 500,
}
CONCURRENCE_CONFIG: dict = {"agences": [], "delai_s": 2.0}
DVF_CONFIG = {"codes_postaux": DPE_CONFIG["codes_postaux"]}
RECIPIENTS = {"courriel": ["agence"], "resume": ["créateur"]}
"""`agence` is AXI_AGENCY_EMAIL (with AXI_AGENCY_CC in copy), `créateur` is Ludo; any other
value is a person's name or a raw address."""


def upgrade() -> None:
    op.execute(
        "CREATE TABLE veilles ("
        " id serial PRIMARY KEY,"
        " nom varchar(60) NOT NULL UNIQUE,"
        " type varchar(30) NOT NULL,"
        " config jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " horaire text NOT NULL,"
        " destinataires jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " active boolean NOT NULL DEFAULT true,"
        " cree_le timestamptz NOT NULL DEFAULT now(),"
        " maj_le timestamptz NOT NULL DEFAULT now())"
    )
    op.execute(
        "CREATE TABLE passages_veille ("
        " id bigserial PRIMARY KEY,"
        " veille_id integer NOT NULL REFERENCES veilles(id) ON DELETE CASCADE,"
        " debut timestamptz NOT NULL DEFAULT now(),"
        " fin timestamptz,"
        " etat varchar(12) NOT NULL DEFAULT 'en_cours'"
        "  CHECK (etat IN ('en_cours', 'ok', 'partiel', 'echec', 'ignore', 'essai')),"
        " vus integer NOT NULL DEFAULT 0,"
        " nouveaux integer NOT NULL DEFAULT 0,"
        " erreur text,"
        " declenchement varchar(12) NOT NULL DEFAULT 'planifie'"
        "  CHECK (declenchement IN ('planifie', 'rattrapage', 'manuel')),"
        " prevu_pour timestamptz)"
    )
    op.execute("CREATE INDEX idx_passages_veille ON passages_veille (veille_id, debut DESC)")
    op.execute(
        "CREATE TABLE elements_veille ("
        " id bigserial PRIMARY KEY,"
        " veille_id integer NOT NULL REFERENCES veilles(id) ON DELETE CASCADE,"
        " cle text NOT NULL,"
        " source text,"
        " donnees jsonb NOT NULL DEFAULT '{}'::jsonb,"
        " vu_le timestamptz NOT NULL DEFAULT now(),"
        " passage_id bigint REFERENCES passages_veille(id) ON DELETE SET NULL,"
        " signale_le timestamptz,"
        " UNIQUE (veille_id, cle))"
    )
    op.execute("CREATE INDEX idx_elements_veille_a_signaler ON elements_veille (veille_id, id) "
               "WHERE signale_le IS NULL")
    op.execute(
        "CREATE TABLE etat_sources ("
        " veille_id integer NOT NULL REFERENCES veilles(id) ON DELETE CASCADE,"
        " source text NOT NULL,"
        " en_panne boolean NOT NULL DEFAULT false,"
        " depuis timestamptz,"
        " derniere_erreur text,"
        " alerte_le timestamptz,"
        " PRIMARY KEY (veille_id, source))"
    )
    op.execute(
        "CREATE TABLE ventes_dvf ("
        " cle char(64) PRIMARY KEY,"
        " date_mutation date NOT NULL,"
        " nature text,"
        " valeur numeric(14, 2),"
        " code_postal text,"
        " code_commune text,"
        " nom_commune text,"
        " adresse text,"
        " parcelles text[] NOT NULL DEFAULT '{}',"
        " types_locaux text[] NOT NULL DEFAULT '{}',"
        " surface_bati integer,"
        " surface_terrain integer,"
        " pieces integer,"
        " longitude double precision,"
        " latitude double precision,"
        " source text,"
        " importe_le timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE INDEX idx_ventes_dvf_code_postal ON ventes_dvf (code_postal, date_mutation)")
    op.execute("CREATE INDEX idx_ventes_dvf_commune ON ventes_dvf (code_commune, adresse)")
    op.execute("CREATE INDEX idx_ventes_dvf_importe_le ON ventes_dvf (importe_le)")
    op.execute(
        "CREATE TABLE cache_communes ("
        " code_commune text PRIMARY KEY,"
        " donnees jsonb NOT NULL,"
        " maj_le timestamptz NOT NULL DEFAULT now())"
    )
    seeds = [("dpe", "dpe", DPE_CONFIG, "0 8 * * *", True),
             ("concurrence", "concurrence", CONCURRENCE_CONFIG, "0 7 * * *", False),
             ("dvf", "dvf", DVF_CONFIG, "0 9 * * 1", True)]
    for nom, kind, config, cron, active in seeds:
        op.execute(
            "INSERT INTO veilles (nom, type, config, horaire, destinataires, active) VALUES "
            f"('{nom}', '{kind}', '{_sql(config)}'::jsonb, '{cron}', "
            f"'{_sql(RECIPIENTS)}'::jsonb, {'true' if active else 'false'})")


def _sql(value: object) -> str:
    return json.dumps(value, ensure_ascii=False).replace("'", "''")


def downgrade() -> None:
    for table in ("cache_communes", "ventes_dvf", "etat_sources", "elements_veille",
                  "passages_veille", "veilles"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
