"""Etalab geo-DVF CSV rows → sales (memory.dvf.Sale), pure (no I/O), so the import
(jobs/dvf_import.py) and its tests share one definition of a sale's stable key.

Why a parser of our own: one sale (a "mutation") spans several CSV rows — one per local,
lot and land-culture combination, so the same house appears once per culture of its
parcel — and `id_mutation` is renumbered between releases. A sale here is the rows of one
`id_mutation` merged (surfaces summed over distinct locals and distinct land parts, not
over rows), keyed by a SHA-256 of what does not change between releases: date, price,
nature, the sorted parcels, the sorted dispositions and the sorted lots (two flats of one
building sold the same day at the same price differ only by their lot: a real case).

A broken row (wrong column count, a bad date or number) is skipped and counted with its
reason; it never fails the import. A header without the required columns does
(`HeaderError`, naming the missing ones).
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from memory.dvf import Sale

REQUIRED = (
    "id_mutation", "date_mutation", "numero_disposition", "nature_mutation",
    "valeur_fonciere", "adresse_numero", "adresse_suffixe", "adresse_nom_voie",
    "code_postal", "code_commune", "nom_commune", "code_departement", "id_parcelle",
    "lot1_numero", "lot2_numero", "lot3_numero", "lot4_numero", "lot5_numero",
    "code_type_local", "type_local", "surface_reelle_bati", "nombre_pieces_principales",
    "code_nature_culture", "code_nature_culture_speciale", "surface_terrain",
    "longitude", "latitude",
)
DWELLINGS = frozenset({"1", "2"})  # code_type_local: Maison, Appartement
WINDOW = 5_000
"""Rows a mutation's group stays open after its last row (geo-DVF lists a mutation's rows
together; this tolerates a few interleaved ones with bounded memory)."""


HELD_MAX = 1 << 22
"""Characters of one record held back at most, waiting for its end (a quoted field left
open swallows the lines after it; the csv module caps a field at 128 Ki characters)."""


class HeaderError(ValueError):
    """The file is not geo-DVF as we know it: nothing of it can be imported."""


class RowError(ValueError):
    """One broken row (the message is the reason, counted by the import)."""


class Records:
    """The CSV records of lines given in blocks (any chunking on line boundaries), each
    the same whatever the blocks: a record whose quoted field goes on past a block's last
    line is held back and read with the next block (or at the end, `final`). Yields the
    rows, and csv.Error for a line the csv module cannot read."""

    def __init__(self) -> None:
        self._held: list[str] = []

    @property
    def holding(self) -> bool:
        return bool(self._held)

    def read(self, lines: list[str], *, final: bool = False
             ) -> Iterator[list[str] | csv.Error]:
        if self._held:
            lines = self._held + lines
            self._held = []
        ended: list[bool] = []

        def end() -> Iterator[str]:
            ended.append(True)  # the csv module asked for a line past the last one
            yield from ()

        reader = csv.reader(itertools.chain(lines, end()))
        while True:
            start = reader.line_num
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield exc
                continue
            if ended and not final and sum(map(len, lines[start:])) <= HELD_MAX:
                self._held = lines[start:]  # the record goes on in the next block
                return
            yield row


class Columns(NamedTuple):
    """The indexes of the columns a sale is made of (found once per file)."""

    id: int
    date: int
    disposition: int
    nature: int
    valeur: int
    numero: int
    suffixe: int
    voie: int
    code_postal: int
    code_commune: int
    nom_commune: int
    departement: int
    parcelle: int
    lots: tuple[int, ...]
    code_type: int
    type_local: int
    bati: int
    pieces: int
    culture: int
    culture_speciale: int
    terrain: int
    longitude: int
    latitude: int

    @classmethod
    def of(cls, ix: dict[str, int]) -> Columns:
        return cls(
            ix["id_mutation"], ix["date_mutation"], ix["numero_disposition"],
            ix["nature_mutation"], ix["valeur_fonciere"], ix["adresse_numero"],
            ix["adresse_suffixe"], ix["adresse_nom_voie"], ix["code_postal"],
            ix["code_commune"], ix["nom_commune"], ix["code_departement"], ix["id_parcelle"],
            tuple(ix[f"lot{i}_numero"] for i in range(1, 6)), ix["code_type_local"],
            ix["type_local"], ix["surface_reelle_bati"], ix["nombre_pieces_principales"],
            ix["code_nature_culture"], ix["code_nature_culture_speciale"],
            ix["surface_terrain"], ix["longitude"], ix["latitude"])


def column_indexes(header: list[str]) -> dict[str, int]:
    names = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise HeaderError(f"not a geo-DVF header: missing column(s) {', '.join(missing)}")
    return {name: i for i, name in enumerate(names)}


def sale_key(date_mutation: str, valeur: str, parcelles: Iterable[str],
             dispositions: Iterable[str], nature: str, lots: Iterable[str] = ()) -> str:
    """The stable key: the same sale in every release, whatever its rows' order or its
    id_mutation. `valeur` is normalised (355000 and 355000.00 are one price)."""
    price = "" if not valeur else f"{Decimal(valeur):.2f}"
    text = "|".join((date_mutation, price, ",".join(sorted(set(parcelles))),
                     ",".join(sorted(set(dispositions))), nature.strip(),
                     ",".join(sorted(set(lots)))))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


INT_MIN, INT_MAX = -(2**31), 2**31 - 1
"""ventes_dvf's integer columns (surfaces, rooms): a rounded value or a sale's total."""
VALEUR_MAX = Decimal(10) ** 12
"""valeur is numeric(14, 2): its absolute value, rounded to the cent, stays below this."""
CENTS = Decimal("0.01")
BOUNDS = {"longitude": 180.0, "latitude": 90.0}


def _plain(value: str) -> bool:
    """Written as PostgreSQL may read a number: ASCII, no `_` (Python's float and Decimal
    also take other digits and 1_000)."""
    return value.isascii() and "_" not in value


def _finite(value: str, what: str) -> float:
    """`value` as a finite float, else RowError (NaN, inf, 1e400, not a number)."""
    try:
        number = float(value) if _plain(value) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise RowError(f"{what} is not a number")
    return number


def _int(value: str, what: str) -> int | None:
    """A surface or a room count, rounded; RowError when it is not a finite number (NaN,
    inf, 1e400) or does not fit ventes_dvf's integer column."""
    if not value:
        return None
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0")
        number = int(digits or "0") if len(digits) <= 18 else INT_MAX + 1
    else:
        number = round(_finite(value, what))
    if not INT_MIN <= number <= INT_MAX:
        raise RowError(f"{what} out of range")
    return number


def _float(value: str, what: str) -> float | None:
    """A longitude or a latitude (finite, within ±180 or ±90 degrees)."""
    if not value:
        return None
    number = _finite(value, what)
    if abs(number) > BOUNDS[what]:
        raise RowError(f"{what} out of range")
    return number


def _valeur(value: str) -> Decimal | None:
    """The price, rounded to the cent, finite and fitting numeric(14, 2)."""
    if not value:
        return None
    try:
        number = Decimal(value) if _plain(value) else Decimal("NaN")
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite():
        raise RowError("valeur_fonciere is not a number")
    if abs(number) >= VALEUR_MAX or abs(number := number.quantize(CENTS)) >= VALEUR_MAX:
        raise RowError("valeur_fonciere out of range")
    return number


def _total(values: list[int], what: str) -> int | None:
    """A sale's total surface or room count (its rows', each in range: the sum may not)."""
    if not values:
        return None
    total = sum(values)
    if not INT_MIN <= total <= INT_MAX:
        raise RowError(f"{what} total out of range")
    return total


def check_row(row: list[str], c: Columns, width: int) -> None:
    """The cheap checks every row gets (RowError: the row cannot be part of a sale); its
    numbers are checked by `build_sale`, and row by row (`check_numbers`) only for a
    sale that fails, so that only its broken rows are dropped."""
    if len(row) != width:
        raise RowError(f"wrong number of columns ({len(row)} instead of {width})")
    if not row[c.id]:
        raise RowError("no id_mutation")
    try:
        date.fromisoformat(row[c.date])
    except ValueError:
        raise RowError("bad date_mutation") from None


def check_numbers(row: list[str], c: Columns) -> None:
    """RowError when one of the row's numbers is not one or does not fit its column."""
    _valeur(row[c.valeur])
    for index, name in ((c.bati, "surface_reelle_bati"), (c.pieces, "nombre_pieces_principales"),
                        (c.terrain, "surface_terrain")):
        _int(row[index], name)
    _float(row[c.longitude], "longitude")
    _float(row[c.latitude], "latitude")


def build_sale(rows: list[list[str]], c: Columns, source: str) -> Sale:
    """One sale from the (checked) rows of one mutation."""
    parcels: set[str] = set()
    lots: set[str] = set()
    types: dict[str, str] = {}
    dwellings: dict[tuple, tuple[int | None, int | None]] = {}
    land: dict[tuple, int | None] = {}
    c_parcel, c_code, c_terrain, lot_cols = c.parcelle, c.code_type, c.terrain, c.lots
    for row in rows:
        parcel = row[c_parcel]
        if parcel:
            parcels.add(parcel)
        row_lots = tuple([row[i] for i in lot_cols])
        if any(row_lots):
            lots.update(f"{parcel}:{lot}" for lot in row_lots if lot)
        code = row[c_code]
        if code:
            types.setdefault(row[c.type_local] or code, code)
            if code in DWELLINGS:
                surface, rooms = row[c.bati], row[c.pieces]
                dwellings[(parcel, row_lots, code, surface, rooms)] = (
                    _int(surface, "surface_reelle_bati"), _int(rooms, "nombre_pieces_principales"))
        terrain = row[c_terrain]
        if terrain:
            land[(parcel, row[c.culture], row[c.culture_speciale], terrain)] = _int(
                terrain, "surface_terrain")
    # the address and the point of a dwelling's row, else of a numbered row: chosen
    # whatever the rows' order, so that a sale is the same in every release
    c_num, c_suffix, c_voie = c.numero, c.suffixe, c.voie
    where = rows[0] if len(rows) == 1 else min(rows, key=lambda r: (
        r[c_code] not in DWELLINGS, not r[c_num], r[c_parcel], r[c_num].zfill(8),
        r[c_suffix], r[c_voie]))
    voie = where[c_voie].strip()
    numero = where[c_num] + where[c_suffix]
    adresse = f"{numero} {voie}" if numero and voie else numero or voie
    lon, lat = _float(where[c.longitude], "longitude"), _float(where[c.latitude], "latitude")
    if lon is None or lat is None:
        located = next((r for r in rows if r[c.longitude] and r[c.latitude]), None)
        if located is not None:
            lon = _float(located[c.longitude], "longitude")
            lat = _float(located[c.latitude], "latitude")
    valeur, nature, day = where[c.valeur], where[c.nature], where[c.date]
    price = _valeur(valeur)
    dispositions = {r[c.disposition] for r in rows}
    bati = [s for s, _ in dwellings.values() if s is not None]
    pieces = [p for _, p in dwellings.values() if p is not None]
    surfaces = [s for s in land.values() if s is not None]
    return Sale(
        sale_key(day, valeur, parcels, dispositions, nature, lots),
        date.fromisoformat(day), nature or None,
        price,
        where[c.code_postal] or None, where[c.code_commune] or None,
        where[c.nom_commune] or None, adresse or None, sorted(parcels),
        [name for name, _ in sorted(types.items(), key=lambda t: (t[1], t[0]))],
        _total(bati, "surface_reelle_bati"), _total(surfaces, "surface_terrain"),
        _total(pieces, "nombre_pieces_principales"), lon, lat, source)


@dataclass
class SaleParser:
    """Feed it a file's lines in order (any chunking that ends on line boundaries, even
    inside a quoted field); it returns the sales it could complete. Rows outside
    `departement` are counted, not kept; `skipped` counts broken rows by reason."""

    source: str
    departement: str | None = "24"
    rows_read: int = 0
    rows_outside: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    mutations_split: int = 0
    """Mutations whose rows came back after their group was closed (kept as two sales)."""
    _cols: Columns | None = None
    _width: int = 0
    _open: OrderedDict[str, list] = field(default_factory=OrderedDict)
    """id_mutation → [its last row's number, its rows], least recently touched first."""
    _closed: set[str] = field(default_factory=set)
    _records: Records = field(default_factory=Records)

    @property
    def has_header(self) -> bool:
        return self._cols is not None

    def feed(self, lines: list[str]) -> list[Sale]:
        self._read(lines, final=False)
        return self._close(self.rows_read - WINDOW)

    def finish(self, *, drop_last: bool = False) -> list[Sale]:
        """The sales still open at the end of the file. `drop_last`: the file was cut, so
        the mutation of its last row may lack rows; it is not kept (a complete release
        will bring it whole, under its true key)."""
        if self._records.holding:
            self._read([], final=True)
        if drop_last and self._open:
            _, (_, rows) = self._open.popitem(last=True)
            self.skipped["rows of a sale cut by the end of the file"] += len(rows)
        return self._close(None)

    def _read(self, lines: list[str], *, final: bool) -> None:
        records = self._records.read(lines, final=final)
        if self._cols is None:
            header = next(records, None)
            if header is None:
                return
            if isinstance(header, csv.Error):
                raise HeaderError(f"not a geo-DVF header: unreadable CSV ({header})")
            self._cols = Columns.of(column_indexes(header))
            self._width = len(header)
        cols, width, dept = self._cols, self._width, self.departement
        c_dept, c_id = cols.departement, cols.id
        groups = self._open
        n = self.rows_read
        last_key, last_group = None, None
        for row in records:
            if isinstance(row, csv.Error):  # a line the csv module refuses: that line only
                n += 1
                self.skipped[f"unreadable CSV line ({row})"] += 1
                continue
            if not row:
                continue
            n += 1
            if dept is not None and len(row) == width and row[c_dept] != dept:
                self.rows_outside += 1
                continue
            try:
                check_row(row, cols, width)
            except RowError as exc:
                self.skipped[str(exc)] += 1
                continue
            key = row[c_id]
            if key == last_key and last_group is not None:  # the usual case: still at the end
                last_group[0] = n
                last_group[1].append(row)
                continue
            group = groups.get(key)
            if group is None:
                if key in self._closed:
                    self.mutations_split += 1
                group = groups[key] = [n, [row]]
            else:
                group[0] = n
                group[1].append(row)
                groups.move_to_end(key)
            last_key, last_group = key, group
        self.rows_read = n

    def _close(self, before: int | None) -> list[Sale]:
        cols = self._cols
        sales: list[Sale] = []
        groups = self._open
        if cols is None:
            return sales
        while groups:
            key, (last, rows) = next(iter(groups.items()))
            if before is not None and last > before:
                break
            del groups[key]
            self._closed.add(key)
            try:
                sales.append(build_sale(rows, cols, self.source))
            except (RowError, InvalidOperation, ValueError):
                sale = self._rebuild(rows, cols)
                if sale is not None:
                    sales.append(sale)
        return sales

    def _rebuild(self, rows: list[list[str]], cols: Columns) -> Sale | None:
        """A sale with a broken number somewhere: without its broken rows."""
        good = []
        for row in rows:
            try:
                check_numbers(row, cols)
            except RowError as exc:
                self.skipped[str(exc)] += 1
            else:
                good.append(row)
        if not good:
            return None
        try:
            return build_sale(good, cols, self.source)
        except (RowError, InvalidOperation, ValueError) as exc:
            self.skipped[f"unusable sale ({exc})"] += len(good)
            return None

    def skip_partial_line(self) -> None:
        """The file was cut in the middle of a line (a truncated download)."""
        self.skipped["truncated last line"] += 1
