"""Etalab geo-DVF CSV rows → sales, pure (no I/O), so the import (jobs/dvf_import.py) and
its tests share one definition of a sale and of its stable key.

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
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation

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
SALE_COLUMNS = (
    "cle", "date_mutation", "nature", "valeur", "code_postal", "code_commune",
    "nom_commune", "adresse", "parcelles", "types_locaux", "surface_bati",
    "surface_terrain", "pieces", "longitude", "latitude", "source",
)
"""The order of a `Sale.record()` (ventes_dvf's columns but importe_le)."""


class HeaderError(ValueError):
    """The file is not geo-DVF as we know it: nothing of it can be imported."""


class RowError(ValueError):
    """One broken row (the message is the reason, counted by the import)."""


@dataclass(frozen=True)
class Sale:
    cle: str
    date_mutation: date
    nature: str
    valeur: Decimal | None
    code_postal: str
    code_commune: str
    nom_commune: str
    adresse: str
    parcelles: list[str]
    types_locaux: list[str]
    surface_bati: int | None
    surface_terrain: int | None
    pieces: int | None
    longitude: float | None
    latitude: float | None
    source: str

    def record(self) -> tuple:
        return (self.cle, self.date_mutation, self.nature or None, self.valeur,
                self.code_postal or None, self.code_commune or None,
                self.nom_commune or None, self.adresse or None, self.parcelles,
                self.types_locaux, self.surface_bati, self.surface_terrain, self.pieces,
                self.longitude, self.latitude, self.source)


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


def _int(value: str, what: str) -> int | None:
    if not value:
        return None
    try:
        return round(float(value))
    except ValueError:
        raise RowError(f"{what} is not a number") from None


def _float(value: str, what: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise RowError(f"{what} is not a number") from None


def check_row(row: list[str], ix: dict[str, int], width: int) -> None:
    """Raise RowError when a row cannot be part of a sale."""
    if len(row) != width:
        raise RowError(f"wrong number of columns ({len(row)} instead of {width})")
    if not row[ix["id_mutation"]]:
        raise RowError("no id_mutation")
    try:
        date.fromisoformat(row[ix["date_mutation"]])
    except ValueError:
        raise RowError("bad date_mutation") from None
    value = row[ix["valeur_fonciere"]]
    if value:
        try:
            Decimal(value)
        except InvalidOperation:
            raise RowError("valeur_fonciere is not a number") from None
    for name in ("surface_reelle_bati", "nombre_pieces_principales", "surface_terrain"):
        _int(row[ix[name]], name)
    for name in ("longitude", "latitude"):
        _float(row[ix[name]], name)


def build_sale(rows: list[list[str]], ix: dict[str, int], source: str) -> Sale:
    """One sale from the (checked) rows of one mutation."""
    c_parcel, c_code, c_type = ix["id_parcelle"], ix["code_type_local"], ix["type_local"]
    c_bati, c_pieces = ix["surface_reelle_bati"], ix["nombre_pieces_principales"]
    c_terrain, c_culture, c_special = (ix["surface_terrain"], ix["code_nature_culture"],
                                       ix["code_nature_culture_speciale"])
    lot_cols = [ix[f"lot{i}_numero"] for i in range(1, 6)]
    parcels: set[str] = set()
    lots: set[str] = set()
    types: dict[str, str] = {}
    dwellings: dict[tuple, tuple[int | None, int | None]] = {}
    land: dict[tuple, int | None] = {}
    for row in rows:
        parcel = row[c_parcel]
        if parcel:
            parcels.add(parcel)
        row_lots = tuple(row[c] for c in lot_cols)
        for lot in row_lots:
            if lot:
                lots.add(f"{parcel}:{lot}")
        code = row[c_code]
        if code:
            types.setdefault(row[c_type] or code, code)
            if code in DWELLINGS:
                local = (parcel, row_lots, code, row[c_bati], row[c_pieces])
                dwellings[local] = (_int(row[c_bati], "surface_reelle_bati"),
                                    _int(row[c_pieces], "nombre_pieces_principales"))
        if row[c_terrain]:
            land[(parcel, row[c_culture], row[c_special], row[c_terrain])] = _int(
                row[c_terrain], "surface_terrain")
    # the address and the point of a dwelling's row, else of a numbered row: chosen
    # whatever the rows' order, so that a sale is the same in every release
    c_num, c_suffix, c_voie = ix["adresse_numero"], ix["adresse_suffixe"], ix["adresse_nom_voie"]
    where = min(rows, key=lambda r: (r[c_code] not in DWELLINGS, not r[c_num], r[c_parcel],
                                     r[c_num].zfill(8), r[c_suffix], r[c_voie]))
    adresse = " ".join(p for p in (where[c_num] + where[c_suffix], where[c_voie].strip()) if p)
    lon, lat = _float(where[ix["longitude"]], "longitude"), _float(where[ix["latitude"]],
                                                                     "latitude")
    if lon is None or lat is None:
        located = next((r for r in rows if r[ix["longitude"]] and r[ix["latitude"]]), None)
        if located is not None:
            lon, lat = float(located[ix["longitude"]]), float(located[ix["latitude"]])
    valeur = where[ix["valeur_fonciere"]]
    nature = where[ix["nature_mutation"]]
    dispositions = {r[ix["numero_disposition"]] for r in rows}
    bati = [s for s, _ in dwellings.values() if s is not None]
    pieces = [p for _, p in dwellings.values() if p is not None]
    terrain = [s for s in land.values() if s is not None]
    return Sale(
        cle=sale_key(where[ix["date_mutation"]], valeur, parcels, dispositions, nature, lots),
        date_mutation=date.fromisoformat(where[ix["date_mutation"]]),
        nature=nature,
        valeur=Decimal(valeur).quantize(Decimal("0.01")) if valeur else None,
        code_postal=where[ix["code_postal"]],
        code_commune=where[ix["code_commune"]],
        nom_commune=where[ix["nom_commune"]],
        adresse=adresse,
        parcelles=sorted(parcels),
        types_locaux=[name for name, _ in sorted(types.items(), key=lambda t: (t[1], t[0]))],
        surface_bati=sum(bati) if bati else None,
        surface_terrain=sum(terrain) if terrain else None,
        pieces=sum(pieces) if pieces else None,
        longitude=lon, latitude=lat, source=source,
    )


@dataclass
class SaleParser:
    """Feed it a file's lines in order (any chunking that ends on line boundaries); it
    returns the sales it could complete. Rows outside `departement` are counted, not
    kept; `skipped` counts broken rows by reason."""

    source: str
    departement: str | None = "24"
    rows_read: int = 0
    rows_outside: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    mutations_split: int = 0
    """Mutations whose rows came back after their group was closed (kept as two sales)."""
    _ix: dict[str, int] | None = None
    _width: int = 0
    _open: OrderedDict[str, tuple[int, list[list[str]]]] = field(default_factory=OrderedDict)
    _closed: set[str] = field(default_factory=set)

    @property
    def has_header(self) -> bool:
        return self._ix is not None

    def feed(self, lines: list[str]) -> list[Sale]:
        reader = csv.reader(lines)
        if self._ix is None:
            header = next(reader, None)
            if header is None:
                return []
            self._ix = column_indexes(header)
            self._width = len(header)
        ix, width, dept = self._ix, self._width, self.departement
        c_dept, c_id = ix["code_departement"], ix["id_mutation"]
        groups = self._open
        n = self.rows_read
        try:
            for row in reader:
                n += 1
                if not row:
                    n -= 1
                    continue
                if dept is not None and len(row) == width and row[c_dept] != dept:
                    self.rows_outside += 1
                    continue
                try:
                    check_row(row, ix, width)
                except RowError as exc:
                    self.skipped[str(exc)] += 1
                    continue
                key = row[c_id]
                group = groups.get(key)
                if group is None:
                    if key in self._closed:
                        self.mutations_split += 1
                    groups[key] = (n, [row])
                else:
                    group[1].append(row)
                    groups[key] = (n, group[1])
                    groups.move_to_end(key)
        except csv.Error as exc:
            self.skipped[f"unreadable CSV ({exc})"] += 1
        self.rows_read = n
        return self._close(n - WINDOW)

    def finish(self, *, drop_last: bool = False) -> list[Sale]:
        """The sales still open at the end of the file. `drop_last`: the file was cut, so
        the mutation of its last row may lack rows; it is not kept (a complete release
        will bring it whole, under its true key)."""
        if drop_last and self._open:
            _, (_, rows) = self._open.popitem(last=True)
            self.skipped["rows of a sale cut by the end of the file"] += len(rows)
        return self._close(None)

    def _close(self, before: int | None) -> list[Sale]:
        assert self._ix is not None or not self._open
        sales: list[Sale] = []
        groups = self._open
        while groups:
            key, (last, rows) = next(iter(groups.items()))
            if before is not None and last > before:
                break
            del groups[key]
            self._closed.add(key)
            try:
                sales.append(build_sale(rows, self._ix or {}, self.source))
            except (RowError, InvalidOperation, ValueError) as exc:
                self.skipped[f"unusable sale ({exc})"] += len(rows)
        return sales

    def skip_partial_line(self) -> None:
        """The file was cut in the middle of a line (a truncated download)."""
        self.skipped["truncated last line"] += 1
