"""The geo-DVF import's SQL: a chunk of a file's rows COPYed into an unlogged table, its
sales built by PostgreSQL into another, then stored (issue 12; memory/dvf_pipeline.py
runs these statements, several chunks at once).

Why in SQL: Python spent ~11 µs a row grouping and hashing (jobs/dvf_parse.py, kept as the
reference); PostgreSQL does the same work several times faster. One sorted GROUP BY
id_mutation with plain aggregates (min/max/count/sum) is exact for the usual sale (at most
two distinct parcels, dispositions, lots, types… — a set of two is its min and max); each
row's grouping values are computed once (a subquery the planner does not inline), the
address row is the one first in jobs/dvf_parse.py's order, the key the sha256 of the same
text. The few other sales are built by an exact query with DISTINCT aggregates. A row
with a number its column cannot hold (COPY takes NaN, Infinity, 1e300) is left out and
counted with jobs/dvf_parse.py's reason, and so is a sale whose total surface would not
fit: never a failed transaction for one row.

Why not INSERT … ON CONFLICT: its speculative insertion costs about as much as the index
insert itself. An import stores its sales under one advisory lock (the files themselves
are read and the sales built meanwhile), so the sales not yet in ventes_dvf (an anti-join
on the key) are inserted plainly, once per key (DISTINCT ON, the first in the file kept),
in primary-key order; a re-import inserts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from memory.dvf import COLUMNS

TYPED = {"date_mutation": "date", "valeur_fonciere": "numeric",
         "surface_reelle_bati": "float8", "nombre_pieces_principales": "float8",
         "surface_terrain": "float8", "longitude": "float8", "latitude": "float8"}
"""Staging columns PostgreSQL reads as values: a bad date or number makes the COPY fail
(`CopyRejected`), and the import then checks every row in Python before COPYing it."""
_COLS = ", ".join(COLUMNS)
_WS = "E' \\t\\n\\r\\f\\v'"
_X = "E'\\x01'"


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
    skipped: dict[str, int] = field(default_factory=dict)
    """Other rows not kept, by reason (jobs/dvf_parse.py's words): a number its column
    cannot hold, a sale whose total surface does not fit."""

    def skip(self, reasons: list[str] | None, counts: list[int] | None) -> None:
        for reason, n in zip(reasons or [], counts or [], strict=True):
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)

    def add(self, other: DvfLoad) -> None:
        """Another chunk's counts added to these."""
        for name in ("sales", "new", "outside", "no_id", "bad_date", "cut"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skip(list(other.skipped), list(other.skipped.values()))


def staging_sql(table: str, width: int, ix: dict[str, int]) -> tuple[str, list[str]]:
    """The unlogged table of one chunk of a file's rows (`c0`…, typed as TYPED) and its text
    columns (COPY's FORCE_NOT_NULL: an empty field is '' there, as in the Python parser)."""
    typed = {ix[name]: kind for name, kind in TYPED.items()}
    text_type = 'text COLLATE "C"'
    cols = ", ".join(f"c{i} {typed.get(i, text_type)}" for i in range(width))
    return (f"CREATE UNLOGGED TABLE {table} ({cols})",
            [f"c{i}" for i in range(width) if i not in typed])


def _key(d: str, v: str, n: str, parcels: str, disps: str, lots: str) -> str:
    """jobs.dvf_parse.sale_key in SQL (the same text, the same hash)."""
    price = f"CASE WHEN {v} IS NULL THEN '' ELSE round({v}, 2)::text END"
    return (f"encode(sha256(convert_to({d}::text || '|' || {price} || '|' || "
            f"array_to_string({parcels}, ',') || '|' || {disps} || '|' || "
            f"btrim({n}, {_WS}) || '|' || {lots}, 'UTF8')), 'hex')")


SALE_COLUMNS = ("id, simple, cle, t, d, v, nat, cp, cc, nc, numero, voie, lon, lat, parcels, "
                "types, bati, pieces, terrain, n, too_big")
"""A chunk's sales table (built by `build`, completed by `exact`, read by `insert`)."""


def insert_sql(sales: str) -> str:
    """INSERT of the new sales of a chunk's sales table into ventes_dvf ($1: the source's
    name): the keys not in ventes_dvf (an anti-join: the import lock makes it safe, and
    the chunks before are already there in this transaction), once per key (DISTINCT ON,
    the first in the file kept), in primary-key order."""
    return f"""
INSERT INTO ventes_dvf ({_COLS})
SELECT DISTINCT ON (cle) cle, d, nullif(nat, ''), round(v, 2),
  nullif(cp, ''), nullif(cc, ''), nullif(nc, ''),
  nullif(CASE WHEN numero <> '' AND voie <> '' THEN numero || ' ' || voie
              ELSE numero || voie END, ''),
  parcels, types, bati::int, terrain::int, pieces::int, lon, lat, $1::text
FROM {sales} s
WHERE simple AND too_big IS NULL
  AND NOT EXISTS (SELECT 1 FROM ventes_dvf k WHERE k.cle = s.cle::char(64))
ORDER BY cle, t  -- the primary key's pages in order"""


INT_RANGE = "BETWEEN -2147483648 AND 2147483647"


def _numbers(c: dict[str, str]) -> tuple[str, str]:
    """A row's numbers fit their columns once rounded as the import rounds them (plain
    comparisons, cheap on every row; NaN and ±Infinity compare above every number, so
    they fail each test), and else the reason, as jobs/dvf_parse.py check_numbers."""
    tests = [("valeur_fonciere",  # round(v, 2) below 10¹²: numeric(14, 2)
              "{0} > -999999999999.995 AND {0} < 999999999999.995")]
    tests += [(name, "{0} >= -2147483648.5 AND {0} < 2147483647.5") for name in (
        "surface_reelle_bati", "nombre_pieces_principales", "surface_terrain")]
    tests += [("longitude", "{0} BETWEEN -180 AND 180"), ("latitude", "{0} BETWEEN -90 AND 90")]
    ok = " AND ".join(f"({c[name]} IS NULL OR ({test.format(c[name])}))"
                      for name, test in tests)
    why = " ".join(
        f"WHEN NOT ({test.format(c[name])}) THEN CASE WHEN {c[name]} IN "
        f"('NaN', 'Infinity', '-Infinity') THEN '{name} is not a number' "
        f"ELSE '{name} out of range' END" for name, test in tests)
    return ok, f"CASE {why} END"


def _totals(bati: str, terrain: str, pieces: str) -> str:
    """The reason a sale's total surface or rooms does not fit ventes_dvf (or NULL)."""
    return (f"CASE WHEN NOT coalesce({bati} {INT_RANGE}, true) THEN "
            "'unusable sale (surface_reelle_bati total out of range)' "
            f"WHEN NOT coalesce({terrain} {INT_RANGE}, true) THEN "
            "'unusable sale (surface_terrain total out of range)' "
            f"WHEN NOT coalesce({pieces} {INT_RANGE}, true) THEN "
            "'unusable sale (nombre_pieces_principales total out of range)' END")


def build_sql(ix: dict[str, int], stage: str, sales: str) -> dict[str, str]:
    """The statements of one chunk of a file (its rows in the table `stage`, its sales
    built into the table `sales`), its columns by their index in the header: `stats`
    (rows not kept, by reason), `numbers` (rows with a number their column cannot hold, by
    reason), `build` (the usual sales; the others marked not `simple`), `summary` (what
    `build` made: the sales, the others' ids, the sales too big, the rows grouped), `big`
    (the rows of sales too big, by reason), `exact` (the others, added to `sales`). Parameters: $1 département
    (NULL: all), $2 the id_mutation cut by the end of the file (or NULL), $3 (exact) the
    ids."""
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
    x = _X
    outside = f"($1::text IS NOT NULL AND {dep} <> $1::text)"
    numbers_ok, numbers_why = _numbers(c)
    valid = (f"NOT {outside} AND {i_d} <> '' AND {dat} IS NOT NULL "
             f"AND {i_d} IS DISTINCT FROM $2::text AND {numbers_ok}")
    dwell = f"{code} IN ('1', '2')"
    zf = f"CASE WHEN length({num}) >= 8 THEN {num} ELSE lpad({num}, 8, '0') END"
    # per row, computed once: the row giving the address (a dwelling's, else a numbered
    # one…, then its place) sorts first; the parts of the sets a sale is made of
    rows = f"""
  SELECT {i_d} AS id,
    ({code} NOT IN ('1', '2'))::int::text || ({num} = '')::int::text || {par} || {x} || {zf}
      || {x} || {suf} || {x} || {voie} || {x} || ctid::text AS w,
    nullif({par}, '') AS par, {disp} AS disp,
    {l2} <> '' OR {l3} <> '' OR {l4} <> '' OR {l5} <> '' AS ml,
    CASE WHEN {l1} <> '' THEN {par} || ':' || {l1} END AS lot,
    CASE WHEN {code} <> '' THEN {code} || {x} || coalesce(nullif({tl}, ''), {code}) END AS typ,
    CASE WHEN {dwell} THEN concat_ws({x}, {par}, {l1}, {l2}, {l3}, {l4}, {l5}, {code},
      coalesce({bati}::text, ''), coalesce({pieces}::text, '')) END AS dk,
    CASE WHEN {dwell} THEN round({bati}) END AS rb,
    CASE WHEN {dwell} THEN round({pieces}) END AS rp,
    CASE WHEN {ter} IS NOT NULL THEN concat_ws({x}, {par}, {cult}, {cults}, {ter}) END AS lk,
    round({ter}) AS rt, {lon} IS NOT NULL AND {lat} IS NOT NULL AS located
  FROM {stage} WHERE {valid}
  OFFSET 0"""
    build = f"""
CREATE UNLOGGED TABLE {sales} AS
WITH g AS (
  SELECT id, count(*) AS n, min(w) AS w,
    count(par) AS np, min(par) AS p1, max(par) AS p2, min(disp) AS d1, max(disp) AS d2,
    bool_or(ml) AS ml, count(lot) AS nl, min(lot) AS l1, max(lot) AS l2,
    count(typ) AS nt, min(typ) AS t1, max(typ) AS t2,
    count(dk) AS ndk, min(dk) AS dk1, max(dk) AS dk2,
    sum(rb) AS sb, max(rb) AS mb, sum(rp) AS sp, max(rp) AS mp,
    count(lk) AS nlk, min(lk) AS lk1, max(lk) AS lk2, sum(rt) AS st, max(rt) AS mt,
    bool_or(located) AS located
  FROM ({rows}) r GROUP BY id
)
  SELECT id, simple, CASE WHEN simple THEN {_key('d', 'v', 'nat', 'parcels', 'disps', 'lots')}
    END AS cle, t, d, v, nat, cp, cc, nc, numero, voie, lon, lat, parcels,
    types, bati, pieces, terrain, n, {_totals('bati', 'terrain', 'pieces')} AS too_big
  FROM (
    SELECT id, (np <= 2 OR p1 = p2) AND (n <= 2 OR d1 = d2) AND ml IS NOT TRUE
      AND (nl <= 2 OR l1 = l2) AND (nt <= 2 OR t1 = t2) AND (ndk <= 2 OR dk1 = dk2)
      AND (nlk <= 2 OR lk1 = lk2)
      AND (NOT located OR (r.{lon} IS NOT NULL AND r.{lat} IS NOT NULL)) AS simple,
      r.ctid AS t, r.{dat} AS d, r.{val} AS v, r.{nat} AS nat, r.{cp} AS cp, r.{cc} AS cc,
      r.{nc} AS nc, r.{num} || r.{suf} AS numero, btrim(r.{voie}, {_WS}) AS voie,
      r.{lon} AS lon, r.{lat} AS lat,
      CASE WHEN np = 0 THEN '{{}}'::text[] WHEN p1 = p2 THEN ARRAY[p1] ELSE ARRAY[p1, p2] END
        AS parcels,
      CASE WHEN d1 = d2 THEN d1 ELSE d1 || ',' || d2 END AS disps,
      CASE WHEN nl = 0 THEN '' WHEN l1 = l2 THEN l1 ELSE l1 || ',' || l2 END AS lots,
      CASE WHEN nt = 0 THEN '{{}}'::text[] WHEN t1 = t2 THEN ARRAY[split_part(t1, {x}, 2)]
        ELSE ARRAY[split_part(t1, {x}, 2), split_part(t2, {x}, 2)] END AS types,
      CASE WHEN dk1 = dk2 THEN mb ELSE sb END AS bati,
      CASE WHEN dk1 = dk2 THEN mp ELSE sp END AS pieces,
      CASE WHEN lk1 = lk2 THEN mt ELSE st END AS terrain, n
    FROM g JOIN {stage} r ON r.ctid = split_part(g.w, {x}, 5)::tid
    OFFSET 0) s"""
    summary = f"""
SELECT count(*) FILTER (WHERE simple AND too_big IS NULL),
  array_agg(id) FILTER (WHERE NOT simple), count(*) FILTER (WHERE simple AND too_big IS NOT NULL),
  coalesce(sum(n), 0)
FROM {sales}"""
    big = f"""
SELECT too_big, sum(n) FROM {sales} WHERE simple AND too_big IS NOT NULL GROUP BY too_big"""
    cols = (f"ctid AS r, {i_d} AS id, {dat} AS d, {disp} AS disp, {nat} AS nat, {val} AS val, "
            f"{num} AS num, {suf} AS suf, {voie} AS voie, {cp} AS cp, {cc} AS cc, {nc} AS nc, "
            f"{par} AS parcel, {l1} AS l1, {l2} AS l2, {l3} AS l3, {l4} AS l4, {l5} AS l5, "
            f"{code} AS code, {tl} AS tl, {bati} AS bati, {pieces} AS pieces, {cult} AS cult, "
            f"{cults} AS cults, {ter} AS terrain, {lon} AS lon, {lat} AS lat")
    exact = f"""
WITH v AS MATERIALIZED (SELECT {cols} FROM {stage} WHERE {valid} AND {i_d} = ANY($3::text[])),
o AS (
  SELECT DISTINCT ON (id) id, r AS t, d, val, nat, cp, cc, nc, num || suf AS numero,
    btrim(voie, {_WS}) AS voie, lon, lat FROM v
  ORDER BY id, code NOT IN ('1', '2'), num = '', parcel,
    CASE WHEN length(num) >= 8 THEN num ELSE lpad(num, 8, '0') END, suf, voie, r
), loc AS (
  SELECT DISTINCT ON (id) id, lon, lat FROM v WHERE lon IS NOT NULL AND lat IS NOT NULL
  ORDER BY id, r
), a AS (
  SELECT id, coalesce(array_agg(DISTINCT parcel) FILTER (WHERE parcel <> ''), '{{}}') AS parcels,
    string_agg(DISTINCT disp, ',') AS disps, count(*) AS n FROM v GROUP BY id
), dw AS (
  SELECT id, sum(round(bati)) AS bati, sum(round(pieces)) AS pieces FROM (
    SELECT DISTINCT id, parcel, l1, l2, l3, l4, l5, code, bati, pieces FROM v
    WHERE code IN ('1', '2')) x GROUP BY id
), la AS (
  SELECT id, sum(round(terrain)) AS terrain FROM (
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
  SELECT {_key('d', 'val', 'nat', 'parcels', 'disps', 'lots')} AS cle, t, d, val AS v, nat,
    cp, cc, nc, numero, voie, parcels, types, bati, pieces, terrain,
    CASE WHEN (lon IS NULL OR lat IS NULL) AND lon2 IS NOT NULL THEN lon2 ELSE lon END AS lon,
    CASE WHEN (lon IS NULL OR lat IS NULL) AND lon2 IS NOT NULL THEN lat2 ELSE lat END AS lat,
    {_totals('bati', 'terrain', 'pieces')} AS too_big, n
  FROM (
    SELECT o.*, a.parcels, a.disps, a.n, coalesce(lo.lots, '') AS lots,
      coalesce(ty.types, '{{}}') AS types, dw.bati, dw.pieces, la.terrain,
      loc.lon AS lon2, loc.lat AS lat2
    FROM o JOIN a USING (id) LEFT JOIN dw USING (id) LEFT JOIN la USING (id)
      LEFT JOIN lo USING (id) LEFT JOIN ty USING (id) LEFT JOIN loc USING (id)) j
), ins AS (
  INSERT INTO {sales} ({SALE_COLUMNS})
  SELECT NULL, true, cle, t, d, v, nat, cp, cc, nc, numero, voie, lon, lat, parcels, types,
    bati, pieces, terrain, n, too_big FROM s
), big AS (
  SELECT too_big, sum(n) AS n FROM s WHERE too_big IS NOT NULL GROUP BY too_big
)
SELECT (SELECT count(*) FROM s WHERE too_big IS NULL),
       (SELECT array_agg(too_big) FROM big), (SELECT array_agg(n) FROM big)"""
    stats = f"""
SELECT count(*) FILTER (WHERE {outside}),
  count(*) FILTER (WHERE NOT {outside} AND {i_d} = ''),
  count(*) FILTER (WHERE NOT {outside} AND {i_d} <> '' AND {dat} IS NULL),
  count(*) FILTER (WHERE NOT {outside} AND {i_d} <> '' AND {dat} IS NOT NULL
                   AND {i_d} = $2::text),
  count(*)
FROM {stage}"""
    numbers = f"""
SELECT {numbers_why}, count(*) FROM {stage}
WHERE NOT {outside} AND {i_d} <> '' AND {dat} IS NOT NULL AND {i_d} IS DISTINCT FROM $2::text
  AND NOT ({numbers_ok})
GROUP BY 1"""
    return {"build": build, "summary": summary, "big": big, "exact": exact, "stats": stats,
            "numbers": numbers}
