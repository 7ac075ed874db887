"""The jobs `axi run` starts (the composition root of `jobs/`, as channels/registry.py is
for the channels): the veilles' scheduler, with Axi's own tasks on it (the daily backup and
the weekly verification when a backup repository is configured; maintenance later).
Imported only lazily by `axi run`, so other commands load neither httpx nor APScheduler.
"""

from __future__ import annotations

from bot.config import Settings
from bot.jobs_contract import Job
from jobs.backup_schedule import BackupTasks
from jobs.scheduler import VeilleScheduler


def for_run(settings: Settings) -> list[Job]:
    return [VeilleScheduler(tasks=BackupTasks().tasks(settings))]
