"""Alerts Axi raises for Ludo: the texts (pure) and the budget check that raises the
"Claude budget spent" alert once a month (DESIGN "LLM": the cap stops fallbacks and
alerts Ludo). It goes through `notify` (bot/notify.py) like every push."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.channel import NotifyFn
from bot.notify import OWNER
from llm.router import BudgetFn

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


def budget_with_alert(spend_this_month: Callable[[], Awaitable[float]], limit_eur: float, *,
                      notify: NotifyFn | None, timezone: str = "Europe/Paris",
                      alerting: Callable[[], bool] = lambda: True) -> BudgetFn:
    """A router `budget_ok`: True while this month's Claude spend is under the cap; the
    first time it is not, in a given month, Ludo is alerted through `notify` (once: the
    key is unique per month; urgent, so quiet hours do not hold it)."""
    tz = ZoneInfo(timezone)
    alerted: set[str] = set()

    async def budget_ok() -> bool:
        spent = await spend_this_month()
        if spent < limit_eur:
            return True
        now = datetime.now(tz)
        key = budget_alert_key(now)
        if key not in alerted and alerting() and notify is not None:
            try:
                queued = await notify(OWNER, budget_alert_text(spent_eur=spent,
                                                               limit_eur=limit_eur, now=now),
                                      key=key, kind="push", urgent=True,
                                      subject="Alerte Axi : budget Claude atteint")
            except Exception as exc:  # alerting must never break the reply path
                log.warning("could not raise the Claude budget alert: %s", exc)
            else:
                alerted.add(key)
                if queued:
                    log.warning("monthly Claude budget spent (%.2f / %.2f EUR): Ludo alerted "
                                "(%s message(s) queued)", spent, limit_eur, len(queued))
        return False

    return budget_ok
