"""A DPE lead's priority, as the earlier Axi scored it (pure): points for a passoire
(F/G) or an E, for a recent reception (an owner who just had a DPE made is often about to
sell or rent), for a last sale before 2022 (or none known: a long-held house); P1 at 80
and above, P2 at 50, else P3. The weights and thresholds come from the veille's config;
the reasons are shown in French next to the priority, so Ludo can see why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

DEFAULT_WEIGHTS = {"passoire": 50, "classe_e": 20, "recu_30j": 30, "recu_60j": 15,
                   "vente_avant_2022": 20, "aucune_vente": 10}
DEFAULT_THRESHOLDS = {"P1": 80, "P2": 50}


@dataclass(frozen=True)
class Score:
    priorite: str  # "P1" | "P2" | "P3"
    points: int
    raisons: tuple[str, ...]


def _weight(weights: Mapping[str, Any], name: str) -> int:
    value = weights.get(name, DEFAULT_WEIGHTS[name])
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else \
        DEFAULT_WEIGHTS[name]


def score(data: Mapping[str, Any], today: date, *, weights: Mapping[str, Any] | None = None,
          thresholds: Mapping[str, Any] | None = None) -> Score:
    """`data`: an item's data (classe, date_reception, derniere_vente {date} or None)."""
    weights = weights or {}
    thresholds = thresholds or {}
    points = 0
    reasons: list[str] = []

    def add(name: str, reason: str) -> None:
        nonlocal points
        w = _weight(weights, name)
        points += w
        reasons.append(f"{reason} (+{w})")

    classe = data.get("classe")
    if classe in ("F", "G"):
        add("passoire", f"passoire thermique (classe {classe})")
    elif classe == "E":
        add("classe_e", "classe E")

    reception = data.get("date_reception")
    if isinstance(reception, str):
        try:
            age = (today - date.fromisoformat(reception)).days
        except ValueError:
            age = None
        if age is not None and age <= 30:
            add("recu_30j", f"DPE reçu il y a {max(age, 0)} j")
        elif age is not None and age <= 60:
            add("recu_60j", f"DPE reçu il y a {age} j")

    sale = data.get("derniere_vente")
    if isinstance(sale, Mapping) and isinstance(sale.get("date"), str):
        if sale["date"][:4] < "2022":
            add("vente_avant_2022", f"dernière vente en {sale['date'][:4]}")
    elif "derniere_vente" in data:
        add("aucune_vente", "aucune vente connue")

    p1 = _threshold(thresholds, "P1")
    p2 = _threshold(thresholds, "P2")
    priority = "P1" if points >= p1 else "P2" if points >= p2 else "P3"
    return Score(priority, points, tuple(reasons))


def _threshold(thresholds: Mapping[str, Any], name: str) -> int:
    value = thresholds.get(name, DEFAULT_THRESHOLDS[name])
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else \
        DEFAULT_THRESHOLDS[name]
