"""The seed schema is the contract: its tables keep their columns, defaults and indexes.
Read back from information_schema and pg_indexes on the real server under test."""

from __future__ import annotations

from sqlalchemy import text

from memory import migrate

SEED_COLUMNS = {
    "souvenirs": {
        "id": ("integer", "nextval('souvenirs_id_seq'::regclass)", "NO"),
        "timestamp": ("timestamp with time zone", "now()", "YES"),
        "type": ("character varying", None, "NO"),
        "source": ("character varying", None, "YES"),
        "contenu": ("text", None, "NO"),
        "resume": ("text", None, "YES"),
        "importance": ("integer", "5", "YES"),
        "metadata": ("jsonb", "'{}'::jsonb", "YES"),
    },
    "faits": {
        "id": ("integer", "nextval('faits_id_seq'::regclass)", "NO"),
        "sujet": ("character varying", None, "NO"),
        "predicat": ("character varying", None, "NO"),
        "objet": ("text", None, "NO"),
        "source_souvenir_id": ("integer", None, "YES"),
        "confiance": ("double precision", "1.0", "YES"),
        "cree_le": ("timestamp with time zone", "now()", "YES"),
        "maj_le": ("timestamp with time zone", "now()", "YES"),
    },
    "relations": {
        "id": ("integer", "nextval('relations_id_seq'::regclass)", "NO"),
        "personne": ("character varying", None, "NO"),
        "relation": ("character varying", None, "YES"),
        "details": ("jsonb", "'{}'::jsonb", "YES"),
        "comment_interagir": ("text", None, "YES"),
        "cree_le": ("timestamp with time zone", "now()", "YES"),
    },
}

SEED_INDEXES = {
    "idx_souvenirs_contenu_fts": "USING gin (to_tsvector('french'::regconfig, contenu))",
    "idx_souvenirs_timestamp": "USING btree (\"timestamp\" DESC)",
    "idx_souvenirs_type": "USING btree (type)",
    "idx_faits_sujet": "USING btree (sujet)",
}

AXI_TABLES = {"identites", "consignes", "messages", "curseurs_canal"}


async def test_seed_columns_match(store) -> None:
    async with store.db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT table_name, column_name, data_type, column_default, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = ANY(:t)"), {"t": list(SEED_COLUMNS)})).all()
    actual: dict[str, dict[str, tuple]] = {}
    for r in rows:
        actual.setdefault(r.table_name, {})[r.column_name] = (
            r.data_type, r.column_default, r.is_nullable)
    for table, columns in SEED_COLUMNS.items():
        for name, spec in columns.items():
            assert actual[table].get(name) == spec, f"{table}.{name}: {actual[table].get(name)}"


async def test_seed_foreign_key_and_indexes(store) -> None:
    async with store.db.engine.connect() as conn:
        idx = dict((await conn.execute(text(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))).all())
        fk = (await conn.execute(text(
            "SELECT ccu.table_name, ccu.column_name FROM information_schema.table_constraints tc "
            "JOIN information_schema.key_column_usage kcu USING (constraint_name) "
            "JOIN information_schema.constraint_column_usage ccu USING (constraint_name) "
            "WHERE tc.table_name = 'faits' AND tc.constraint_type = 'FOREIGN KEY' "
            "AND kcu.column_name = 'source_souvenir_id'"))).one()
    for name, tail in SEED_INDEXES.items():
        assert name in idx, f"missing index {name}"
        assert idx[name].endswith(tail), idx[name]
    assert tuple(fk) == ("souvenirs", "id")


async def test_design_tables_and_unique_identity(store) -> None:
    async with store.db.engine.connect() as conn:
        tables = set((await conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars())
        uniq = (await conn.execute(text(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_identites_canal_adresse'"
        ))).scalar_one()
    assert AXI_TABLES <= tables
    assert "UNIQUE" in uniq and "(canal, adresse)" in uniq


async def test_upgrade_is_idempotent(store) -> None:
    before, after = await migrate.upgrade(store.db.engine)
    assert before.up_to_date and after.up_to_date
    assert after.current == migrate.head_revision()
