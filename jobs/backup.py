"""Axi's backups (issue 13): what `axi backup run|verify|restore|list|unlock` and the
scheduled daily backup and weekly verification do, step by step, with their record in
`operations`, their alerts and their push monitors.

- A backup dumps the database (jobs/pg_tools.py: pg_dump 16, exit code checked, the
  archive read back, the manifest counted inside the dump's own snapshot; its own
  `operations` rows are written just after that snapshot, so a restored database never
  holds a backup "en cours") into a work directory, and only then stores that directory
  in each restic repository (the local one, then the remote one), then applies the
  repository's retention. A dump that failed is never handed to restic, and restic
  writes a snapshot only once all its data is stored: nothing half-done is a backup.
- A verification reads the repositories' data (`restic check`), restores the latest
  snapshot's dump into a scratch database on the live server (always dropped) and
  compares it with the snapshot's manifest (why that comparison is exact: backup_rules).
- A restore fetches a snapshot's dump and restores it in one transaction into Axi's
  database or another (`--into`), refusing a non-empty one unless told to replace it.

One of these at a time, across every `axi` process: they hold the advisory lock
`sauvegardes`. Each operation per repository is a row of `operations`; its failure
alerts Ludo and Anthony once, and its recovery once; after a fully successful backup or
verification, its Uptime Kuma push URL is called (jobs/backup_alerts.py, jobs/push.py).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bot.config import Settings
from bot.jobs_contract import NotifyFn
from jobs import pg_tools, push
from jobs.backup_alerts import alert_if_changed
from jobs.backup_files import fresh_work_dir, restore_lock, sha256, write_text
from jobs.backup_rules import (
    DUMP_FILE,
    DUMP_IN_SNAPSHOT,
    FOLDER,
    MANIFEST_FILE,
    MANIFEST_IN_SNAPSHOT,
    BackupError,
    Manifest,
    Target,
    absolute_location,
    compare,
    libpq_target,
    password_configured,
)
from jobs.restic import Progress, Restic, repository_env
from jobs.restic_output import Snapshot, find_snapshot
from memory.operations import OperationRow
from memory.store import MemoryStore

log = logging.getLogger(__name__)

LOCK = "sauvegardes"
INTERRUPTED = "interrompue : le processus s'est arrêté pendant l'opération"
WORK_DIR = "sauvegardes-travail"


@dataclass
class Outcome:
    depot: str
    ok: bool
    operation: OperationRow | None = None
    snapshot: str | None = None
    error: BackupError | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    type: str
    outcomes: list[Outcome]
    manifest: Manifest | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and all(o.ok for o in self.outcomes)


@dataclass
class RestorePlan:
    snapshot: Snapshot
    depot: str
    target: Target
    target_url: str
    existing: list[str]
    """The target's tables, views and sequences now (empty: nothing is overwritten)."""
    sessions: int


def _no_local() -> BackupError:
    return BackupError(
        "AXI_BACKUP_REPOSITORY is not set: backups need a local restic repository (e.g. "
        "a directory on a second disk); see .env.example",
        "AXI_BACKUP_REPOSITORY n'est pas réglé : aucun dépôt de sauvegarde", kind="config")


class Backups:
    def __init__(self, store: MemoryStore | None, settings: Settings, *,
                 notify: NotifyFn | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 env: dict[str, str] | None = None, lock_wait_s: float = pg_tools.LOCK_WAIT_S):
        self.store = store
        self.settings = settings
        self.notify = notify
        self.clock = clock
        self.lock_wait_s = lock_wait_s
        self.repositories: list[Restic] = []
        for location, depot in ((settings.backup_repository, "local"),
                                (settings.backup_remote_repository, "distant")):
            if location and location.strip():
                where = absolute_location(location, Path.cwd())
                self.repositories.append(Restic(where, depot, env=repository_env(where, env)))
        self.work_root = Path(settings.data_dir).expanduser() / WORK_DIR

    # ------------------------------------------------------------------ shared steps
    def repository(self, depot: str) -> Restic:
        for repo in self.repositories:
            if repo.depot == depot:
                return repo
        if depot == "local":
            raise _no_local()
        raise BackupError("AXI_BACKUP_REMOTE_REPOSITORY is not set",
                          "AXI_BACKUP_REMOTE_REPOSITORY n'est pas réglé", kind="config")

    def check_configured(self) -> None:
        """The local repository is set; restic has a password for each repository."""
        self.repository("local")
        for repo in self.repositories:
            if not password_configured(repo.env):
                raise BackupError(
                    "RESTIC_PASSWORD (or RESTIC_PASSWORD_FILE) is not set: restic needs the "
                    "repositories' password; set it in the environment or .env (see "
                    ".env.example)",
                    "RESTIC_PASSWORD (ou RESTIC_PASSWORD_FILE) n'est pas réglé : restic n'a "
                    "pas le mot de passe des dépôts", kind="config")

    @property
    def db_store(self) -> MemoryStore:
        assert self.store is not None, "this operation needs Axi's database"
        return self.store

    @property
    def live(self) -> Target:
        """Axi's database as libpq's tools reach it (the embedded server included)."""
        url = self.db_store.db.engine.url.render_as_string(hide_password=False)
        return libpq_target(url.replace("+asyncpg", ""))

    @contextlib.asynccontextmanager
    async def _exclusive(self, type_: str) -> AsyncIterator[None]:
        async with self.db_store.advisory_lock(LOCK) as held:
            if not held:
                raise BackupError(
                    "another backup, verification or restore is running (axi run or another "
                    "axi command); retry when it is done",
                    "une autre sauvegarde, vérification ou restauration est en cours",
                    kind="occupe")
            await self.db_store.abandon_operations(type_, INTERRUPTED)
            yield

    async def _start(self, type_: str, depots: list[str]) -> dict[str, int]:
        where = {r.depot: r.where for r in self.repositories}
        return {d: await self.db_store.start_operation(type_, d,
                                                        details={"depot": where.get(d)})
                for d in depots}

    async def _finish(self, op_id: int, error: BackupError | None, **values: Any
                      ) -> OperationRow:
        if error is None:
            return await self.db_store.finish_operation(op_id, "ok", **values)
        details = {**values.pop("details", {}), "cause": error.kind}
        return await self.db_store.finish_operation(op_id, "echec", erreur=error.fr,
                                                 details=details, **values)

    async def _abandon(self, ops: dict[str, int], done: set[str]) -> None:
        """An operation interrupted (Axi stopping, Ctrl-C): closed as failed."""
        for depot, op_id in ops.items():
            if depot not in done:
                with contextlib.suppress(Exception):
                    await self.db_store.finish_operation(op_id, "echec", erreur=INTERRUPTED,
                                                         details={"interrompue": True})

    # ------------------------------------------------------------------ backup
    async def backup(self, *, progress: Progress | None = None) -> Report:
        """Dump, then store in each repository, then retention; see the module docstring."""
        self.repository("local")
        began = time.monotonic()
        report = Report("sauvegarde", [])
        depots = [r.depot for r in self.repositories]
        async with self._exclusive("sauvegarde"):
            ops: dict[str, int] = {}

            async def start() -> None:  # after the dump's snapshot: not in the dump
                ops.update(await self._start("sauvegarde", depots))

            done: set[str] = set()
            try:
                try:
                    self.check_configured()
                    work = fresh_work_dir(self.work_root, "sauvegarde")
                    manifest = await pg_tools.dump(self.live, work / FOLDER / DUMP_FILE,
                                                   lock_wait_s=self.lock_wait_s,
                                                   progress=progress, exported=start)
                    manifest.taken_at = self.clock().isoformat()
                    write_text(work / FOLDER / MANIFEST_FILE, manifest.to_json())
                    report.manifest = manifest
                except BackupError as exc:
                    if not ops:
                        await start()
                    for repo in self.repositories:
                        row = await self._finish(ops[repo.depot], exc)
                        done.add(repo.depot)
                        report.outcomes.append(Outcome(repo.depot, False, row, error=exc))
                else:
                    for repo in self.repositories:
                        report.outcomes.append(await self._store_in(
                            repo, ops[repo.depot], work, manifest, progress))
                        done.add(repo.depot)
            except BaseException:
                await self._abandon(ops, done)
                raise
            finally:
                shutil.rmtree(self.work_root / "sauvegarde", ignore_errors=True)
        report.seconds = time.monotonic() - began
        await self._after(report, self.settings.push_url_backup)
        return report

    async def _store_in(self, repo: Restic, op_id: int, work: Path, manifest: Manifest,
                        progress: Progress | None) -> Outcome:
        outcome = Outcome(repo.depot, False)
        details: dict[str, Any] = dict(manifest.summary())
        try:
            if await self._ensure_repository(repo):
                outcome.notes.append(f"new restic repository initialised at {repo.where}")
                details["initialise"] = True
            summary = await repo.backup(work, FOLDER, progress=progress)
            outcome.snapshot = str(summary["snapshot_id"])
            details.update(ajoute_octets=summary.get("data_added"),
                           duree_s=summary.get("total_duration"))
            try:
                kept, removed = await repo.forget()
            except BackupError as exc:
                raise BackupError(
                    f"snapshot {outcome.snapshot} is stored, but the retention (restic "
                    f"forget --prune) failed: {exc.en}",
                    f"l'instantané {outcome.snapshot} est bien enregistré, mais l'élagage "
                    f"(restic forget --prune) a échoué : {exc.fr}", kind=exc.kind) from None
            details.update(conserves=kept, supprimes=removed)
            if removed:
                outcome.notes.append(f"{removed} old snapshot(s) removed by the retention")
            outcome.ok = True
        except BackupError as exc:
            outcome.error = exc
        outcome.operation = await self._finish(
            op_id, outcome.error, instantane=outcome.snapshot,
            taille_octets=manifest.dump_bytes, details=details)
        return outcome

    async def _ensure_repository(self, repo: Restic) -> bool:
        """True when the repository had to be created (first use). A repository that held
        Axi's backups and is gone (a disk not mounted) is never silently replaced."""
        if await repo.exists():
            return False
        before = await self.db_store.last_good_operation("sauvegarde", repo.depot)
        if before is not None and before.details.get("depot") == repo.where:
            raise BackupError(
                f"the restic repository {repo.where} held Axi's backups (the last on "
                f"{before.fin:%Y-%m-%d %H:%M}) and is not there anymore: is its disk "
                "mounted? Axi does not create an empty one in its place",
                f"le dépôt restic {repo.where} contenait les sauvegardes (la dernière le "
                f"{before.fin:%d/%m/%Y}) et n'est plus là : le disque est-il monté ?",
                kind="pas_de_depot")
        await repo.init()
        log.warning("dépôt restic créé / restic repository initialised: %s", repo.where)
        return True

    # ------------------------------------------------------------------ verification
    async def verify(self, *, progress: Progress | None = None) -> Report:
        """Check each repository's data; restore the latest local snapshot into a scratch
        database and compare it with its manifest."""
        self.repository("local")
        began = time.monotonic()
        report = Report("verification", [])
        async with self._exclusive("verification"):
            ops = await self._start("verification", [r.depot for r in self.repositories])
            done: set[str] = set()
            try:
                for repo in self.repositories:
                    outcome = Outcome(repo.depot, False)
                    details: dict[str, Any] = {}
                    try:
                        self.check_configured()
                        await repo.check(self.clock(), progress)
                        if repo.depot == "local":
                            details = await self._restore_and_compare(repo, outcome, progress)
                        else:  # sound but perhaps not Axi's (wrong path, emptied, another)
                            latest = await _latest(repo)
                            outcome.snapshot = latest.short_id
                            details = {"instantane_date": latest.time.isoformat()}
                        outcome.ok = True
                    except BackupError as exc:
                        outcome.error = exc
                    outcome.operation = await self._finish(
                        ops[repo.depot], outcome.error, instantane=outcome.snapshot,
                        details=details)
                    done.add(repo.depot)
                    report.outcomes.append(outcome)
            except BaseException:
                await self._abandon(ops, done)
                raise
            finally:
                shutil.rmtree(self.work_root / "verification", ignore_errors=True)
        report.seconds = time.monotonic() - began
        await self._after(report, self.settings.push_url_verify)
        return report

    async def _restore_and_compare(self, repo: Restic, outcome: Outcome,
                                   progress: Progress | None) -> dict[str, Any]:
        latest = await _latest(repo)
        outcome.snapshot = latest.short_id
        dump_path, manifest = await self._fetch(repo, latest, "verification", progress)
        live = self.live
        for name in await pg_tools.leftover_scratches(live):
            await pg_tools.drop_scratch(live, name)
        scratch = await pg_tools.create_scratch(live)
        try:
            await pg_tools.restore(dump_path, scratch, replace=False, progress=progress)
            restored = await pg_tools.stats_of(scratch)
        finally:
            await pg_tools.drop_scratch(live, scratch.database)
        problems = compare(manifest.tables, restored)
        if problems:
            raise BackupError(
                f"the restored copy of snapshot {latest.short_id} differs from the backup: "
                + "; ".join(problems[:5]),
                f"la copie restaurée de l'instantané {latest.short_id} diffère de la "
                "sauvegarde : " + "; ".join(problems[:5]), kind="different")
        outcome.notes.append(
            f"snapshot {latest.short_id} of "
            f"{latest.time.astimezone(_tz(self.settings)):%Y-%m-%d %H:%M} restored into a "
            f"scratch database: {len(restored)} tables, "
            f"{sum(s.rows for s in restored.values()):,} rows, identical to the backup")
        return {"instantane_date": latest.time.isoformat(), "tables": len(restored),
                "lignes": sum(s.rows for s in restored.values())}

    async def _fetch(self, repo: Restic, snapshot: Snapshot, type_: str,
                     progress: Progress | None) -> tuple[Path, Manifest]:
        """A snapshot's dump in the work directory, its checksum checked against its
        manifest."""
        manifest = Manifest.from_json(await repo.read_file(snapshot.id, MANIFEST_IN_SNAPSHOT))
        dest = fresh_work_dir(self.work_root, type_) / FOLDER / DUMP_FILE
        await repo.dump(snapshot.id, DUMP_IN_SNAPSHOT, dest, total=manifest.dump_bytes,
                        progress=progress)
        if manifest.dump_sha256 and await sha256(dest) != manifest.dump_sha256:
            raise BackupError(f"the dump of snapshot {snapshot.short_id} does not match its "
                              "checksum", f"le dump de l'instantané {snapshot.short_id} ne "
                              "correspond pas à son empreinte", kind="corrompu")
        return dest, manifest

    # ------------------------------------------------------------------ restore
    async def plan_restore(self, ref: str, target_url: str, *, depot: str = "local"
                           ) -> RestorePlan:
        """What a restore would do: the snapshot, the target and what it holds now."""
        self.check_configured()
        repo = self.repository(depot)
        snapshot = find_snapshot(await repo.snapshots(), ref, repo.where)
        target = libpq_target(target_url)
        return RestorePlan(snapshot, depot, target, target_url,
                           await pg_tools.user_relations(target),
                           await pg_tools.other_sessions(target))

    async def restore(self, plan: RestorePlan, *, progress: Progress | None = None
                      ) -> dict[str, int]:
        """Restore the planned snapshot (replacing the target's content if it had any);
        the restored tables' row counts, checked against the snapshot's manifest."""
        repo = self.repository(plan.depot)
        with restore_lock(self.work_root):
            try:
                dump_path, manifest = await self._fetch(repo, plan.snapshot, "restauration",
                                                        progress)
                await pg_tools.restore(dump_path, plan.target, replace=bool(plan.existing),
                                       progress=progress)
            finally:
                shutil.rmtree(self.work_root / "restauration", ignore_errors=True)
        restored = await pg_tools.stats_of(plan.target)
        problems = compare(manifest.tables, restored)
        if problems:
            raise BackupError("restored, but the copy differs from the backup: "
                              + "; ".join(problems[:5]), kind="different")
        try:
            await self._record_restore(plan)
        except Exception as exc:  # the restore itself is done and checked
            log.warning("restauration non notée / restore not recorded in operations: %s", exc)
        return {name: s.rows for name, s in restored.items()}

    async def _record_restore(self, plan: RestorePlan) -> None:
        """The restore, in the restored database's own `operations` (when its schema has
        one): where Axi will run from now on."""
        from memory.database import open_database

        async with open_database(plan.target_url, Path(self.settings.data_dir)) as db:
            async with db.engine.connect() as conn:
                from sqlalchemy import text

                if await conn.scalar(text("SELECT to_regclass('public.operations')")) is None:
                    return
            store = MemoryStore(db)
            op_id = await store.start_operation("restauration", plan.depot, details={
                "depot": self.repository(plan.depot).where})
            await store.finish_operation(op_id, "ok", instantane=plan.snapshot.short_id,
                                         details={"instantane_date":
                                                  plan.snapshot.time.isoformat()})

    # ------------------------------------------------------------------ listing
    async def snapshots(self) -> dict[str, list[Snapshot] | BackupError]:
        self.check_configured()
        found: dict[str, list[Snapshot] | BackupError] = {}
        for repo in self.repositories:
            try:
                found[repo.depot] = await repo.snapshots()
            except BackupError as exc:
                found[repo.depot] = exc
        return found

    async def unlock(self) -> dict[str, str]:
        self.check_configured()
        return {repo.depot: await repo.unlock() for repo in self.repositories}

    # ------------------------------------------------------------------ after an operation
    async def _after(self, report: Report, push_url: SecretStr | None) -> None:
        for outcome in report.outcomes:
            if outcome.operation is not None and self.notify is not None:
                await alert_if_changed(self.db_store, self.notify, outcome.operation,
                                       _tz(self.settings))
        if report.ok:  # after a success only; jobs/push.py never logs the URL
            snapshots = ", ".join(f"{o.depot} {o.snapshot}" for o in report.outcomes)
            await push.ping(push_url, ok=True, message=f"{report.type} ok : {snapshots}",
                            duration_s=report.seconds)


async def _latest(repo: Restic) -> Snapshot:
    """The repository's latest Axi snapshot; none is a failed verification: a repository
    restic opens and finds sound may still hold nothing of Axi's."""
    snapshots = await repo.snapshots()
    if not snapshots:
        raise BackupError(f"no Axi snapshot in {repo.where} to verify (run `axi backup "
                          "run` first, or check the repository's location)",
                          f"aucun instantané d'Axi à vérifier dans {repo.where} (le dépôt "
                          "est-il le bon ? a-t-il été vidé ?)", kind="vide")
    return snapshots[-1]


def _tz(settings: Settings) -> Any:
    from zoneinfo import ZoneInfo

    return ZoneInfo(settings.timezone)
