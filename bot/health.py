"""Assembling Axi's health report (issue 13 §2): every component's figures, gathered
here, judged by bot/health_rules.py (which also documents when the answer is 503).

Why its own module: `/health` (for Uptime Kuma), `/metrics`, the component monitor
(bot/monitor.py) and the operator's commands read one report, built one way. The database
is pinged first with a short timeout: when it is away, the parts read from it are
`unknown` instead of each waiting for it, so the answer still comes in time.

The report (JSON keys English, reasons French):
    {"status": "ok|degraded|error", "reasons": ["llm_local : …"], "checked_at": …,
     "since": …, "components": {"database": {…}, "llm_local": {…}, "llm_fallback": {…},
     "channels": {name: {…}}, "scheduler": {job: {…}}, "loops": {…}, "queues": {…},
     "backup": {"local": {…}, "distant": {…}}, "verify": {…}, "veilles": {name: {…}}}}
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text

from bot import health_rules as rules
from bot.config import Settings
from llm.router import Router
from memory.store import MemoryStore

log = logging.getLogger(__name__)

DATABASE_TIMEOUT_S = 3.0
LLM_PROBE_TIMEOUT_S = 4.0
DB_AWAY = "base de données injoignable"


@dataclass(frozen=True)
class Supervised:
    """A supervised channel or job as the core sees it now."""

    state: str
    restarts: int = 0
    last_error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Runtime:
    """What only the running process knows: its channels, jobs and loops."""

    channels: Mapping[str, Supervised]
    jobs: Mapping[str, Supervised]
    stopped_loops: list[str]


def describe(obj: Any) -> dict[str, Any]:
    """What a channel or job says of itself (optional `describe()`), never fatal."""
    method = getattr(obj, "describe", None)
    if method is None:
        return {}
    try:
        return dict(method())
    except Exception as exc:
        return {"describe_error": type(exc).__name__}


def _why(exc: BaseException) -> str:
    return type(exc).__name__ if isinstance(exc, TimeoutError) else (
        f"{type(exc).__name__}: {exc}".splitlines()[0][:200])


class HealthService:
    def __init__(self, *, store: MemoryStore, settings: Settings, router: Router,
                 runtime: Callable[[], Runtime], started_at: datetime,
                 clock: Callable[[], datetime],
                 thresholds: rules.Thresholds = rules.Thresholds()):
        self.store = store
        self.settings = settings
        self.router = router
        self.runtime = runtime
        self.started_at = started_at
        self.clock = clock
        self.thresholds = thresholds

    async def report(self) -> dict[str, Any]:
        now = self.clock()
        database = await self._ping()
        db_ok = database["status"] == rules.OK
        components: dict[str, Any] = {"database": database}
        local, fallback = await asyncio.gather(self._llm_local(), self._llm_fallback(db_ok))
        components["llm_local"], components["llm_fallback"] = local, fallback
        runtime = self.runtime()
        components["channels"] = {name: rules.supervised(s.state, s.restarts, s.last_error,
                                                         s.details)
                                  for name, s in sorted(runtime.channels.items())}
        components["scheduler"] = {name: rules.supervised(s.state, s.restarts, s.last_error,
                                                          s.details)
                                   for name, s in sorted(runtime.jobs.items())}
        components["loops"] = rules.loops(runtime.stopped_loops)
        if db_ok:
            components.update(await self._from_database(now, runtime))
        else:
            for part in ("queues", "backup", "verify", "veilles"):
                components[part] = rules.unknown(DB_AWAY)
        status, reasons = rules.assess(components)
        return {"status": status, "reasons": reasons, "checked_at": now.isoformat(),
                "since": self.started_at.isoformat(), "components": components}

    # ------------------------------------------------------------------ parts
    async def _ping(self) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_S):
                async with self.store.db.engine.connect() as conn:
                    await conn.execute(text("SELECT 1"))
        except Exception as exc:
            return rules.database(_why(exc), None)
        return rules.database(None, (time.perf_counter() - began) * 1000)

    async def _llm_local(self) -> dict[str, Any]:
        local = self.router.local
        model = local.model_for("conversation")
        probe = getattr(local, "probe", None)
        result: Mapping[str, Any] | None = None
        if probe is not None:
            try:
                result = await asyncio.wait_for(probe(), LLM_PROBE_TIMEOUT_S)
            except Exception as exc:
                result = {"state": "unreachable", "detail": _why(exc)}
        gate = self.router.gate
        return rules.llm_local(result, self.router.breaker.state, model,
                               gate=None if gate is None else gate.snapshot())

    async def _llm_fallback(self, db_ok: bool) -> dict[str, Any]:
        cfg = self.settings
        configured = self.router.remote is not None
        spent = None
        if configured and db_ok:
            try:
                spent = await self.store.claude_spend_this_month(timezone=cfg.timezone)
            except Exception as exc:
                log.warning("health: Claude spend unreadable: %s", _why(exc))
        return rules.llm_fallback(configured, cfg.fallback_model, spent,
                                  cfg.claude_monthly_budget_eur)

    async def _from_database(self, now: datetime, runtime: Runtime) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        try:
            figures = await self.store.queue_figures()
            stuck = await self.store.stuck_count()
            parts["queues"] = rules.queues(figures.depths, figures.oldest_s, stuck,
                                           self.thresholds,
                                           uncertain_sends=await self.store.uncertain_sends())
        except Exception as exc:
            parts["queues"] = rules.unknown(f"files illisibles ({_why(exc)})")
        configured = {"local": bool(self.settings.backup_repository),
                      "distant": bool(self.settings.backup_remote_repository)}
        try:
            for part, kind, max_age in (
                    ("backup", "sauvegarde", self.thresholds.backup_max_age),
                    ("verify", "verification", self.thresholds.verify_max_age)):
                parts[part] = {}
                for depot in ("local", "distant"):
                    # an attempt cut by a stop of Axi is not a failure (memory/operations.py)
                    o = await self.store.last_operation(kind, depot, interrupted=False)
                    good = await self.store.last_good_operation(kind, depot)
                    parts[part][depot] = rules.operation(
                        kind, depot, configured=configured[depot],
                        state=o.etat if o else None, at=o.fin if o else None,
                        error=o.erreur if o else None, last_ok=good.fin if good else None,
                        now=now, max_age=max_age)
        except Exception as exc:
            parts["backup"] = parts["verify"] = rules.unknown(
                f"opérations illisibles ({_why(exc)})")
        next_runs: dict[str, str] = {}
        for job in runtime.jobs.values():
            next_runs.update(job.details.get("next_runs") or {})
        try:
            parts["veilles"] = {r.nom: rules.veille(r.etat, r.debut, r.erreur, r.dernier_ok,
                                                    next_runs.get(r.nom))
                                for r in await self.store.veille_last_runs()}
        except Exception as exc:
            parts["veilles"] = rules.unknown(f"passages illisibles ({_why(exc)})")
        return parts
