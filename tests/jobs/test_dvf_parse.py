"""geo-DVF rows → sales (jobs/dvf_parse.py): the real excerpt, grouping, the stable key,
broken lines skipped with their reason."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path

import pytest

from jobs.dvf_parse import HeaderError, SaleParser, sale_key
from memory.dvf import Sale
from tests.fakes.dvf_server import HEADER, synthetic_rows

EXCERPT = Path(__file__).parent / "data" / "geo-dvf_69043_2025_excerpt.csv"


def parse(lines: list[str], departement: str | None = "69", chunk: int = 7
          ) -> tuple[list[Sale], SaleParser]:
    parser = SaleParser("test.csv", departement=departement)
    sales: list[Sale] = []
    for i in range(0, len(lines), chunk):
        sales += parser.feed(lines[i:i + chunk])
    return sales + parser.finish(), parser


def excerpt() -> list[str]:
    return EXCERPT.read_text(encoding="utf-8").splitlines()


def by_address(sales: list[Sale]) -> dict[tuple[str, str | None], Sale]:
    return {(str(s.date_mutation), s.adresse): s for s in sales}


def test_the_real_excerpt_parses_into_one_sale_per_mutation() -> None:
    lines = excerpt()
    sales, parser = parse(lines)
    mutations = {line.split(",")[0] for line in lines[1:]}
    assert parser.rows_read == 87 and not parser.skipped and parser.rows_outside == 0
    assert len(sales) == len(mutations) == 42
    assert len({s.cle for s in sales}) == 42  # incl. two flats sold the same day, same price
    sales_at = by_address(sales)
    # a house listed on two cultures (4 rows of it): its surface counted once, land summed
    house = sales_at[("2025-01-29", "100 RTE DU PONT DE CHENE")]
    assert (house.surface_bati, house.pieces, house.surface_terrain) == (140, 5, 77 + 1123)
    assert house.types_locaux == ["Maison", "Dépendance"]
    assert house.valeur == Decimal("552216.00") and house.parcelles == ["69043000AB0262"]
    assert (house.longitude, house.latitude) == (4.739748, 45.727321)
    # two flats (lots 5 and 6) in one sale; suffix and the dwelling's address
    flats = sales_at[("2025-02-20", "2 RUE FAVRE GARIN")]
    assert (flats.surface_bati, flats.pieces, flats.types_locaux) == (102, 4, ["Appartement"])
    assert ("2025-01-10", "21C AV ANDRE DEVIENNE") in sales_at
    # the house's row gives the address, not a lieu-dit listed first
    assert ("2025-05-05", "17 RUE BENOIT BADOIL") in sales_at
    land = sales_at[("2025-01-21", "RUE LOUIS MARTEL")]
    assert land.parcelles == ["69043000AM0443", "69043000AM0446"]
    assert land.nature == "Vente terrain à bâtir" and land.surface_bati is None
    assert land.surface_terrain == 680 + 305 and land.types_locaux == []
    assert all(s.code_postal == "69630" and s.nom_commune == "Chaponost" for s in sales)


def test_the_key_ignores_row_order_chunking_and_id_mutation() -> None:
    lines = excerpt()
    first, _ = parse(lines, chunk=1000)
    rows = lines[1:]
    random.Random(4).shuffle(rows)  # a mutation's rows no longer together
    renumbered = [f"2024-{int(r.split(',')[0].split('-')[1]) + 17}," + r.split(",", 1)[1]
                  for r in rows]
    again, parser = parse([lines[0], *renumbered], chunk=3)
    assert {s.cle for s in again} == {s.cle for s in first}
    assert {s.cle: s for s in again} == {s.cle: s for s in first}  # every field
    assert parser.mutations_split == 0


def test_what_changes_the_key() -> None:
    base = sale_key("2025-01-03", "355000", ["P1", "P2"], ["000001"], "Vente", ["P1:11"])
    assert base == sale_key("2025-01-03", "355000.00", ["P2", "P1", "P1"], ["000001"],
                            "Vente", ["P1:11"])
    for other in (sale_key("2025-01-04", "355000", ["P1", "P2"], ["000001"], "Vente", ["P1:11"]),
                  sale_key("2025-01-03", "355001", ["P1", "P2"], ["000001"], "Vente", ["P1:11"]),
                  sale_key("2025-01-03", "355000", ["P1"], ["000001"], "Vente", ["P1:11"]),
                  sale_key("2025-01-03", "355000", ["P1", "P2"], ["000002"], "Vente", ["P1:11"]),
                  sale_key("2025-01-03", "355000", ["P1", "P2"], ["000001"], "Echange", ["P1:11"]),
                  sale_key("2025-01-03", "355000", ["P1", "P2"], ["000001"], "Vente", ["P1:12"]),
                  sale_key("2025-01-03", "", ["P1", "P2"], ["000001"], "Vente", ["P1:11"])):
        assert other != base
    assert len(base) == 64


def test_broken_lines_are_skipped_and_counted_with_their_reason() -> None:
    lines = excerpt()
    broken = [
        lines[1][:60],                                        # cut short
        lines[1].replace("2025-01-03", "2025-13-45"),         # impossible date
        lines[4].replace(",205000,", ",205 000€,"),           # not a number
        lines[7].replace(",4.74319,", ",est,"),               # bad longitude
        ",".join(["", *lines[1].split(",")[1:]]),             # no id_mutation
        "",                                                   # blank line: ignored
    ]
    sales, parser = parse([lines[0], *broken, *lines[1:]])
    assert len(sales) == 42
    assert parser.skipped == {
        "wrong number of columns (8 instead of 40)": 1, "bad date_mutation": 1,
        "valeur_fonciere is not a number": 1, "longitude is not a number": 1,
        "no id_mutation": 1}
    assert parser.rows_read == 87 + 5


def test_a_changed_header_names_the_missing_columns() -> None:
    lines = excerpt()
    header = lines[0].replace("valeur_fonciere", "valeur").replace("id_parcelle,", "parcelle,")
    with pytest.raises(HeaderError, match=r"missing column.*valeur_fonciere, id_parcelle"):
        parse([header, *lines[1:]])


def test_rows_of_other_departements_are_counted_not_kept() -> None:
    rows = [HEADER, *(r.rstrip("\n") for r in synthetic_rows(200, departement="24")),
            *(r.rstrip("\n") for r in synthetic_rows(100, departement="47", start=10_000))]
    sales, parser = parse(rows, departement="24", chunk=50)
    assert parser.rows_outside == 100 and parser.rows_read == 300
    assert {(s.code_commune or "")[:2] for s in sales} == {"24"}
    everything, _ = parse(rows, departement=None, chunk=50)
    assert len(everything) > len(sales)
