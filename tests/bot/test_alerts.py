"""The alert texts Ludo reads (pure)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from bot.alerts import budget_alert_key, budget_alert_text, euros

PARIS = ZoneInfo("Europe/Paris")


def test_euros_use_the_french_decimal_comma() -> None:
    assert euros(20) == "20,00 €"
    assert euros(1234.5) == "1 234,50 €"


def test_budget_alert_names_the_month_the_next_one_and_the_fix() -> None:
    now = datetime(2026, 12, 14, 9, 30, tzinfo=PARIS)
    text = budget_alert_text(spent_eur=20.43, limit_eur=20, now=now)
    assert "décembre 2026" in text and "1er janvier" in text
    assert "20,43 €" in text and "20,00 €" in text
    assert "AXI_CLAUDE_MONTHLY_BUDGET" in text
    assert "change AXI" in text and "vous" not in text  # Ludo is tutoyé


def test_budget_alert_key_is_per_month() -> None:
    assert budget_alert_key(datetime(2026, 11, 30, 23, 59, tzinfo=PARIS)) == "budget-claude:2026-11"
    assert budget_alert_key(datetime(2026, 12, 1, 0, 0, tzinfo=PARIS)) == "budget-claude:2026-12"
