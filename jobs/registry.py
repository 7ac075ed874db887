"""The jobs `axi run` starts (the composition root of `jobs/`, as channels/registry.py is
for the channels): today the veilles' scheduler, later backups and maintenance on it.
Imported only lazily by `axi run`, so other commands load neither httpx nor APScheduler.
"""

from __future__ import annotations

from bot.config import Settings
from bot.jobs_contract import Job
from jobs.scheduler import VeilleScheduler


def for_run(settings: Settings) -> list[Job]:
    del settings  # every job reads its settings from JobServices when it starts
    return [VeilleScheduler()]
