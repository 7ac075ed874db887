"""`axi veille list|show|add|edit|enable|disable|history|run` (issue 12): the operator's
view of the agency's scheduled watches, and a way to run one now or try it (`--dry-run`:
fetch and render, send and store nothing).

jobs/ (httpx, APScheduler, the veille types) is imported inside the commands only, so
`axi --help` and the other commands load none of it.
"""

from __future__ import annotations

import html
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli_support import (
    CommandError,
    err,
    fail,
    opened,
    out,
    print_json,
    print_table,
    printable,
    run,
    run_with_store,
    settings,
)
from memory.store import MemoryStore

veille_app = typer.Typer(help="Veilles: the agency's scheduled watches (DPE, competitors, DVF).",
                         no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameArg = Annotated[str, typer.Argument(help="The veille's name (see `axi veille list`).")]
ScheduleOpt = Annotated[str | None, typer.Option(
    "--schedule", help="Cron line, 5 fields, Europe/Paris time (e.g. '0 8 * * *').")]
ConfigOpt = Annotated[str | None, typer.Option(
    "--config", help="The type's settings: a JSON object, or @FILE holding one.")]
RecipientsOpt = Annotated[str | None, typer.Option(
    "--recipients", help='JSON, e.g. {"courriel": ["agence"], "resume": ["créateur"]}.')]
EXIT_FAILED = 1
EXIT_SKIPPED = 4


def _schedule_option(value: str | None) -> str | None:
    """--schedule: a cron line Axi accepts (at most hourly); one-line errors."""
    if value is None:
        return None
    from jobs.cron import ScheduleError, check_schedule

    try:
        return check_schedule(value)
    except ScheduleError as exc:
        raise CommandError(str(exc)) from None


def _json_option(value: str | None, what: str) -> Any:
    """--config/--recipients: JSON text or @FILE; one-line errors."""
    if value is None:
        return None
    source = value
    if value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            source = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {what} file {str(path)!r}: "
                               f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        parsed = json.loads(source, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno})") from None
    except ValueError as exc:
        raise CommandError(f"{what}: {exc}") from None
    if not isinstance(parsed, dict):
        raise CommandError(f"{what} must be a JSON object")
    if _has_nul(parsed):
        raise CommandError(f"{what} holds a NUL character (\\u0000), which cannot be stored")
    return parsed


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number PostgreSQL can store")


def _finite(text_: str) -> float:
    value = float(text_)
    if not math.isfinite(value):
        raise ValueError(f"{text_} is out of range for a JSON number")
    return value


def _when(value: datetime | None, tz: ZoneInfo) -> str | None:
    return None if value is None else value.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def _next_run(horaire: str, active: bool, tz: ZoneInfo) -> datetime | None:
    from jobs.scheduler import trigger_for

    if not active:
        return None
    try:
        return trigger_for(horaire, tz).get_next_fire_time(None, datetime.now(UTC))
    except (ValueError, TypeError):
        return None


def _run_json(r: Any, tz: ZoneInfo) -> dict[str, Any]:
    return {"id": r.id, "started": r.debut.isoformat(),
            "ended": r.fin.isoformat() if r.fin else None, "state": r.etat, "seen": r.vus,
            "new": r.nouveaux, "error": r.erreur, "trigger": r.declenchement,
            "planned_for": r.prevu_pour.isoformat() if r.prevu_pour else None}


@veille_app.command("list")
def list_veilles(json_out: JsonOpt = False) -> None:
    """Every veille: type, active, schedule, next run, last run, items."""
    tz = ZoneInfo(settings().timezone)

    async def work(store: MemoryStore) -> list[dict[str, Any]]:
        counts = await store.item_counts()
        rows = []
        for v in await store.list_veilles():
            last = await store.run_history(v.id, limit=1)
            nxt = _next_run(v.horaire, v.active, tz)
            rows.append({"name": v.nom, "type": v.type, "active": v.active,
                         "schedule": v.horaire, "next_run": nxt.isoformat() if nxt else None,
                         "last_run": _run_json(last[0], tz) if last else None,
                         "items": counts.get(v.id, (0, 0))[0],
                         "unreported": counts.get(v.id, (0, 0))[1]})
        return rows

    rows = run_with_store(work)
    if json_out:
        print_json(rows)
        return
    print_table(None, ["name", "type", "active", "schedule", "next run", "last run", "items"], [
        (r["name"], r["type"], "yes" if r["active"] else "no", r["schedule"],
         _when(datetime.fromisoformat(r["next_run"]), tz) if r["next_run"] else "—",
         (f"{r['last_run']['state']} "
          f"{_when(datetime.fromisoformat(r['last_run']['started']), tz)}")
         if r["last_run"] else "never",
         f"{r['items']} ({r['unreported']} to report)" if r["unreported"] else r["items"])
        for r in rows])


@veille_app.command("show")
def show(name: NameArg, json_out: JsonOpt = False) -> None:
    """A veille's config, recipients, sources' states and last runs."""
    tz = ZoneInfo(settings().timezone)

    async def work(store: MemoryStore) -> dict[str, Any]:
        v = await store.get_veille(name)
        nxt = _next_run(v.horaire, v.active, tz)
        items, unreported = (await store.item_counts()).get(v.id, (0, 0))
        return {"name": v.nom, "type": v.type, "active": v.active, "schedule": v.horaire,
                "next_run": nxt.isoformat() if nxt else None, "config": v.config,
                "recipients": v.destinataires, "items": items, "unreported": unreported,
                "watermarks": await store.read_watermarks(v.nom),
                "sources": [{"source": s.source, "broken": s.en_panne,
                             "since": s.depuis.isoformat() if s.depuis else None,
                             "last_error": s.derniere_erreur,
                             "alerted": s.alerte_le.isoformat() if s.alerte_le else None}
                            for s in await store.source_states(v.id)],
                "runs": [_run_json(r, tz) for r in await store.run_history(v.id, limit=5)]}

    report = run_with_store(work)
    if json_out:
        print_json(report)
        return
    out.print(f"[bold]{report['name']}[/] ({report['type']}) — "
              f"{'active' if report['active'] else 'inactive'}, schedule "
              f"{report['schedule']}", highlight=False)
    if report["next_run"]:
        out.print(f"Next run: {_when(datetime.fromisoformat(report['next_run']), tz)}",
                  highlight=False)
    out.print(f"Items: {report['items']} ({report['unreported']} to report)", highlight=False)
    out.print("Recipients: " + json.dumps(report["recipients"], ensure_ascii=False),
              highlight=False, markup=False)
    out.print("Config: " + json.dumps(report["config"], ensure_ascii=False, indent=2),
              highlight=False, markup=False)
    print_table("Sources", ["source", "state", "since", "last error"], [
        (s["source"], "broken" if s["broken"] else "ok",
         _when(datetime.fromisoformat(s["since"]), tz) if s["since"] else "", s["last_error"])
        for s in report["sources"]])
    _print_runs(report["runs"], tz)


def _print_runs(runs: list[dict[str, Any]], tz: ZoneInfo) -> None:
    print_table("Runs", ["started", "state", "trigger", "seen", "new", "error"], [
        (_when(datetime.fromisoformat(r["started"]), tz), r["state"], r["trigger"], r["seen"],
         r["new"], r["error"]) for r in runs])


@veille_app.command("add")
def add(
    name: NameArg,
    type_: Annotated[str, typer.Option("--type", help="dpe, concurrence, dvf…")],
    schedule: Annotated[str, typer.Option("--schedule", help="Cron line, 5 fields.")],
    config: ConfigOpt = None,
    recipients: RecipientsOpt = None,
    inactive: Annotated[bool, typer.Option("--inactive", help="Add it paused.")] = False,
) -> None:
    """Add a veille."""
    from jobs.kinds import known_types

    async def work(store: MemoryStore) -> Any:
        return await store.add_veille(
            name, type_, _schedule_option(schedule) or "", config=_json_option(config, "--config"),
            destinataires=_json_option(recipients, "--recipients"), active=not inactive,
            known_types=known_types())

    v = run_with_store(work)
    out.print(f"Added veille {v.nom} ({v.type}), schedule {v.horaire}"
              f"{'' if v.active else ', inactive'}.", highlight=False, markup=False)


@veille_app.command("edit")
def edit(name: NameArg, schedule: ScheduleOpt = None, config: ConfigOpt = None,
         recipients: RecipientsOpt = None) -> None:
    """Change a veille's schedule, config or recipients (axi run follows within a minute)."""
    async def work(store: MemoryStore) -> Any:
        return await store.edit_veille(
            name, horaire=_schedule_option(schedule), config=_json_option(config, "--config"),
            destinataires=_json_option(recipients, "--recipients"))

    v = run_with_store(work)
    out.print(f"Updated veille {v.nom}: schedule {v.horaire}.", highlight=False, markup=False)


def _set_active(name: str, active: bool) -> None:
    async def work(store: MemoryStore) -> Any:
        return await store.edit_veille(name, active=active)

    v = run_with_store(work)
    out.print(f"Veille {v.nom} {'enabled' if active else 'disabled'}.", highlight=False,
              markup=False)


@veille_app.command("enable")
def enable(name: NameArg) -> None:
    """Run a veille on its schedule again."""
    _set_active(name, True)


@veille_app.command("disable")
def disable(name: NameArg) -> None:
    """Pause a veille (its items and runs are kept)."""
    _set_active(name, False)


@veille_app.command("history")
def history(name: NameArg,
            limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
            json_out: JsonOpt = False) -> None:
    """A veille's last runs, newest first."""
    tz = ZoneInfo(settings().timezone)

    async def work(store: MemoryStore) -> list[dict[str, Any]]:
        v = await store.get_veille(name)
        return [_run_json(r, tz) for r in await store.run_history(v.id, limit=limit)]

    runs = run_with_store(work)
    if json_out:
        print_json(runs)
    else:
        _print_runs(runs, tz)


@veille_app.command("run")
def run_now(
    name: NameArg,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Fetch and render only: send, store and mark nothing.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", help="With --dry-run: write the digest here (HTML if it ends in .html).",
        dir_okay=False)] = None,
) -> None:
    """Run a veille now (its new items are reported as on schedule), or try it."""
    from bot.jobs_contract import JobServices
    from bot.notify import Notifier
    from bot.quiet_hours import QuietHours
    from channels.registry import for_terminal
    from jobs.engine import Engine

    cfg = settings()
    if output is not None and not dry_run:
        fail("--output goes with --dry-run (a real run sends the digest)", code=2)
    from bot.logs import configure as configure_logging

    configure_logging(cfg, level=logging.ERROR)  # the outcome is said below, in one line

    async def main() -> Any:  # jobs.engine.RunResult
        async with opened(cfg) as db:
            store = MemoryStore(db)
            wiring = for_terminal(cfg)
            fallback = wiring.fallback_route or ("console", "-")
            notifier = Notifier(store, configured=lambda: wiring.configured, fallback=fallback,
                                quiet_hours=QuietHours.parse(cfg.quiet_hours),
                                timezone=cfg.timezone)
            services = JobServices(store=store, settings=cfg, notify=notifier.notify,
                                   lock=store.advisory_lock, clock=lambda: datetime.now(UTC))
            with Progress(TextColumn("{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=err,
                          transient=True) as bar:
                task = bar.add_task(f"veille {name}", total=None)

                def progress(done: int, total: int | None, what: str) -> None:
                    bar.update(task, completed=done, total=total,
                               description=f"veille {name}: {what}")

                return await Engine(services).run(name, dry_run=dry_run, progress=progress)

    result = run(main())
    if result.state == "ignore":
        fail(f"veille {name} not run: another Axi process is running it now", code=EXIT_SKIPPED)
    if result.state == "echec":
        fail(f"veille {name} failed: {result.error}", code=EXIT_FAILED)
    if dry_run:
        _show_dry_run(name, result, output)
        return
    out.print(f"Veille {name}: {result.state}, {result.seen} seen, {result.new} new, "
              f"{len(result.reported)} reported."
              + (f" ({result.error})" if result.error else ""), highlight=False, markup=False)


def _show_dry_run(name: str, result: Any, output: Path | None) -> None:
    digest = result.digest
    summary = (f"Dry run of {name}: {result.seen} seen, {result.new} new; nothing sent, "
               "stored or marked." + (f" ({result.error})" if result.error else ""))
    if digest is None:
        err.print(summary + " The digest is empty: nothing would be sent.", highlight=False,
                  markup=False)
        return
    if output is None:
        out.print(printable(f"Subject: {digest.subject}\n\n{digest.text}"), highlight=False,
                  markup=False)
        for f in digest.attachments:
            out.print(f"[attachment: {f.filename}, {f.content_type}, {len(f.data):,} bytes]",
                      highlight=False, markup=False)
    else:
        body = digest.text
        if output.suffix.lower() in {".html", ".htm"}:
            body = digest.html or f"<pre>{html.escape(digest.text)}</pre>"
        try:
            output.write_text(body, encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {str(output)!r}: {exc.strerror or exc}")
        summary += f" Digest written to {output}."
    err.print(summary, highlight=False, markup=False)
