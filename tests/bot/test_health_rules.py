"""The rules of /health and of the component alerts, pure (bot/health_rules.py,
bot/monitor.py's OutageTracker): what makes the answer 503, that a part not configured is
never a failure, the thresholds of backups and verifications, and the debounce that
keeps a blip or a flapping component from alerting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot import health_rules as rules
from bot.monitor import OutageTracker, classify

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def healthy() -> dict[str, Any]:
    return {
        "database": rules.database(None, 1.2),
        "llm_local": rules.llm_local({"state": "ok"}, "closed", "mistral"),
        "llm_fallback": rules.llm_fallback(True, "claude", 1.0, 20.0),
        "channels": {"telegram": rules.supervised("ok", 0, None, {}),
                     "web": rules.supervised("ok", 0, None, {"port": 5000})},
        "scheduler": {"veilles": rules.supervised("ok", 0, None, {})},
        "loops": rules.loops([]),
        "queues": rules.queues({"inbox": 0, "outbox": 0}, {"inbox": None, "outbox": None}, 0),
        "backup": {"local": rules.operation("sauvegarde", "local", configured=False,
                                            state=None, at=None, error=None, last_ok=None,
                                            now=NOW, max_age=timedelta(hours=26))},
        "veilles": {},
    }


def test_all_well_and_unconfigured_parts_are_ok() -> None:
    components = healthy()
    assert components["backup"]["local"]["status"] == "disabled"
    assert rules.assess(components) == ("ok", [])


def test_what_stops_axi_from_serving_people_is_an_error() -> None:
    for path, broken in [
        ("database", rules.database("ConnectionRefusedError", None)),
        ("channels", {"telegram": rules.supervised("restarting", 3, "TimedOut", {})}),
        ("queues", rules.queues({"inbox": 2}, {"inbox": 3600.0}, 1)),
        ("loops", rules.loops(["outbox"])),
    ]:
        components = healthy()
        components[path] = broken
        status, reasons = rules.assess(components)
        assert status == "error", path
        assert len(reasons) == 1 and reasons[0].startswith(path), reasons


def test_the_local_model_down_is_an_error_only_without_a_usable_fallback() -> None:
    components = healthy()
    components["llm_local"] = rules.llm_local({"state": "unreachable", "detail": "refused"},
                                              "closed", "mistral")
    assert rules.assess(components)[0] == "degraded"  # Claude answers meanwhile
    components["llm_fallback"] = rules.llm_fallback(False, "claude", None, 20.0)
    assert rules.assess(components)[0] == "error"
    components["llm_fallback"] = rules.llm_fallback(True, "claude", 20.0, 20.0)  # budget spent
    status, reasons = rules.assess(components)
    assert status == "error"
    assert any("budget Claude du mois atteint" in r for r in reasons)
    components["llm_local"] = rules.llm_local({"state": "ok"}, "open", "mistral")
    assert components["llm_local"]["status"] == "error"


def test_background_parts_degrade_without_503() -> None:
    for path, value in [
        ("scheduler", {"veilles": rules.supervised("restarting", 1, "boom", {})}),
        ("loops", rules.loops(["extractor"])),
        ("queues", rules.queues({"inbox": 1}, {"inbox": 16 * 60.0}, 0)),
        ("veilles", {"dpe": rules.veille("partiel", NOW, "source 24260 en panne", None, None)}),
    ]:
        components = healthy()
        components[path] = value
        assert rules.assess(components)[0] == "degraded", path


def test_backup_and_verify_thresholds() -> None:
    def backup(age_h: float, **kw: Any) -> dict[str, Any]:
        return rules.operation("sauvegarde", "local", configured=True,
                               state=kw.get("state", "ok"), at=kw.get("at"),
                               error=kw.get("error"), last_ok=NOW - timedelta(hours=age_h),
                               now=NOW, max_age=rules.Thresholds().backup_max_age)

    assert backup(25)["status"] == "ok" and backup(25)["age_hours"] == 25.0
    late = backup(27)
    assert late["status"] == "degraded"
    assert late["reason"] == "dernière sauvegarde réussie il y a 27 h (plus de 26 h)"
    failed = backup(2, state="echec", at=NOW - timedelta(hours=1), error="disque plein")
    assert failed["status"] == "degraded" and "disque plein" in failed["reason"]
    never = rules.operation("verification", "distant", configured=True, state=None, at=None,
                            error=None, last_ok=None, now=NOW,
                            max_age=rules.Thresholds().verify_max_age)
    assert never["status"] == "degraded" and "aucune vérification réussie" in never["reason"]
    week = rules.operation("verification", "local", configured=True, state="ok", at=None,
                           error=None, last_ok=NOW - timedelta(days=7, hours=23), now=NOW,
                           max_age=rules.Thresholds().verify_max_age)
    assert week["status"] == "ok"
    off = rules.operation("sauvegarde", "distant", configured=False, state=None, at=None,
                          error=None, last_ok=None, now=NOW, max_age=timedelta(hours=26))
    assert off == {"status": "disabled",
                   "reason": "aucun dépôt configuré (AXI_BACKUP_REMOTE_REPOSITORY absent)"}


# ------------------------------------------------------------------ the alerts' debounce
def test_a_blip_says_nothing_and_a_lasting_outage_is_told_once() -> None:
    tracker = OutageTracker(confirm_after=timedelta(minutes=1))
    t = NOW
    assert tracker.observe({"database": "x"}, set(), t) == []
    assert tracker.observe({}, {"database"}, t + timedelta(seconds=30)) == []
    assert tracker.observe({}, {"database"}, t + timedelta(seconds=60)) == []  # blip over
    assert tracker.outages == {}

    assert tracker.observe({"database": "x"}, set(), t) == []
    assert tracker.observe({"database": "x"}, set(), t + timedelta(seconds=30)) == []
    [event] = tracker.observe({"database": "y"}, set(), t + timedelta(seconds=60))
    assert (event.kind, event.since, event.reason) == ("panne", t, "y")
    # not told yet (notify failed): said again at the next probe
    assert [e.kind for e in tracker.observe({"database": "y"}, set(),
                                            t + timedelta(seconds=90))] == ["panne"]
    tracker.told("database")
    assert tracker.observe({"database": "y"}, set(), t + timedelta(seconds=120)) == []


def test_flapping_is_one_outage_and_recovery_needs_two_good_probes() -> None:
    tracker = OutageTracker(confirm_after=timedelta(seconds=30), recover_probes=2)
    t = NOW
    tracker.observe({"channels.telegram": "x"}, set(), t)
    [panne] = tracker.observe({"channels.telegram": "x"}, set(), t + timedelta(seconds=30))
    tracker.told(panne.component)
    for i in range(2, 8):  # ok, broken, ok, broken…: still the same outage
        if i % 2:
            assert tracker.observe({"channels.telegram": "x"}, set(),
                                   t + timedelta(seconds=30 * i)) == []
        else:
            assert tracker.observe({}, {"channels.telegram"},
                                   t + timedelta(seconds=30 * i)) == []
    assert tracker.observe({}, {"channels.telegram"}, t + timedelta(seconds=300)) == []
    [back] = tracker.observe({}, {"channels.telegram"}, t + timedelta(seconds=330))
    assert (back.kind, back.since, back.until) == ("retour", t, t + timedelta(seconds=300))


def test_an_outage_never_told_is_told_once_after_it_ended() -> None:
    tracker = OutageTracker(confirm_after=timedelta(seconds=30), recover_probes=1)
    tracker.observe({"database": "refusée"}, set(), NOW)
    tracker.observe({"database": "refusée"}, set(), NOW + timedelta(seconds=30))  # untold
    [past] = tracker.observe({}, {"database"}, NOW + timedelta(seconds=60))
    assert past.kind == "passee" and past.reason == "refusée"


def test_unreadable_components_neither_break_nor_recover() -> None:
    components = healthy()
    components["database"] = rules.database("OSError", None)
    components["queues"] = rules.unknown("base de données injoignable")
    failing, fine = classify({"components": components})
    assert failing == {"database": components["database"]["reason"]}
    assert "queues" not in fine and "backup.local" in fine and "channels.web" in fine
