"""Alerts Axi raises for Ludo: the texts (pure) and the budget check that raises the
"Claude budget spent" alert once a month (DESIGN "LLM": the cap stops fallbacks and
alerts Ludo). Delivery is the outbox's job (memory/alerts.py queues the messages)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from llm.router import BudgetFn
from memory.store import MemoryStore

log = logging.getLogger(__name__)

MONTHS_FR = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
             "septembre", "octobre", "novembre", "décembre")


def euros(amount: float) -> str:
    """12.5 → '12,50 €' (French decimal comma)."""
    return f"{amount:,.2f}".replace(",", " ").replace(".", ",") + " €"


def budget_alert_key(now: datetime) -> str:
    return f"budget-claude:{now:%Y-%m}"


def budget_alert_text(*, spent_eur: float, limit_eur: float, now: datetime) -> str:
    """The alert Ludo reads (tutoiement) when the month's Claude budget is spent."""
    month = f"{MONTHS_FR[now.month - 1]} {now.year}"
    following = MONTHS_FR[now.month % 12]
    return (f"⚠️ Alerte Axi : le budget Claude de {month} est atteint "
            f"({euros(spent_eur)} dépensés pour un plafond de {euros(limit_eur)}). "
            f"Je ne me replie plus sur Claude jusqu'au 1er {following} : quand mon moteur "
            "local ne peut pas répondre, les messages attendent qu'il revienne. "
            "Pour relever le plafond, change AXI_CLAUDE_MONTHLY_BUDGET dans le fichier .env "
            "puis redémarre Axi.")


def budget_with_alert(store: MemoryStore, limit_eur: float, *,
                      timezone: str = "Europe/Paris",
                      channels: Callable[[], Sequence[str]] | None = None,
                      alerting: Callable[[], bool] = lambda: True) -> BudgetFn:
    """A router `budget_ok`: True while this month's Claude spend is under the cap; the
    first time it is not, in a given month, Ludo is alerted (once: the key is unique) on
    the `channels()` running then."""
    tz = ZoneInfo(timezone)
    alerted: set[str] = set()

    async def budget_ok() -> bool:
        spent = await store.claude_spend_this_month(timezone=timezone)
        if spent < limit_eur:
            return True
        now = datetime.now(tz)
        key = budget_alert_key(now)
        if key not in alerted and alerting():
            try:
                raised = await store.raise_alert(
                    key, budget_alert_text(spent_eur=spent, limit_eur=limit_eur, now=now),
                    channels=channels() if channels is not None else None)
            except Exception as exc:  # alerting must never break the reply path
                log.warning("could not raise the Claude budget alert: %s", exc)
            else:
                alerted.add(key)
                if raised.new:
                    log.warning("monthly Claude budget spent (%.2f / %.2f EUR): Ludo alerted "
                                "(%s message(s) queued)", spent, limit_eur, raised.queued)
        return False

    return budget_ok
