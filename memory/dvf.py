"""DVF sales (ventes_dvf): the import's writes and the lookups of the DVF veille and of the
DPE enrichment (issue 12).

Why here: the import writes tens of thousands of sales per file. `load_dvf_csv` (the
default import) COPYs a file's raw lines into a temporary table and builds the sales in
SQL: one sorted GROUP BY id_mutation with plain aggregates (min/max/count/sum) is exact for
the usual sale (at most two distinct parcels, dispositions, lots, types… — a set of two is
its min and max), the address row chosen by the same order as jobs/dvf_parse.py, the key
sha256 of the same text; the few other sales are built by an exact query with DISTINCT
aggregates; then INSERT … ON CONFLICT (cle) DO NOTHING (idempotent, it says how many were
new), in primary-key order. `insert_dvf_sales` stores sales built in Python (the older
path). A sale's fields are defined once, here, by the table that stores them: `Sale` is
what the import builds (jobs/dvf_parse.py) and writes, `DvfSale` what the lookups read
back. The veille reads the sales imported since its watermark; the DPE veille asks for the
last sale at or near an address.
"""

from __future__ import annotations

import math
import operator
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text


@dataclass(slots=True)
class Sale:
    """One sale, in ventes_dvf's column order (but importe_le)."""

    cle: str
    date_mutation: date
    nature: str | None
    valeur: Decimal | None
    code_postal: str | None
    code_commune: str | None
    nom_commune: str | None
    adresse: str | None
    parcelles: list[str]
    types_locaux: list[str]
    surface_bati: int | None
    surface_terrain: int | None
    pieces: int | None
    longitude: float | None
    latitude: float | None
    source: str | None

    def record(self) -> tuple:
        """Its values in COLUMNS order (a row for COPY)."""
        return _record(self)  # type: ignore[no-any-return]


@dataclass(slots=True)
class DvfSale(Sale):
    """A stored sale."""

    importe_le: datetime
    distance_m: float | None = None
    """For `last_sale_near`: how far the sale's point is from the one asked (None when it
    was found by its address)."""


COLUMNS = tuple(f.name for f in fields(Sale))
"""ventes_dvf's columns that a `Sale` fills (all but importe_le), in its order."""
_record = operator.attrgetter(*COLUMNS)
_SELECT = ", ".join((*COLUMNS, "importe_le"))
_TEMP = ("CREATE TEMP TABLE IF NOT EXISTS dvf_lot "
         "(LIKE ventes_dvf INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
_COLS = ", ".join(COLUMNS)
_FROM_TEMP = (f"INSERT INTO ventes_dvf ({_COLS}) SELECT {_COLS} FROM dvf_lot "
              "ON CONFLICT (cle) DO NOTHING")
_SEP = "\x1f"
_FROM_ARRAYS = (
    f"INSERT INTO ventes_dvf ({_COLS}) SELECT c, d, n, v, cp, cc, nc, a, "
    f"string_to_array(p, E'\\x1f'), string_to_array(t, E'\\x1f'), sb, st, pi, lo, la, so "
    "FROM unnest($1::text[], $2::date[], $3::text[], $4::numeric[], $5::text[], $6::text[], "
    "$7::text[], $8::text[], $9::text[], $10::text[], $11::int[], $12::int[], $13::int[], "
    "$14::float8[], $15::float8[], $16::text[]) "
    "AS x(c, d, n, v, cp, cc, nc, a, p, t, sb, st, pi, lo, la, so) "
    "ON CONFLICT (cle) DO NOTHING"
)
EARTH_M_PER_DEG = 111_320.0


def _sale(row: Any, distance: float | None = None) -> DvfSale:
    values = dict(row._mapping)
    values["parcelles"] = list(values["parcelles"] or [])
    values["types_locaux"] = list(values["types_locaux"] or [])
    values["cle"] = values["cle"].strip()
    return DvfSale(**values, distance_m=distance)


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1]) if status.startswith("INSERT") else 0


def normalise_address(adresse: str) -> str:
    return " ".join(adresse.upper().replace(",", " ").split())


class DvfMixin:
    db: Any

    async def insert_dvf_sales(self, records: Sequence[tuple], *, method: str = "copy") -> int:
        """Store sales (tuples in COLUMNS order) in one transaction; return how many were
        new (a sale already known, by its key, is left as it is). `method`: "copy" (COPY
        into a temporary table, then INSERT … SELECT) or "unnest" (one INSERT of arrays);
        bench/veilles.py measures both."""
        if not records:
            return 0
        async with self.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            # asyncpg's own transaction: SQLAlchemy's would begin only on its own first
            # statement, and the temporary table empties at each commit
            async with driver.transaction():
                if method == "copy":
                    await driver.execute(_TEMP)
                    await driver.copy_records_to_table("dvf_lot", records=records,
                                                       columns=COLUMNS)
                    status = await driver.execute(_FROM_TEMP)
                elif method == "unnest":
                    cols = [list(c) for c in zip(*records, strict=True)]
                    for i in (8, 9):
                        cols[i] = [_SEP.join(v) for v in cols[i]]
                    status = await driver.execute(_FROM_ARRAYS, *cols)
                else:
                    raise ValueError(f"unknown insert method {method!r}")
        return _inserted(status)

    async def load_dvf_csv(self, width: int, columns: dict[str, int],
                           data: AsyncIterable[bytes], *, departement: str | None,
                           source: str, cut: Callable[[], str | None]) -> DvfLoad:
        """COPY a geo-DVF file's data lines (CSV, `width` fields, no header; `columns`:
        name → index) into a temporary table, then build and store its sales in one
        transaction. `cut()`, asked once the data has all been sent: the id_mutation whose
        rows are dropped (a file cut short), or None. Raises CopyRejected when PostgreSQL
        refuses a line (nothing is stored then)."""
        return await _load_dvf_csv(self.db, width, columns, data, departement=departement,
                                   source=source, cut=cut)

    async def dvf_summary(self) -> dict[str, Any]:
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                "SELECT count(*) AS ventes, min(date_mutation) AS premiere, "
                "max(date_mutation) AS derniere, max(importe_le) AS importe_le "
                "FROM ventes_dvf"))).one()
        return dict(row._mapping)

    async def sales_imported_since(self, since: datetime | None, postcodes: Sequence[str], *,
                                   limit: int | None = None) -> list[DvfSale]:
        """The sales in `postcodes` imported after `since` (all of them when None), oldest
        import first, then by date of sale."""
        sql = (f"SELECT {_SELECT} FROM ventes_dvf WHERE code_postal = ANY(:cps) "
               + ("AND importe_le > :since " if since is not None else "")
               + "ORDER BY importe_le, date_mutation, cle"
               + (" LIMIT :limit" if limit is not None else ""))
        params: dict[str, Any] = {"cps": list(postcodes), "since": since, "limit": limit}
        async with self.db.sessions() as session:
            rows = (await session.execute(text(sql), params)).all()
        return [_sale(r) for r in rows]

    async def last_sale_near(self, code_commune: str, adresse: str | None = None,
                             longitude: float | None = None, latitude: float | None = None,
                             *, radius_m: float = 50.0) -> DvfSale | None:
        """The most recent sale at this address of this commune (same words, any case);
        else, with a point, the most recent one within `radius_m` of it (its distance
        set). None when DVF knows no such sale."""
        async with self.db.sessions() as session:
            if adresse:
                row = (await session.execute(text(
                    f"SELECT {_SELECT} FROM ventes_dvf WHERE code_commune = :cc "
                    "AND upper(adresse) = :a ORDER BY date_mutation DESC, cle LIMIT 1"),
                    {"cc": code_commune, "a": normalise_address(adresse)})).first()
                if row is not None:
                    return _sale(row)
            if longitude is None or latitude is None:
                return None
            dlat = radius_m / EARTH_M_PER_DEG
            dlon = dlat / max(math.cos(math.radians(latitude)), 0.01)
            rows = (await session.execute(text(
                f"SELECT {_SELECT} FROM ventes_dvf WHERE code_commune = :cc "
                "AND latitude BETWEEN :lat0 AND :lat1 AND longitude BETWEEN :lon0 AND :lon1 "
                "ORDER BY date_mutation DESC, cle"),
                {"cc": code_commune, "lat0": latitude - dlat, "lat1": latitude + dlat,
                 "lon0": longitude - dlon, "lon1": longitude + dlon})).all()
        for row in rows:
            dx = (row.longitude - longitude) * EARTH_M_PER_DEG * math.cos(math.radians(latitude))
            dy = (row.latitude - latitude) * EARTH_M_PER_DEG
            distance = math.hypot(dx, dy)
            if distance <= radius_m:
                return _sale(row, round(distance, 1))
        return None


# ---- the SQL import: the file's rows COPYed as they are, the sales built in PostgreSQL ----

TYPED = {"date_mutation": "date", "valeur_fonciere": "numeric",
         "surface_reelle_bati": "float8", "nombre_pieces_principales": "float8",
         "surface_terrain": "float8", "longitude": "float8", "latitude": "float8"}
"""Staging columns PostgreSQL reads as values: a bad date or number makes the COPY fail
(`CopyRejected`), and the import then checks every row in Python before COPYing it."""
_WS = "E' \\t\\n\\r\\f\\v'"


class CopyRejected(ValueError):
    """PostgreSQL refused a row of the COPY (a bad date or number, a malformed line)."""


@dataclass
class DvfLoad:
    sales: int = 0
    new: int = 0
    outside: int = 0
    no_id: int = 0
    bad_date: int = 0
    cut: int = 0


def _staging_sql(width: int, ix: dict[str, int]) -> tuple[str, list[str]]:
    typed = {ix[name]: kind for name, kind in TYPED.items()}
    text_type = 'text COLLATE "C"'
    cols = ", ".join(f"c{i} {typed.get(i, text_type)}" for i in range(width))
    return (f"CREATE TEMP TABLE dvf_rows ({cols}) ON COMMIT DROP",
            [f"c{i}" for i in range(width) if i not in typed])


def _sql(ix: dict[str, int]) -> dict[str, str]:
    """The statements of one file's import, its columns by their index in the header."""
    c = {name: f"c{i}" for name, i in ix.items()}
    i_d, dat, disp, nat, val = (c["id_mutation"], c["date_mutation"], c["numero_disposition"],
                                c["nature_mutation"], c["valeur_fonciere"])
    num, suf, voie = c["adresse_numero"], c["adresse_suffixe"], c["adresse_nom_voie"]
    cp, cc, nc, dep, par = (c["code_postal"], c["code_commune"], c["nom_commune"],
                            c["code_departement"], c["id_parcelle"])
    l1, l2, l3, l4, l5 = (c[f"lot{i}_numero"] for i in range(1, 6))
    code, tl, bati, pieces = (c["code_type_local"], c["type_local"], c["surface_reelle_bati"],
                              c["nombre_pieces_principales"])
    cult, cults, ter, lon, lat = (c["code_nature_culture"], c["code_nature_culture_speciale"],
                                  c["surface_terrain"], c["longitude"], c["latitude"])
    outside = f"($1::text IS NOT NULL AND {dep} <> $1::text)"
    valid = (f"NOT {outside} AND {i_d} <> '' AND {dat} IS NOT NULL "
             f"AND {i_d} IS DISTINCT FROM $2::text")
    dwell = f"{code} IN ('1', '2')"
    zf = f"CASE WHEN length({num}) >= 8 THEN {num} ELSE lpad({num}, 8, '0') END"
    x = "E'\\x01'"
    # the row giving the address (a dwelling's, else a numbered one…) first; its place
    where = (f"({code} NOT IN ('1', '2'))::int::text || ({num} = '')::int::text || {par} "
             f"|| {x} || {zf} || {x} || {suf} || {x} || {voie} || {x} || ctid::text")
    lot = f"CASE WHEN {l1} <> '' THEN {par} || ':' || {l1} END"
    typ = (f"CASE WHEN {code} <> '' THEN {code} || {x} || coalesce(nullif({tl}, ''), {code}) "
           "END")
    dk = (f"CASE WHEN {dwell} THEN concat_ws({x}, {par}, {l1}, {l2}, {l3}, {l4}, {l5}, {code}, "
          f"coalesce({bati}::text, ''), coalesce({pieces}::text, '')) END")
    lk = f"CASE WHEN {ter} IS NOT NULL THEN concat_ws({x}, {par}, {cult}, {cults}, {ter}) END"

    def sale(d: str, v: str, n: str, parcels: str, disps: str, lots: str) -> str:
        price = f"CASE WHEN {v} IS NULL THEN '' ELSE round({v}, 2)::text END"
        return (f"encode(sha256(convert_to({d}::text || '|' || {price} || '|' || "
                f"array_to_string({parcels}, ',') || '|' || {disps} || '|' || "
                f"btrim({n}, {_WS}) || '|' || {lots}, 'UTF8')), 'hex')")

    fast = f"""
WITH g AS (
  SELECT {i_d} AS id, count(*) AS n, min({where}) AS w,
    count(nullif({par}, '')) AS np, min(nullif({par}, '')) AS p1, max(nullif({par}, '')) AS p2,
    min({disp}) AS d1, max({disp}) AS d2,
    bool_or({l2} <> '' OR {l3} <> '' OR {l4} <> '' OR {l5} <> '') AS ml,
    count({lot}) AS nl, min({lot}) AS l1, max({lot}) AS l2,
    count({typ}) AS nt, min({typ}) AS t1, max({typ}) AS t2,
    count({dk}) AS ndk, min({dk}) AS dk1, max({dk}) AS dk2,
    sum(round({bati})) FILTER (WHERE {dwell}) AS sb, max(round({bati})) FILTER (WHERE {dwell}) AS mb,
    sum(round({pieces})) FILTER (WHERE {dwell}) AS sp,
    max(round({pieces})) FILTER (WHERE {dwell}) AS mp,
    count({lk}) AS nlk, min({lk}) AS lk1, max({lk}) AS lk2,
    sum(round({ter})) AS st, max(round({ter})) AS mt,
    count(*) FILTER (WHERE {lon} IS NOT NULL AND {lat} IS NOT NULL) AS nloc
  FROM dvf_rows WHERE {valid} GROUP BY {i_d}
), f AS MATERIALIZED (
  SELECT id, (np <= 2 OR p1 = p2) AND (n <= 2 OR d1 = d2) AND ml IS NOT TRUE
    AND (nl <= 2 OR l1 = l2) AND (nt <= 2 OR t1 = t2) AND (ndk <= 2 OR dk1 = dk2)
    AND (nlk <= 2 OR lk1 = lk2)
    AND (nloc = 0 OR (r.{lon} IS NOT NULL AND r.{lat} IS NOT NULL)) AS simple,
    r.{dat} AS d, r.{val} AS v, r.{nat} AS nat, r.{cp} AS cp, r.{cc} AS cc, r.{nc} AS nc,
    r.{num} || r.{suf} AS numero, btrim(r.{voie}, {_WS}) AS voie, r.{lon} AS lon,
    r.{lat} AS lat,
    CASE WHEN np = 0 THEN '{{}}'::text[] WHEN p1 = p2 THEN ARRAY[p1] ELSE ARRAY[p1, p2] END
      AS parcels,
    CASE WHEN d1 = d2 THEN d1 ELSE d1 || ',' || d2 END AS disps,
    CASE WHEN nl = 0 THEN '' WHEN l1 = l2 THEN l1 ELSE l1 || ',' || l2 END AS lots,
    CASE WHEN nt = 0 THEN '{{}}'::text[] WHEN t1 = t2 THEN ARRAY[split_part(t1, {x}, 2)]
      ELSE ARRAY[split_part(t1, {x}, 2), split_part(t2, {x}, 2)] END AS types,
    (CASE WHEN dk1 = dk2 THEN mb ELSE sb END)::int AS bati,
    (CASE WHEN dk1 = dk2 THEN mp ELSE sp END)::int AS pieces,
    (CASE WHEN lk1 = lk2 THEN mt ELSE st END)::int AS terrain
  FROM g JOIN dvf_rows r ON r.ctid = split_part(g.w, {x}, 5)::tid
), ins AS (
  INSERT INTO ventes_dvf ({_COLS})
  SELECT {sale('d', 'v', 'nat', 'parcels', 'disps', 'lots')}, d, nullif(nat, ''),
    round(v, 2), nullif(cp, ''), nullif(cc, ''), nullif(nc, ''),
    nullif(CASE WHEN numero <> '' AND voie <> '' THEN numero || ' ' || voie
                ELSE numero || voie END, ''),
    parcels, types, bati, terrain, pieces, lon, lat, $3::text
  FROM f WHERE simple ORDER BY 1  -- the primary key's pages in order: a quarter faster
  ON CONFLICT (cle) DO NOTHING RETURNING 1
)
SELECT (SELECT count(*) FROM f WHERE simple), (SELECT count(*) FROM ins),
       (SELECT array_agg(id) FROM f WHERE NOT simple)"""
    cols = (f"ctid AS r, {i_d} AS id, {dat} AS d, {disp} AS disp, {nat} AS nat, {val} AS val, "
            f"{num} AS num, {suf} AS suf, {voie} AS voie, {cp} AS cp, {cc} AS cc, {nc} AS nc, "
            f"{par} AS parcel, {l1} AS l1, {l2} AS l2, {l3} AS l3, {l4} AS l4, {l5} AS l5, "
            f"{code} AS code, {tl} AS tl, {bati} AS bati, {pieces} AS pieces, {cult} AS cult, "
            f"{cults} AS cults, {ter} AS terrain, {lon} AS lon, {lat} AS lat")
    exact = f"""
WITH v AS MATERIALIZED (SELECT {cols} FROM dvf_rows WHERE {valid} AND {i_d} = ANY($4::text[])),
o AS (
  SELECT DISTINCT ON (id) id, d, val, nat, cp, cc, nc, num || suf AS numero,
    btrim(voie, {_WS}) AS voie, lon, lat FROM v
  ORDER BY id, code NOT IN ('1', '2'), num = '', parcel,
    CASE WHEN length(num) >= 8 THEN num ELSE lpad(num, 8, '0') END, suf, voie, r
), loc AS (
  SELECT DISTINCT ON (id) id, lon, lat FROM v WHERE lon IS NOT NULL AND lat IS NOT NULL
  ORDER BY id, r
), a AS (
  SELECT id, coalesce(array_agg(DISTINCT parcel) FILTER (WHERE parcel <> ''), '{{}}') AS parcels,
    string_agg(DISTINCT disp, ',') AS disps FROM v GROUP BY id
), dw AS (
  SELECT id, sum(round(bati))::int AS bati, sum(round(pieces))::int AS pieces FROM (
    SELECT DISTINCT id, parcel, l1, l2, l3, l4, l5, code, bati, pieces FROM v
    WHERE code IN ('1', '2')) x GROUP BY id
), la AS (
  SELECT id, sum(round(terrain))::int AS terrain FROM (
    SELECT DISTINCT id, parcel, cult, cults, terrain FROM v WHERE terrain IS NOT NULL) x
  GROUP BY id
), lo AS (
  SELECT id, string_agg(DISTINCT parcel || ':' || l, ',') AS lots
  FROM v, unnest(ARRAY[l1, l2, l3, l4, l5]) AS l WHERE l <> '' GROUP BY id
), ty AS (
  SELECT id, array_agg(name ORDER BY code, name) AS types FROM (
    SELECT DISTINCT id, code, CASE WHEN tl = '' THEN code ELSE tl END AS name FROM v
    WHERE code <> '') x GROUP BY id
), s AS MATERIALIZED (
  SELECT o.*, a.parcels, a.disps, coalesce(lo.lots, '') AS lots,
    coalesce(ty.types, '{{}}') AS types, dw.bati, dw.pieces, la.terrain,
    loc.lon AS lon2, loc.lat AS lat2
  FROM o JOIN a USING (id) LEFT JOIN dw USING (id) LEFT JOIN la USING (id)
    LEFT JOIN lo USING (id) LEFT JOIN ty USING (id) LEFT JOIN loc USING (id)
), ins AS (
  INSERT INTO ventes_dvf ({_COLS})
  SELECT {sale('d', 'val', 'nat', 'parcels', 'disps', 'lots')}, d, nullif(nat, ''),
    round(val, 2), nullif(cp, ''), nullif(cc, ''), nullif(nc, ''),
    nullif(CASE WHEN numero <> '' AND voie <> '' THEN numero || ' ' || voie
                ELSE numero || voie END, ''),
    parcels, types, bati, terrain, pieces,
    CASE WHEN (lon IS NULL OR lat IS NULL) AND lon2 IS NOT NULL THEN lon2 ELSE lon END,
    CASE WHEN (lon IS NULL OR lat IS NULL) AND lon2 IS NOT NULL THEN lat2 ELSE lat END,
    $3::text
  FROM s ORDER BY 1 ON CONFLICT (cle) DO NOTHING RETURNING 1
)
SELECT (SELECT count(*) FROM s), (SELECT count(*) FROM ins)"""
    stats = f"""
SELECT count(*) FILTER (WHERE {outside}),
  count(*) FILTER (WHERE NOT {outside} AND {i_d} = ''),
  count(*) FILTER (WHERE NOT {outside} AND {i_d} <> '' AND {dat} IS NULL),
  count(*) FILTER (WHERE NOT {outside} AND {i_d} <> '' AND {dat} IS NOT NULL
                   AND {i_d} = $2::text)
FROM dvf_rows"""
    return {"fast": fast, "exact": exact, "stats": stats}


async def _load_dvf_csv(db: Any, width: int, columns: dict[str, int],
                       data: AsyncIterable[bytes], *, departement: str | None,
                       source: str, cut: Callable[[], str | None]) -> DvfLoad:
    """COPY a geo-DVF file's data lines (CSV, `width` fields, no header; `columns`:
    name → index) into a temporary table, then build and store its sales in one
    transaction. `cut()`, asked once the data has all been sent: the id_mutation whose
    rows are dropped (a file cut short), or None. Raises CopyRejected when PostgreSQL
    refuses a line (nothing is stored then)."""
    import asyncpg

    create, text_cols = _staging_sql(width, columns)
    sql = _sql(columns)
    load = DvfLoad()
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        async with driver.transaction():
            # sorts, hashes and the sales' tuplestore in memory (one import at a time)
            await driver.execute("SET LOCAL work_mem = '256MB'")
            await driver.execute(create)
            try:
                await driver.copy_to_table("dvf_rows", source=data, format="csv",
                                           force_not_null=text_cols)
            except asyncpg.exceptions.DataError as exc:
                raise CopyRejected(str(exc)) from None
            last = cut()
            stats = await driver.fetchrow(sql["stats"], departement, last)
            load.outside, load.no_id, load.bad_date, load.cut = (int(v) for v in stats)
            sales, new, complex_ids = await driver.fetchrow(
                sql["fast"], departement, last, source)
            load.sales, load.new = int(sales), int(new)
            if complex_ids:
                # no statistics on the temporary table: never nested loops over its rows
                await driver.execute("SET LOCAL enable_nestloop = off")
                sales, new = await driver.fetchrow(
                    sql["exact"], departement, last, source, complex_ids)
                load.sales += int(sales)
                load.new += int(new)
    return load
