"""`axi backup run|verify|list|restore|unlock` (issue 13): the operator's hands on the
backups that `axi run` also takes on its own (daily) and verifies (weekly).

jobs/ (restic, pg_dump, httpx) is imported inside the commands only, so `axi --help` and
the other commands load none of it. A failure is one line on stderr and a non-zero exit
(1: the operation failed, 2: configuration or usage); long work shows progress bars.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli_support import confirm, err, fail, opened, out, print_json, print_table, run, settings
from bot.config import Settings
from memory.store import MemoryStore

backup_app = typer.Typer(help="Backups: restic repositories of Axi's database (run, verify, "
                              "list, restore).", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _amount(done: int, total: int | None, what: str) -> str:
    if "packs" in what or "snapshots" in what:
        return f"{done:,}/{total:,}" if total else f"{done:,}"
    mb = f"{done / 1e6:,.1f} MB"
    return f"{mb} / {total / 1e6:,.1f} MB" if total else mb


class _Bars:
    """One rich progress line per step (pg_dump, restic backup, check, restore…)."""

    def __init__(self, enabled: bool):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                            console=err, transient=True,
                            disable=not enabled or not err.is_terminal)
        self.tasks: dict[str, Any] = {}

    def __call__(self, done: int, total: int | None, what: str) -> None:
        key = what.split(":")[0]
        if key not in self.tasks:
            self.tasks[key] = self.bar.add_task(what, total=total, amount="")
        shown_total = max(total, done) if total else None
        self.bar.update(self.tasks[key], completed=done, total=shown_total, description=what,
                        amount=_amount(done, total, what))


def _failed(exc: Any) -> None:
    """A BackupError that stopped the command before any operation: one line."""
    fail(exc.en, code=EXIT_CONFIG if exc.kind == "config" else EXIT_FAILED)


def _with_backups(cfg: Settings, work: Callable[[Any, _Bars], Any], *,
                  bars: bool) -> Any:
    """Open Axi's database, build Backups with a real notify (alerts queue in the outbox
    that `axi run` sends), run `work`; a BackupError becomes one line."""
    from bot.notify import Notifier
    from bot.quiet_hours import QuietHours
    from channels.registry import for_terminal
    from jobs.backup import Backups
    from jobs.backup_rules import BackupError

    logging.basicConfig(level=logging.ERROR)  # the outcome is said below, in one line

    async def main() -> Any:
        async with opened(cfg) as db:
            store = MemoryStore(db)
            wiring = for_terminal(cfg)
            notifier = Notifier(store, configured=lambda: wiring.configured,
                                fallback=wiring.fallback_route or ("console", "-"),
                                quiet_hours=QuietHours.parse(cfg.quiet_hours),
                                timezone=cfg.timezone)
            progress = _Bars(bars)
            try:
                backups = Backups(store, cfg, notify=notifier.notify)
                backups.check_configured()  # a shell without the password: not a failure
                with progress.bar:
                    return await work(backups, progress)
            except BackupError as exc:
                _failed(exc)

    return run(main())


def _report(report: Any, json_out: bool, verb: str) -> None:
    """A jobs.backup.Report on stdout (or JSON); its failures as one line on stderr."""
    if json_out:
        print_json({"type": report.type, "ok": report.ok, "seconds": round(report.seconds, 1),
                    "repositories": [
                        {"repository": o.depot, "ok": o.ok, "snapshot": o.snapshot,
                         "operation": o.operation.id if o.operation else None,
                         "error": o.error.en if o.error else None, "notes": o.notes}
                        for o in report.outcomes]})
    else:
        for o in report.outcomes:
            for note in o.notes:
                out.print(f"{o.depot}: {note}", highlight=False, markup=False)
            if o.ok:
                out.print(f"{verb} {o.depot}: ok" + (f", snapshot {o.snapshot}" if o.snapshot
                                                     else "") + f" ({report.seconds:.0f} s).",
                          highlight=False, markup=False)
    failures = [o for o in report.outcomes if not o.ok]
    if failures:
        messages = list(dict.fromkeys(o.error.en if o.error else "failed" for o in failures))
        if len(report.outcomes) > 1 and len(messages) > 1:
            messages = [f"{o.depot}: {o.error.en if o.error else 'failed'}" for o in failures]
        fail(f"{verb} failed: " + " | ".join(messages), code=EXIT_FAILED)


@backup_app.command("run")
def backup_run(json_out: JsonOpt = False) -> None:
    """Back up Axi's database now: pg_dump, then each restic repository (local, then
    remote), then their retention (30 daily local, 13 weekly remote)."""
    cfg = settings()
    report = _with_backups(cfg, lambda b, bars: b.backup(progress=bars), bars=not json_out)
    _report(report, json_out, "Backup")


@backup_app.command("verify")
def backup_verify(json_out: JsonOpt = False) -> None:
    """Verify the backups: restic check --read-data (a share of the remote), then restore
    the latest snapshot into a scratch database and compare it with the backup."""
    cfg = settings()
    report = _with_backups(cfg, lambda b, bars: b.verify(progress=bars), bars=not json_out)
    _report(report, json_out, "Verification")


@backup_app.command("list")
def backup_list(json_out: JsonOpt = False) -> None:
    """Axi's snapshots in each repository, and the latest operations."""
    cfg = settings()

    async def work(backups: Any, _: _Bars) -> tuple[dict[str, Any], list[Any]]:
        found = await backups.snapshots()
        return found, await backups.db_store.list_operations(limit=15)

    found, operations = _with_backups(cfg, work, bars=False)
    tz = ZoneInfo(cfg.timezone)
    if json_out:
        print_json({
            "repositories": {
                depot: ({"error": snaps.en} if not isinstance(snaps, list) else
                        [{"id": s.id, "short_id": s.short_id, "time": s.time.isoformat()}
                         for s in snaps]) for depot, snaps in found.items()},
            "operations": [{"id": o.id, "type": o.type, "repository": o.depot,
                            "state": o.etat, "started": o.debut.isoformat(),
                            "ended": o.fin.isoformat() if o.fin else None,
                            "snapshot": o.instantane, "bytes": o.taille_octets,
                            "error": o.erreur} for o in operations]})
        return
    for depot, snaps in found.items():
        if not isinstance(snaps, list):
            err.print(f"{depot}: {snaps.en}", highlight=False, markup=False)
            continue
        print_table(f"Snapshots ({depot})", ["snapshot", "date"],
                    [(s.short_id, f"{s.time.astimezone(tz):%Y-%m-%d %H:%M}")
                     for s in reversed(snaps)])
    print_table("Latest operations", ["id", "type", "repository", "state", "started",
                                      "snapshot", "error"],
                [(o.id, o.type, o.depot, o.etat, f"{o.debut.astimezone(tz):%Y-%m-%d %H:%M}",
                  o.instantane or "", (o.erreur or "")[:80]) for o in operations])
    if any(not isinstance(s, list) for s in found.values()):
        raise typer.Exit(EXIT_FAILED)


@backup_app.command("unlock")
def backup_unlock() -> None:
    """Remove the restic repositories' stale locks (left by a restic that was killed);
    the lock of a restic still running is kept."""
    cfg = settings()
    done = _with_backups(cfg, lambda b, _: b.unlock(), bars=False)
    for depot, message in done.items():
        out.print(f"{depot}: {message or 'no stale lock'}", highlight=False, markup=False)


@backup_app.command("restore")
def backup_restore(
    snapshot: Annotated[str, typer.Argument(help="A snapshot id (see `axi backup list`) "
                                                 "or 'latest'.")],
    into: Annotated[str | None, typer.Option(
        "--into", help="Restore into this database (postgresql://…) instead of Axi's own.",
        show_default=False)] = None,
    from_: Annotated[str, typer.Option("--from", help="Repository: local or distant.")
                     ] = "local",
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Replace the content of a database that is not empty.")] = False,
) -> None:
    """Restore a snapshot into Axi's database (stop Axi first) or into another one; all in
    one transaction: a restore that fails changes nothing."""
    from jobs.backup import Backups
    from jobs.backup_rules import BackupError
    from memory import embedded
    from memory.database import open_database

    if from_ not in ("local", "distant"):
        fail(f"--from is 'local' or 'distant', not {from_!r}", code=EXIT_CONFIG)
    cfg = settings()
    logging.basicConfig(level=logging.ERROR)

    async def main() -> tuple[Any, dict[str, int]]:
        server = None
        try:
            if into is not None:
                url = into
            elif cfg.database_url is not None:
                url = cfg.database_url.get_secret_value()
            else:  # the embedded server, kept running for the whole restore
                server = await asyncio.to_thread(embedded.start, cfg.data_dir)
                async with open_database(None, cfg.data_dir):
                    pass  # creates the database on a new machine
                url = server.url()
            backups = Backups(None, cfg)
            try:
                plan = await backups.plan_restore(snapshot, url, depot=from_)
                _refuse_unsafe(plan, force)
                when = plan.snapshot.time.astimezone(ZoneInfo(cfg.timezone))
                replacing = (f", replacing its {len(plan.existing)} tables and other objects"
                             if plan.existing else "")
                confirm(f"Restore snapshot {plan.snapshot.short_id} of {when:%Y-%m-%d %H:%M} "
                        f"({from_}) into the {plan.target.display}{replacing}?", yes)
                bars = _Bars(True)
                with bars.bar:
                    return plan, await backups.restore(plan, progress=bars)
            except BackupError as exc:
                _failed(exc)
                raise AssertionError("unreachable") from None
        finally:
            if server is not None:
                await asyncio.to_thread(embedded.release, server)

    plan, counts = run(main())
    out.print(f"Restored snapshot {plan.snapshot.short_id} into the {plan.target.display}: "
              f"{len(counts)} tables, {sum(counts.values()):,} rows, identical to the backup. "
              "Then: `axi db upgrade` (if this Axi is newer than the backup), and start Axi.",
              highlight=False, markup=False)


def _refuse_unsafe(plan: Any, force: bool) -> None:
    if plan.existing and not force:
        shown = ", ".join(plan.existing[:3]) + (", …" if len(plan.existing) > 3 else "")
        fail(f"the {plan.target.display} is not empty ({len(plan.existing)} tables and other "
             f"objects: {shown}); pass --force to replace its content (dropped and restored "
             "in one transaction)", code=EXIT_FAILED)
    if plan.sessions:
        fail(f"{plan.sessions} other session(s) are connected to the {plan.target.display}: "
             "stop Axi (and anything else using it) before restoring", code=EXIT_FAILED)
