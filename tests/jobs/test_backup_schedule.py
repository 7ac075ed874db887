"""The daily backup and the weekly verification on Axi's one scheduler (issue 13): their
times from AXI_BACKUP_SCHEDULE and AXI_BACKUP_VERIFY_SCHEDULE, no task at all without a
repository, a missed backup run once at start, a fired schedule running the real thing."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobs import registry
from jobs.backup_rules import BackupError
from jobs.backup_schedule import BackupTasks
from jobs.restic import Restic, Snapshot, repository_env
from jobs.scheduler import VeilleScheduler
from memory.store import MemoryStore
from tests.jobs.conftest import Clock, job_services
from tests.waiting import until

PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture
def restic_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    password = secrets.token_hex(12)
    monkeypatch.setenv("RESTIC_PASSWORD", password)
    monkeypatch.setenv("RESTIC_CACHE_DIR", str(tmp_path / "cache"))
    return password


async def test_backup_and_verify_run_on_the_schedules_of_the_settings(
        store: MemoryStore, tmp_path: Path, restic_password: str) -> None:
    await store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
    repository = tmp_path / "depot"
    services = job_services(store, Clock(datetime.now(UTC)),
                            AXI_BACKUP_REPOSITORY=str(repository),
                            AXI_DATA_DIR=str(tmp_path / "data"),
                            AXI_BACKUP_SCHEDULE="15 2 * * *",
                            AXI_BACKUP_VERIFY_SCHEDULE="0 6 * * 1")
    [scheduler] = registry.for_run(services.settings)
    assert isinstance(scheduler, VeilleScheduler)
    await scheduler.start(services)
    aps = scheduler.scheduler
    assert aps is not None
    try:
        backup = aps.get_job("tache:sauvegarde")
        verify = aps.get_job("tache:verification")
        assert backup.next_run_time.astimezone(PARIS).strftime("%H:%M") == "02:15"
        assert verify.next_run_time.astimezone(PARIS).strftime("%a %H:%M") == "Mon 06:00"
        assert set(scheduler.describe()["tasks"]) == {"sauvegarde", "verification"}

        # never backed up: the missed backup runs once at start (nothing to verify yet)
        await until(lambda: not scheduler.running, within=120, message="catch-up backup")
        restic = Restic(str(repository), "local",
                        env=repository_env(str(repository), None, dotenv=None))
        assert len(await restic.snapshots()) == 1
        assert [(o.type, o.etat) for o in await store.list_operations()] == [
            ("sauvegarde", "ok")]

        aps.modify_job("tache:verification", next_run_time=datetime.now(PARIS))
        await until(lambda: store.last_good_operation("verification", "local"), within=120,
                    message="the fired verification")
        aps.modify_job("tache:sauvegarde", next_run_time=datetime.now(PARIS))
        await until(lambda: _backups_ok(store, 2), within=120, message="the fired backup")
        second, first = [o.instantane for o in await store.list_operations()
                         if o.type == "sauvegarde"]
        assert second and second != first
        # the retention keeps one snapshot a day: the second backup's replaces the first's
        snapshots = await until(lambda: _snapshots(restic), within=60)
        assert second in [s.short_id for s in snapshots] + [s.id for s in snapshots]
        await until(lambda: not scheduler.running, within=60)
        assert await scheduler.catch_up_tasks() == []  # nothing missed any more
        assert aps.get_job("tache:sauvegarde") is not None  # still there after a rebuild
        await scheduler.rebuild()
        assert aps.get_job("tache:sauvegarde") is not None
    finally:
        await scheduler.stop()


async def _backups_ok(store: MemoryStore, wanted: int) -> bool:
    ops = await store.list_operations()
    return len([o for o in ops if o.type == "sauvegarde" and o.etat == "ok"]) >= wanted


async def _snapshots(restic: Restic) -> list[Snapshot] | None:
    """The repository's snapshots; None while a job holds its exclusive lock (the backup's
    retention): asked again, as the polling does."""
    try:
        return await restic.snapshots()
    except BackupError as exc:
        if exc.kind != "verrou":
            raise
        return None


async def test_no_backup_task_without_a_repository(store: MemoryStore, tmp_path: Path) -> None:
    services = job_services(store, Clock(datetime.now(UTC)), AXI_DATA_DIR=str(tmp_path))
    assert BackupTasks().tasks(services.settings) == []
    remote_only = job_services(store, Clock(datetime.now(UTC)),
                               AXI_BACKUP_REMOTE_REPOSITORY="s3:example/axi").settings
    assert BackupTasks().tasks(remote_only) == []
    [scheduler] = registry.for_run(services.settings)
    await scheduler.start(services)
    try:
        assert isinstance(scheduler, VeilleScheduler) and scheduler.scheduler is not None
        assert not [j for j in scheduler.scheduler.get_jobs() if j.id.startswith("tache:")]
        assert "tasks" not in scheduler.describe()
    finally:
        await scheduler.stop()


async def test_an_unusable_backup_schedule_is_said_not_run(store: MemoryStore,
                                                           tmp_path: Path) -> None:
    services = job_services(store, Clock(datetime.now(UTC)), AXI_DATA_DIR=str(tmp_path),
                            AXI_BACKUP_REPOSITORY=str(tmp_path / "depot"),
                            AXI_BACKUP_SCHEDULE="*/5 * * * *")
    [scheduler] = registry.for_run(services.settings)
    await scheduler.start(services)
    try:
        assert isinstance(scheduler, VeilleScheduler) and scheduler.scheduler is not None
        assert scheduler.scheduler.get_job("tache:sauvegarde") is None
        tasks = scheduler.describe()["tasks"]
        assert tasks["sauvegarde"].startswith("non planifiée") and "60 minutes" in tasks[
            "sauvegarde"]
        assert "verification" in tasks
    finally:
        await scheduler.stop()
