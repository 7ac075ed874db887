"""ventes_dvf: the indexes its queries use, and no other (issue 12, import speed).

Why: the DVF import inserts hundreds of thousands of sales, and each index costs about as
much as the row itself. The queries on ventes_dvf are:

- the DVF veille (memory/dvf.py `sales_imported_since`): `code_postal = ANY(…) AND
  importe_le > …` → idx_ventes_dvf_code_postal (code_postal, importe_le);
- the DPE enrichment (memory/dvf.py `last_sale_near`: `code_commune = … AND
  upper(adresse) = …`, or a box around a point; jobs/dpe_enrich.py `load_sales`:
  `code_commune = ANY(…) OR code_postal = ANY(…)`) → idx_ventes_dvf_commune
  (code_commune) and idx_ventes_dvf_code_postal; the (code_commune, adresse) index could
  not serve `upper(adresse)` anyway, so the address is a filter over one commune's sales;
- the import's anti-join on the key → the primary key.

The (code_postal, date_mutation) and (importe_le) indexes served none of them. The key and
the codes are compared bytewise (COLLATE "C": hex digits and INSEE codes, the same order
and equality as before, without the locale's comparison).

Revision ID: 0021
Revises: 0020
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_ventes_dvf_code_postal")
    op.execute("DROP INDEX IF EXISTS idx_ventes_dvf_commune")
    op.execute("DROP INDEX IF EXISTS idx_ventes_dvf_importe_le")
    op.execute('ALTER TABLE ventes_dvf ALTER COLUMN cle TYPE char(64) COLLATE "C", '
               'ALTER COLUMN code_postal TYPE text COLLATE "C", '
               'ALTER COLUMN code_commune TYPE text COLLATE "C"')
    op.execute("CREATE INDEX idx_ventes_dvf_code_postal ON ventes_dvf (code_postal, importe_le)")
    op.execute("CREATE INDEX idx_ventes_dvf_commune ON ventes_dvf (code_commune)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS idx_ventes_dvf_code_postal")
    op.execute("DROP INDEX IF EXISTS idx_ventes_dvf_commune")
    op.execute('ALTER TABLE ventes_dvf ALTER COLUMN cle TYPE char(64) COLLATE "default", '
               'ALTER COLUMN code_postal TYPE text COLLATE "default", '
               'ALTER COLUMN code_commune TYPE text COLLATE "default"')
    op.execute("CREATE INDEX idx_ventes_dvf_code_postal ON ventes_dvf (code_postal, date_mutation)")
    op.execute("CREATE INDEX idx_ventes_dvf_commune ON ventes_dvf (code_commune, adresse)")
    op.execute("CREATE INDEX idx_ventes_dvf_importe_le ON ventes_dvf (importe_le)")
