"""The DPE priority (pure): the earlier Axi's weights, thresholds and reasons, and the
config's overrides; plus the row parsing and price range it relies on."""

from __future__ import annotations

from datetime import date

import pytest

from jobs.dpe_rows import estimate, links, normalize_address, parse_line
from jobs.dpe_score import score

TODAY = date(2026, 12, 1)


def data(classe: str | None = "G", received: str = "2026-11-20", sale: object = None,
         looked_up: bool = True) -> dict[str, object]:
    out: dict[str, object] = {"classe": classe, "date_reception": received}
    if looked_up:
        out["derniere_vente"] = sale
    return out


@pytest.mark.parametrize(("item", "priority", "points"), [
    (data("G", "2026-11-20", {"date": "2015-06-01"}), "P1", 100),  # 50 + 30 + 20
    (data("F", "2026-11-20", None), "P1", 90),                      # 50 + 30 + 10
    (data("F", "2026-10-10", {"date": "2023-02-01"}), "P2", 65),    # 50 + 15 (52 days)
    (data("E", "2026-11-30", None), "P2", 60),                      # 20 + 30 + 10
    (data("E", "2026-08-01", {"date": "2024-01-01"}), "P3", 20),
    (data("C", "2026-11-29", {"date": "2019-01-01"}), "P2", 50),    # 30 + 20, exactly P2
    (data("B", "2026-01-01", None, looked_up=False), "P3", 0),      # lookup not done: no +10
])
def test_priorities(item: dict[str, object], priority: str, points: int) -> None:
    result = score(item, TODAY)
    assert (result.priorite, result.points) == (priority, points)


def test_reasons_are_french_and_show_the_points() -> None:
    result = score(data("G", "2026-11-20", {"date": "2015-06-01"}), TODAY)
    assert result.raisons == ("passoire thermique (classe G) (+50)", "DPE reçu il y a 11 j (+30)",
                              "dernière vente en 2015 (+20)")


def test_weights_and_thresholds_from_config() -> None:
    item = data("E", "2026-11-30", None)
    result = score(item, TODAY, weights={"classe_e": 45, "recu_30j": "oops"},
                   thresholds={"P1": 85})
    assert result.points == 45 + 30 + 10 and result.priorite == "P1"
    assert score(item, TODAY, thresholds={"P1": 100, "P2": 90}).priorite == "P3"


def test_parse_line_keeps_what_it_can_and_refuses_unkeyed_lines() -> None:
    line = {"numero_dpe": "2624E1234567X", "date_reception_dpe": "2026-11-20T00:00:00",
            "etiquette_dpe": "g", "surface_habitable_logement": "87,5", "_geopoint": "44.9,0.92",
            "adresse_ban": "  3  Rue  <b>Haute</b> 24260 Le Bugue ", "annee_construction": "x"}
    parsed = parse_line(line)
    assert parsed is not None
    assert parsed["classe"] == "G" and parsed["surface"] == 87.5
    assert parsed["date_reception"] == "2026-11-20" and parsed["annee_construction"] is None
    assert (parsed["latitude"], parsed["longitude"]) == (44.9, 0.92)
    assert parsed["adresse"] == "3 Rue <b>Haute</b> 24260 Le Bugue"  # data, escaped later
    assert parse_line({"numero_dpe": "X"}) is None
    assert parse_line({"date_reception_dpe": "2026-11-20"}) is None
    assert parse_line({**line, "_geopoint": "999,1", "etiquette_dpe": "Z"}) == {
        **parsed, "latitude": None, "longitude": None, "classe": None}


def test_estimate_and_address_normalization() -> None:
    assert estimate(100, 1800, 0.15) == {"bas": 153_000, "haut": 207_000, "prix_m2": 1800}
    assert estimate(None, 1800, 0.15) is None and estimate(80, None, 0.15) is None
    assert normalize_address("12 Rue de l'Église 24260 Le Bugue", "24260", "Le Bugue") == \
        "12 rue de l eglise"
    assert normalize_address("12 R DE L EGLISE") == "12 rue de l eglise"
    assert normalize_address("4B AV. DU STADE") == "4 bis avenue du stade"
    assert normalize_address("4bis avenue du Stade") == "4 bis avenue du stade"
    assert normalize_address("4 B Av du Stade 24510 Limeuil") == "4 bis avenue du stade"
    assert normalize_address(None) is None


def test_links_with_and_without_coordinates() -> None:
    with_point = links({"latitude": 44.918, "longitude": 0.927})
    assert with_point["carte"].startswith("https://www.openstreetmap.org/?mlat=44.918000")
    assert "c=0.927000,44.918000" in with_point["cadastre"]
    without = links({"adresse": "3 rue Haute 24260 Le Bugue"})
    assert without["carte"].endswith("query=3%20rue%20Haute%2024260%20Le%20Bugue")
