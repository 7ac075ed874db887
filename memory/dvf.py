"""DVF sales (ventes_dvf): what a sale is, the import's writes and the lookups of the DVF
veille and of the DPE enrichment (issue 12).

Why here: a sale's fields are defined once, by the table that stores them — `Sale` is
what the import builds (jobs/dvf_parse.py) and writes, `DvfSale` what the lookups read
back. The import itself (a file's rows COPYed and turned into sales by PostgreSQL) is in
memory/dvf_pipeline.py and memory/dvf_load.py; `insert_dvf_sales` stores sales built in
Python (the older path, the reference). The veille reads the sales imported since its
watermark; the DPE veille asks for the last sale at or near an address.
"""

from __future__ import annotations

import math
import operator
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from memory.dvf_load import DvfLoad


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
IMPORT_LOCK = 4242017
"""The pg_advisory_xact_lock key every write to ventes_dvf holds: one import at a time
(memory/dvf_pipeline.py inserts the keys it did not find, without ON CONFLICT)."""


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
                await driver.execute(f"SELECT pg_advisory_xact_lock({IMPORT_LOCK})")
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
                           source: str, cut: Callable[[], str | None],
                           timings: dict[str, float] | None = None) -> DvfLoad:
        """A geo-DVF file's data lines into ventes_dvf, its sales built by PostgreSQL
        (memory/dvf_pipeline.py: what the arguments mean, what it raises)."""
        from memory.dvf_pipeline import load_dvf_csv

        return await load_dvf_csv(self.db, width, columns, data, departement=departement,
                                  source=source, cut=cut, timings=timings)

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
