"""`axi import legacy PATH…` (issue 13, §3): the operator brings in what the earlier Axi
kept — its consignes (MEMORY.md), site notes (SITE_MEMOS.json), DPEs already reported
(dpe_vus.json, the CSV export of dpe_veille_vus), conversation log and JSON memories.

Why a module of its own: the command's work (bot/legacy_import.py and the parsers beside
it) is imported only when it runs, so `axi --help` stays light; here is only the
command line: the progress bar, the report (a table, then every item skipped or not
understood with its reason; `--json` for scripts) and the exit status — 0, or 1 when a
file is unreadable (then nothing is written), 4 when another import is running.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bot.cli_support import err, fail, out, print_json, print_table, run_with_store, settings

import_app = typer.Typer(help="Bring in data kept elsewhere (the earlier Axi's files).",
                         no_args_is_help=True)
EXIT_BUSY = 4
LISTED = 50
"""Items listed one by one per section of the report; the rest are counted (--json has all)."""


@import_app.command("legacy")
def import_legacy_command(
    paths: Annotated[list[Path], typer.Argument(
        help="Files of the earlier Axi, or directories holding them (MEMORY.md, "
             "SITE_MEMOS.json, dpe_vus.json, dpe_veille_vus.csv, conversations.txt, JSON "
             "memory files). A file given by another name is recognised by its content.",
        show_default=False)],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Read and report only: write nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Import the earlier Axi's data (idempotent: what is already here is skipped)."""
    from bot.legacy_import import ImportBusy, import_legacy  # the work only when it runs

    cfg = settings()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   console=err, transient=True, disable=json_out or not err.is_terminal)
    tasks: dict[str, Any] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task({"reading": "Reading files",
                                         "writing": "Writing"}.get(phase, phase), total=total)
        bar.update(tasks[phase], completed=done, total=total)

    async def work(store: Any) -> Any:
        with bar:
            try:
                return await import_legacy(store, paths, timezone=cfg.timezone,
                                           dry_run=dry_run, progress=progress)
            except ImportBusy as exc:
                return exc

    report = run_with_store(work)
    if isinstance(report, ImportBusy):
        fail(str(report), code=EXIT_BUSY)
    if json_out:
        print_json(report.as_dict())
    else:
        _show(report)
    for failed in report.unreadable_files:
        err.print(f"Error: {failed.path}: {failed.reason}", highlight=False, markup=False)
    if report.unreadable_files:
        raise typer.Exit(1)


def _show(report: Any) -> None:
    from bot.legacy_import import kind_label

    if report.dry_run:
        out.print("Dry run: nothing was written ('imported' means: would be imported).",
                  highlight=False, markup=False)
    elif report.unreadable_files:
        out.print(f"Nothing was written: {len(report.unreadable_files)} file(s) unreadable; "
                  "fix them or leave them out, then run again.", highlight=False, markup=False)
    print_table("Import of the earlier Axi's data",
                ["file", "kind", "encoding", "imported", "skipped", "unreadable", "outcome"],
                [(f.path, kind_label(f.kind), f.encoding or "", f.counts["imported"],
                  f.counts["skipped"], f.counts["unreadable"],
                  f"{f.status}: {f.reason}" if f.reason else f.status)
                 for f in report.files])
    counts = report.counts()
    kinds = Counter(o.what for o in report.outcomes if o.status == "imported")
    detail = ", ".join(f"{n} {what}" for what, n in kinds.most_common())
    out.print(f"{counts['imported']} imported" + (f" ({detail})" if detail else "")
              + f", {counts['skipped']} skipped, {counts['unreadable']} unreadable "
              f"(kept as raw souvenirs), in {report.seconds:.1f} s.",
              highlight=False, markup=False)
    _section("Skipped", [o for o in report.outcomes if o.status == "skipped"], grouped=True)
    _section("Unreadable (kept as raw souvenirs, type 'brut')",
             [o for o in report.outcomes if o.status == "unreadable"])
    notes = [f"  {f.path}: {note}" for f in report.files for note in f.notes]
    notes += [f"  {o.where}: {o.reason}" for o in report.outcomes
              if o.status == "imported" and o.reason]
    if notes:
        out.print("Notes:", highlight=False, markup=False)
        for line in notes[:LISTED]:
            out.print(line, highlight=False, markup=False)
        if len(notes) > LISTED:
            out.print(f"  … and {len(notes) - LISTED:,} more (see --json)", highlight=False,
                      markup=False)


def _section(title: str, outcomes: list[Any], *, grouped: bool = False) -> None:
    if not outcomes:
        return
    out.print(f"{title}:", highlight=False, markup=False)
    if grouped:
        by_reason: dict[str, list[Any]] = defaultdict(list)
        for o in outcomes:
            by_reason[o.reason or ""].append(o)
        many = {r: g for r, g in by_reason.items() if len(g) > 5}
        for reason, group in many.items():
            first = ", ".join(o.where for o in group[:3])
            out.print(f"  {reason}: {len(group):,} items ({first}…)", highlight=False,
                      markup=False)
        outcomes = [o for o in outcomes if (o.reason or "") not in many]
    for o in outcomes[:LISTED]:
        out.print(f"  {o.where}: {o.reason} — « {o.text} »" if o.text else
                  f"  {o.where}: {o.reason}", highlight=False, markup=False)
    if len(outcomes) > LISTED:
        out.print(f"  … and {len(outcomes) - LISTED:,} more (see --json)", highlight=False,
                  markup=False)
