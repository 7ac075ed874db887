"""Axi's one scheduler: runs each active veille on its cron schedule (Europe/Paris).

Why this shape (issue 12, DESIGN "Veilles"): APScheduler's SQLAlchemy job store is
synchronous and pickles jobs, while Axi's truth is its own tables; so the jobs live in
memory and are rebuilt from `veilles` at start and whenever a veille changes (its
`maj_le`, polled). `coalesce=True` and `max_instances=1`: a late or piled-up schedule runs
once. A schedule missed while Axi was down runs once at start (not once per missed
day), computed from the runs table. Cron times are wall-clock times: a time that does not
exist on the spring DST day fires once (at the shifted instant) and a time that happens
twice on the autumn day fires once (`DstSafeCron`).

Axi's own tasks (the daily backup and the weekly verification, later maintenance) run on
this same scheduler as `FixedTask`s: their schedule comes from the settings (checked by
`jobs.cron.check_schedule`), they survive the veilles' rebuilds, and one missed while Axi
was down runs once at start when the task says it is due (`missed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from bot.jobs_contract import JobServices
from jobs.cron import ScheduleError, check_schedule, crontab_fields
from jobs.engine import Engine, RunResult
from memory.veilles import VeilleRow

log = logging.getLogger(__name__)

POLL_S = 60.0
MISFIRE_GRACE_S = 1800
"""A fire delayed this long (the loop busy, the machine asleep) still runs."""
_LOOKBACK_DAYS = (2, 9, 33, 367)
TASK_PREFIX = "tache:"


@dataclass(frozen=True)
class FixedTask:
    """A task of Axi's own on the scheduler (not a veille)."""

    name: str
    horaire: str
    run: Callable[[JobServices], Awaitable[Any]]
    missed: Callable[[JobServices, datetime], Awaitable[bool]] | None = None
    """Given the schedule's latest fire time before start: should it run once now?"""


class DstSafeCron(CronTrigger):
    """A cron trigger that fires once for a wall-clock time the autumn DST change makes
    happen twice (APScheduler would fire at both instants)."""

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        nxt = super().get_next_fire_time(previous_fire_time, now)
        # the second occurrence of a repeated wall-clock time never fires: the first did
        # (or, if Axi was down then, the catch-up at start runs it) — also when the jobs
        # were rebuilt between the two (at start, or on any veille's edit)
        while nxt is not None and self._repeated(nxt):
            nxt = super().get_next_fire_time(nxt, nxt)
        return nxt

    def _repeated(self, when: datetime) -> bool:
        """`when` is the later of two instants with the same wall-clock time (the hour the
        autumn change repeats)."""
        local = when.astimezone(self.timezone).replace(tzinfo=None)
        first = local.replace(tzinfo=self.timezone, fold=0)
        return first.astimezone(UTC) < when.astimezone(UTC)


def trigger_for(horaire: str, tz: tzinfo) -> DstSafeCron:
    """The trigger of a crontab line (weekdays as crontab numbers them)."""
    return DstSafeCron(**crontab_fields(horaire), timezone=tz)


def fire_times(horaire: str, tz: tzinfo, start: datetime, end: datetime) -> list[datetime]:
    """Every fire time in [start, end] (pure)."""
    trigger = trigger_for(horaire, tz)
    times: list[datetime] = []
    t = trigger.get_next_fire_time(None, start)
    while t is not None and t <= end:
        times.append(t)
        t = trigger.get_next_fire_time(t, t)
    return times


def last_fire_at_or_before(horaire: str, tz: tzinfo, now: datetime) -> datetime | None:
    """The schedule's latest fire time not after `now` (pure); None within a year."""
    for days in _LOOKBACK_DAYS:
        trigger = trigger_for(horaire, tz)
        t = trigger.get_next_fire_time(None, now - timedelta(days=days))
        last = None
        while t is not None and t <= now:
            last = t
            t = trigger.get_next_fire_time(t, t)
        if last is not None:
            return last
    return None


class VeilleScheduler:
    """The veilles' Job (bot.jobs_contract): started and supervised by `Axi`."""

    name = "veilles"

    def __init__(self, *, poll_s: float = POLL_S, kind_for: Any = None,
                 tasks: Sequence[FixedTask] = ()):
        self.poll_s = poll_s
        self.kind_for = kind_for
        self.tasks = list(tasks)
        self.task_errors: dict[str, str] = {}
        self.services: JobServices | None = None
        self.engine: Engine | None = None
        self.scheduler: AsyncIOScheduler | None = None
        self.tz: tzinfo = ZoneInfo("Europe/Paris")
        self._version: tuple[int, datetime | None] | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self.last_results: dict[str, RunResult] = {}
        self._stopped = asyncio.Event()

    async def start(self, services: JobServices) -> None:
        if self.scheduler is not None:
            await self.stop()
        self.services = services
        self.tz = ZoneInfo(services.settings.timezone)
        self.engine = Engine(services, kind_for=self.kind_for)
        self._stopped = asyncio.Event()
        self.scheduler = AsyncIOScheduler(
            timezone=self.tz, job_defaults={"coalesce": True, "max_instances": 1,
                                            "misfire_grace_time": MISFIRE_GRACE_S})
        self.scheduler.start()
        self._add_tasks()
        await self.rebuild()
        await self.catch_up()
        await self.catch_up_tasks()

    async def run(self) -> None:
        """Poll `veilles` and rebuild the jobs when a veille was added or changed."""
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), self.poll_s)
            if self._stopped.is_set():
                return
            await self.rebuild(only_if_changed=True)

    async def stop(self) -> None:
        self._stopped.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        for task in tasks:  # each records its interrupted run
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ jobs
    async def rebuild(self, *, only_if_changed: bool = False) -> bool:
        assert self.services is not None
        store = self.services.store
        version = await store.veilles_version()
        if self.scheduler is None or (only_if_changed and version == self._version):
            return False  # stopped meanwhile, or nothing changed
        veilles = await store.list_veilles(active_only=True)
        if self.scheduler is None:
            return False
        self._version = version
        for job in self.scheduler.get_jobs():  # and add them again, with no await between
            if job.id.startswith("veille:"):
                job.remove()
        for veille in veilles:
            try:
                trigger = trigger_for(veille.horaire, self.tz)
            except (ValueError, TypeError) as exc:
                log.warning("veille %s: schedule %r unusable (%s): not scheduled", veille.nom,
                            veille.horaire, exc)
                continue
            self.scheduler.add_job(self._scheduled, trigger=trigger, args=[veille.nom],
                                   id=f"veille:{veille.nom}", name=veille.nom,
                                   replace_existing=True)
        log.info("veilles scheduled: %s", ", ".join(
            f"{j.name} ({j.next_run_time:%Y-%m-%d %H:%M})" for j in self.scheduler.get_jobs()
            if j.id.startswith("veille:")) or "none")
        return True

    # ------------------------------------------------------------------ Axi's own tasks
    def _add_tasks(self) -> None:
        assert self.scheduler is not None
        self.task_errors = {}
        for task in self.tasks:
            try:
                horaire = check_schedule(task.horaire)
            except ScheduleError as exc:
                self.task_errors[task.name] = str(exc)
                log.error("tâche %s non planifiée / task not scheduled: %s", task.name, exc)
                continue
            self.scheduler.add_job(self._scheduled_task, trigger=trigger_for(horaire, self.tz),
                                   args=[task], id=f"{TASK_PREFIX}{task.name}", name=task.name,
                                   replace_existing=True)
            log.info("task %s scheduled (%s)", task.name, horaire)

    async def catch_up_tasks(self) -> list[str]:
        """Launch once each task whose latest schedule was missed (the task decides)."""
        assert self.services is not None
        now = self.services.clock()
        launched = []
        for task in self.tasks:
            if task.missed is None or task.name in self.task_errors:
                continue
            try:
                due = last_fire_at_or_before(task.horaire, self.tz, now)
                if due is not None and await task.missed(self.services, due):
                    launched.append(task.name)
                    self._launch_task(task)
            except Exception as exc:  # the database is down…: the schedule still runs
                log.warning("task %s: catch-up not decided: %s", task.name, exc)
        return launched

    async def _scheduled_task(self, task: FixedTask) -> None:
        running = self._launch_task(task)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(running)

    def _launch_task(self, task: FixedTask) -> asyncio.Task[Any]:
        running = asyncio.create_task(self._run_task(task), name=f"{TASK_PREFIX}{task.name}")
        self._running.add(running)
        running.add_done_callback(self._running.discard)
        return running

    async def _run_task(self, task: FixedTask) -> None:
        assert self.services is not None
        try:
            await task.run(self.services)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the task records and reports its own failures
            log.warning("task %s failed: %s: %s", task.name, type(exc).__name__, exc)

    async def catch_up(self) -> list[str]:
        """Launch once each active veille whose latest schedule has no run at or after it
        (a veille created after that schedule has nothing to catch up)."""
        assert self.services is not None
        store = self.services.store
        now = self.services.clock()
        launched = []
        for veille in await store.list_veilles(active_only=True):
            due = self.missed(veille, now)
            if due is not None and not await store.ran_since(veille.id, due):
                launched.append(veille.nom)
                self._launch(veille.nom, "rattrapage", due)
        return launched

    def missed(self, veille: VeilleRow, now: datetime) -> datetime | None:
        try:
            last = last_fire_at_or_before(veille.horaire, self.tz, now)
        except (ValueError, TypeError):
            return None
        return last if last is not None and last >= veille.cree_le else None

    async def _scheduled(self, nom: str) -> None:
        """APScheduler's job: the run for the schedule that just fired."""
        assert self.services is not None
        veille_horaire = None
        with contextlib.suppress(Exception):
            veille = await self.services.store.get_veille(nom)
            if not veille.active:  # disabled since the jobs were last rebuilt
                log.info("veille %s disabled: its scheduled run is skipped", nom)
                return
            veille_horaire = veille.horaire
        planned = (last_fire_at_or_before(veille_horaire, self.tz, self.services.clock())
                   if veille_horaire else None)
        task = self._launch(nom, "planifie", planned)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)

    def _launch(self, nom: str, trigger: str, planned: datetime | None) -> asyncio.Task[Any]:
        task = asyncio.create_task(self._run_one(nom, trigger, planned), name=f"veille-{nom}")
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    async def _run_one(self, nom: str, trigger: str, planned: datetime | None) -> None:
        assert self.engine is not None
        try:
            result = await self.engine.run(nom, trigger=trigger, planned_for=planned)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the veille vanished, the database is down…
            log.warning("veille %s (%s) not run: %s", nom, trigger, exc)
            return
        self.last_results[nom] = result
        log.info("veille %s (%s): %s, %d seen, %d new%s", nom, trigger, result.state,
                 result.seen, result.new, f" — {result.error}" if result.error else "")

    @property
    def running(self) -> list[str]:
        return sorted(t.get_name().removeprefix("veille-") for t in self._running
                      if not t.done())

    def describe(self) -> dict[str, Any]:
        """For /health: each scheduled veille's next run, the ones running now, and the
        next run of Axi's own tasks (or why one is not scheduled)."""
        jobs = self.scheduler.get_jobs() if self.scheduler is not None else []
        report: dict[str, Any] = {"next_runs": {j.name: j.next_run_time.isoformat() for j in jobs
                                if j.next_run_time is not None and j.id.startswith("veille:")},
                  "running": self.running,
                  "last": {n: r.state for n, r in sorted(self.last_results.items())}}
        if self.tasks:
            tasks = {j.name: j.next_run_time.isoformat() for j in jobs
                     if j.next_run_time is not None and j.id.startswith(TASK_PREFIX)}
            tasks.update({n: f"non planifiée : {e}" for n, e in self.task_errors.items()})
            report["tasks"] = tasks
        return report
