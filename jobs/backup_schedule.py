"""The daily backup and the weekly verification as tasks of Axi's one scheduler
(jobs/scheduler.py `FixedTask`), built by jobs/registry.py for `axi run`.

Why here: the schedules come from the settings (AXI_BACKUP_SCHEDULE, default 03:30 every
day; AXI_BACKUP_VERIFY_SCHEDULE, default Sunday 05:00), and there are no tasks at all
when no repository is configured. The two never overlap in this process (one waits for
the other) nor across processes (jobs/backup.py's advisory lock). A backup missed while
Axi was down runs once at start; so does a missed verification, once a backup exists.
Each run records, alerts and pings by itself (jobs/backup.py); here failures are logged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from bot.config import Settings
from bot.jobs_contract import JobServices
from jobs.backup import Backups, Report
from jobs.backup_rules import BackupError
from jobs.scheduler import FixedTask

log = logging.getLogger(__name__)


class BackupTasks:
    def __init__(self) -> None:
        self._one_at_a_time = asyncio.Lock()
        self.last: dict[str, Report] = {}

    def tasks(self, settings: Settings) -> list[FixedTask]:
        if not (settings.backup_repository or "").strip():
            if (settings.backup_remote_repository or "").strip():
                log.warning("AXI_BACKUP_REMOTE_REPOSITORY sans AXI_BACKUP_REPOSITORY : pas de "
                            "sauvegarde planifiée / no backup scheduled without the local "
                            "repository")
            return []
        return [FixedTask("sauvegarde", settings.backup_schedule, self.backup,
                          missed=self._backup_missed),
                FixedTask("verification", settings.backup_verify_schedule, self.verify,
                          missed=self._verify_missed)]

    async def backup(self, services: JobServices) -> Report | None:
        return await self._run("sauvegarde", services)

    async def verify(self, services: JobServices) -> Report | None:
        return await self._run("verification", services)

    async def _run(self, type_: str, services: JobServices) -> Report | None:
        backups = Backups(services.store, services.settings, notify=services.notify,
                          clock=services.clock)
        async with self._one_at_a_time:
            try:
                report = await (backups.backup() if type_ == "sauvegarde"
                                else backups.verify())
            except BackupError as exc:  # another process holds the lock, no repository…
                log.warning("%s non lancée / not run: %s", type_, exc.en)
                return None
        self.last[type_] = report
        for outcome in report.outcomes:
            if outcome.ok:
                log.info("%s (%s) ok%s in %.0f s", type_, outcome.depot,
                         f", snapshot {outcome.snapshot}" if outcome.snapshot else "",
                         report.seconds)
            else:
                log.warning("%s (%s) en échec / failed: %s", type_, outcome.depot,
                            outcome.error.en if outcome.error else "?")
        return report

    @staticmethod
    async def _backup_missed(services: JobServices, due: datetime) -> bool:
        started = await services.store.last_started("sauvegarde")
        return started is None or started < due

    @staticmethod
    async def _verify_missed(services: JobServices, due: datetime) -> bool:
        if await services.store.last_good_operation("sauvegarde", "local") is None:
            return False  # nothing to verify yet
        started = await services.store.last_started("verification")
        return started is None or started < due
