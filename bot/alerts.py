"""Alerts Axi raises for Ludo: the texts (pure) and the budget check that raises the
"Claude budget spent" alert once a month (DESIGN "LLM": the cap stops fallbacks and
alerts Ludo); and the texts of the alerts about Axi's own components (a part broken,
working again), which the component monitor (bot/monitor.py) sends Ludo and the
administrateurs. They go through `notify` (bot/notify.py) like every push."""

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


# ------------------------------------------------------------------ Axi's own components
CHANNEL_WORDS = {"telegram": "Telegram", "email": "courriel", "web": "web (HTTP)",
                 "axis": "Axis", "console": "console"}


def component_words(path: str) -> str:
    """A component of the health report (bot/health_rules.py) in French words."""
    group, _, name = path.partition(".")
    if group == "database":
        return "la base de données"
    if group == "llm_local":
        return "le modèle local (Ollama)"
    if group == "channels":
        return f"le canal {CHANNEL_WORDS.get(name, name)}"
    if group == "scheduler":
        return "le planificateur des veilles" if name == "veilles" else f"la tâche {name}"
    if group == "loops":
        return "les boucles de travail d'Axi"
    if group == "queues":
        return "la file des messages"
    return f"« {path} »"


def _when(moment: datetime, tz: ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%d/%m/%Y à %H:%M}"


def _lasted(since: datetime, until: datetime) -> str:
    minutes = max(1, round((until - since).total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d}"


def outage_text(path: str, reason: str, since: datetime, tz: ZoneInfo) -> str:
    """Ludo and Anthony (tutoyés) read this once when a component of Axi breaks."""
    return (f"⚠️ Axi, panne — {component_words(path)} : {reason} (depuis le "
            f"{_when(since, tz)}). Je ne te le redirai pas à chaque vérification ; je te "
            "préviendrai quand ça refonctionnera.")


def recovery_text(path: str, since: datetime, until: datetime, tz: ZoneInfo) -> str:
    return (f"✅ Axi, rétabli — {component_words(path)} : ça refonctionne (panne du "
            f"{_when(since, tz)} au {_when(until, tz)}, {_lasted(since, until)}).")


def past_outage_text(path: str, reason: str, since: datetime, until: datetime,
                     tz: ZoneInfo) -> str:
    """An outage that ended before the alert could be queued (the database itself: every
    message goes through it)."""
    because = " : mes messages passent par la base de données" if path == "database" else ""
    return (f"⚠️ Axi, panne terminée — {component_words(path)} : en panne du "
            f"{_when(since, tz)} au {_when(until, tz)} ({_lasted(since, until)} ; {reason}). "
            f"Ça refonctionne. Je n'ai pas pu te prévenir pendant la panne{because}.")


def outage_subject(path: str, *, recovered: bool) -> str:
    what = component_words(path)
    return f"Axi : {what} refonctionne" if recovered else f"Alerte Axi : {what} en panne"
