"""The rules of `/health` (issue 13 §2), pure: what each component's figures mean (ok,
degraded, error, disabled, unknown, with a French reason), and what the whole answer is.

Why pure and in one place: `/health` (Uptime Kuma), `/metrics`, the component alerts
(bot/monitor.py) and later `axi status` / `axi doctor` must all read a component the same
way; the gathering (bot/health.py) only collects figures.

Statuses of a component ("leaf"): `ok`; `degraded` (works, but someone should look);
`error` (broken); `disabled` (not configured: never a failure); `unknown` (could not be
read, e.g. while the database is away).

The whole answer, for a monitor that only sees 200 or 503:
- `error` → HTTP 503, only for what stops Axi from serving people: the database is
  unreachable; a configured channel is down (restarting); a message is stuck (waited
  15 min after 3 attempts); the worker or the outbox loop stopped; the local model is
  broken (breaker open, server unreachable, model missing) while no usable fallback
  (Claude not configured, or its monthly budget spent) can answer instead.
- `degraded` → HTTP 200, with the reasons: any other component not ok — the local model
  broken while Claude answers instead, the Claude budget spent, the scheduler down (the
  veilles' push monitor notices it too), a background loop stopped (extraction,
  maintenance, embeddings), the oldest message waiting more than 15 minutes, a backup
  older than 26 h or a verification older than 8 days (or the last attempt failed, or
  none ever succeeded) for a configured repository, a veille whose last run failed or was
  partial (its own alerts tell Ludo).
- `ok` → HTTP 200.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

Status = Literal["ok", "degraded", "error", "disabled", "unknown"]
OK: Status = "ok"
DEGRADED: Status = "degraded"
ERROR: Status = "error"
DISABLED: Status = "disabled"
UNKNOWN: Status = "unknown"

CRITICAL_LOOPS = frozenset({"worker", "outbox"})
"""Loops without which nobody gets an answer (the others are background work)."""


@dataclass(frozen=True)
class Thresholds:
    backup_max_age: timedelta = timedelta(hours=26)
    """A daily backup, plus two hours of slack (a slow night, the DST change)."""
    verify_max_age: timedelta = timedelta(days=8)
    """A weekly verification, plus a day."""
    waiting_max: timedelta = timedelta(minutes=15)
    """The oldest message waiting longer than this: someone should look (the local model
    answers in minutes at worst; a stuck message is an error of its own)."""


def leaf(status: Status, reason: str | None = None, **details: Any) -> dict[str, Any]:
    """One component as /health shows it: its status, the French reason when it is not
    ok, and its figures."""
    return {"status": status, **({"reason": reason} if reason else {}), **details}


def unknown(reason: str) -> dict[str, Any]:
    return leaf(UNKNOWN, reason)


def _age_text(age: timedelta) -> str:
    hours = age.total_seconds() / 3600
    if hours < 48:
        return f"{hours:.0f} h"
    return f"{hours / 24:.0f} jours"


# ------------------------------------------------------------------ components
def database(error: str | None, latency_ms: float | None) -> dict[str, Any]:
    if error is not None:
        return leaf(ERROR, f"base de données injoignable ({error})")
    return leaf(OK, latency_ms=None if latency_ms is None else round(latency_ms, 1))


def llm_local(probe: Mapping[str, Any] | None, breaker: str, model: str, *,
              gate: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The local model: Ollama's answer to a listing (probe), the router's breaker, and
    its gate (llm/gate.py: who holds and waits, the inner-circle reserve and how long it
    still runs), shown as figures."""
    state = (probe or {}).get("state", "unknown")
    detail = (probe or {}).get("detail")
    figures: dict[str, Any] = {"model": model, "breaker": breaker, "probe": state}
    if gate is not None:
        figures["gate"] = dict(gate)
    if breaker == "open":
        return leaf(ERROR, "le modèle local a échoué plusieurs fois de suite (disjoncteur "
                    "ouvert) : les messages passent par le repli ou attendent", **figures)
    if state == "unreachable":
        return leaf(ERROR, f"serveur Ollama injoignable ({detail})", **figures)
    if state == "model missing":
        return leaf(ERROR, f"modèle {model} absent d'Ollama ({detail})", **figures)
    if state != "ok":
        return leaf(UNKNOWN, f"état du modèle local inconnu ({detail or state})", **figures)
    if breaker == "half_open":
        return leaf(DEGRADED, "le modèle local est remis à l'essai après des échecs",
                    **figures)
    return leaf(OK, **figures)


def llm_fallback(configured: bool, model: str, spent_eur: float | None,
                 budget_eur: float) -> dict[str, Any]:
    if not configured:
        return leaf(DISABLED, "pas de repli Claude (ANTHROPIC_API_KEY absent)")
    figures: dict[str, Any] = {"model": model, "budget_eur": budget_eur,
               "spent_this_month_eur": None if spent_eur is None else round(spent_eur, 2)}
    if spent_eur is None:
        return leaf(UNKNOWN, "dépense Claude du mois illisible", **figures)
    if spent_eur >= budget_eur:
        return leaf(DEGRADED, f"budget Claude du mois atteint ({spent_eur:.2f} € sur "
                    f"{budget_eur:.2f} €) : plus de repli jusqu'au mois prochain", **figures)
    return leaf(OK, **figures)


def supervised(state: str, restarts: int, last_error: str | None,
               details: Mapping[str, Any]) -> dict[str, Any]:
    """A channel or a job, as the core supervises it (bot/app.py)."""
    figures: dict[str, Any] = {"state": state, "restarts": restarts,
               **({"error": last_error} if last_error else {}), **details}
    if state in {"ok", "starting"}:
        return leaf(OK, **figures)
    why = f" après : {last_error}" if last_error else ""
    return leaf(ERROR, f"arrêté, relance en cours{why}", **figures)


def loops(stopped: list[str]) -> dict[str, Any]:
    critical = sorted(set(stopped) & CRITICAL_LOOPS)
    if critical:
        return leaf(ERROR, f"boucle(s) arrêtée(s) : {', '.join(critical)} — plus personne "
                    "n'a de réponse", stopped=sorted(stopped))
    if stopped:
        return leaf(DEGRADED, f"tâche(s) de fond arrêtée(s) : {', '.join(sorted(stopped))}",
                    stopped=sorted(stopped))
    return leaf(OK, stopped=[])


def queues(depths: Mapping[str, int], oldest_s: Mapping[str, float | None], stuck: int,
           thresholds: Thresholds = Thresholds(), *, uncertain_sends: int = 0
           ) -> dict[str, Any]:
    """`uncertain_sends`: messages of the last 24 h that may have been delivered and were
    not sent again (bot/pipeline.py): shown, not a fault in themselves."""
    figures: dict[str, Any] = {"depths": dict(depths),
               "oldest_waiting_s": {k: None if v is None else round(v, 1)
                                    for k, v in oldest_s.items()},
               "stuck": stuck, "uncertain_sends_24h": uncertain_sends}
    if stuck:
        return leaf(ERROR, f"{stuck} message(s) bloqué(s) (plus de 15 min et 3 essais) : "
                    "voir `axi inbox list`", **figures)
    limit = thresholds.waiting_max.total_seconds()
    late = [name for name, age in oldest_s.items() if age is not None and age > limit]
    if late:
        worst = max(oldest_s[name] or 0.0 for name in late)
        return leaf(DEGRADED, f"file {', '.join(sorted(late))} : le plus ancien message "
                    f"attend depuis {worst / 60:.0f} min", **figures)
    return leaf(OK, **figures)


OPERATION_WORDS = {"sauvegarde": ("sauvegarde", "AXI_BACKUP_REPOSITORY"),
                   "verification": ("vérification", "AXI_BACKUP_REPOSITORY")}
REMOTE_SETTING = "AXI_BACKUP_REMOTE_REPOSITORY"


def operation(kind: str, repository: str, *, configured: bool, state: str | None,
              at: datetime | None, error: str | None, last_ok: datetime | None,
              now: datetime, max_age: timedelta) -> dict[str, Any]:
    """A backup or a verification of one repository (`local`, `distant`): the age of its
    last good run against `max_age`, and its last attempt."""
    word, setting = OPERATION_WORDS[kind]
    if repository == "distant":
        setting = REMOTE_SETTING
    if not configured:
        return leaf(DISABLED, f"aucun dépôt configuré ({setting} absent)")
    age = None if last_ok is None else now - last_ok
    figures: dict[str, Any] = {"last_ok_at": last_ok.isoformat() if last_ok else None,
               "age_hours": None if age is None else round(age.total_seconds() / 3600, 1),
               "last_state": state, "last_at": at.isoformat() if at else None}
    if state == "echec" and (last_ok is None or (at is not None and at > last_ok)):
        return leaf(DEGRADED, f"dernière {word} en échec : {error or 'sans détail'}",
                    **figures)
    if age is None:
        return leaf(DEGRADED, f"aucune {word} réussie pour l'instant", **figures)
    if age > max_age:
        return leaf(DEGRADED, f"dernière {word} réussie il y a {_age_text(age)} (plus de "
                    f"{_age_text(max_age)})", **figures)
    return leaf(OK, **figures)


def veille(state: str | None, started: datetime | None, error: str | None,
           last_ok: datetime | None, next_run: str | None) -> dict[str, Any]:
    figures: dict[str, Any] = {"last_state": state, "last_run_at": started.isoformat() if started else None,
               "last_ok_at": last_ok.isoformat() if last_ok else None, "next_run": next_run}
    if state == "echec":
        return leaf(DEGRADED, f"dernier passage en échec : {error or 'sans détail'}",
                    **figures)
    if state == "partiel":
        return leaf(DEGRADED, f"dernier passage partiel : {error or 'sans détail'}",
                    **figures)
    return leaf(OK, **figures)


# ------------------------------------------------------------------ the whole answer
def walk(components: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every leaf with its path (`database`, `channels.telegram`, `veilles.dpe`)."""
    for name, value in components.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping) and "status" in value:
            yield path, dict(value)
        elif isinstance(value, Mapping):
            yield from walk(value, path + ".")


def _fatal(path: str, value: Mapping[str, Any], components: Mapping[str, Any]) -> bool:
    if value.get("status") != ERROR:
        return False
    group = path.split(".", 1)[0]
    if group in {"database", "channels", "queues", "loops"}:
        return True
    if group == "llm_local":
        fallback = components.get("llm_fallback") or {}
        return fallback.get("status") != OK
    return False


def assess(components: Mapping[str, Any]) -> tuple[Status, list[str]]:
    """The whole status (error ⇔ HTTP 503) and the French reasons of every component that
    is not ok (disabled ones excepted)."""
    status: Status = OK
    reasons = []
    for path, value in walk(components):
        if value["status"] in (OK, DISABLED):
            continue
        reasons.append(f"{path} : {value.get('reason') or value['status']}")
        if _fatal(path, value, components):
            status = ERROR
        elif status == OK:
            status = DEGRADED
    return status, reasons

