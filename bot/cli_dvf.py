"""`axi dvf import [FILE|URL]…` (issue 12): load Etalab geo-DVF files into ventes_dvf, the
sales the DVF veille reports and the DPE veille looks up. With no argument, the
configured release (AXI_DVF_URL, each of the last five years; a year not published yet
is a note, not an error). A progress bar while it reads, then a report; the exit status
is 1 when a file could not be read (entirely or past some point), the others imported.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bot.cli_support import err, fail, out, print_json, print_table, run_with_store, settings

dvf_app = typer.Typer(help="DVF: property sales open data (geo-DVF).", no_args_is_help=True)


@dvf_app.command("import")
def dvf_import(
    sources: Annotated[list[str] | None, typer.Argument(
        help="geo-DVF CSV files or URLs (.csv or .csv.gz); default: AXI_DVF_URL, "
             "the last five years.", show_default=False)] = None,
    departement: Annotated[str, typer.Option(
        "--departement", help="Keep only this département's rows (code_departement); "
                              "'all' keeps every row.")] = "24",
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Import geo-DVF sales (idempotent: a sale already known is left as it is)."""
    from jobs.dvf_import import default_sources, import_sources  # jobs/ only lazily

    cfg = settings()
    default = not sources
    chosen = list(sources or default_sources(cfg.dvf_url, datetime.now()))
    for source in chosen:
        if "://" in source and (problem := _bad_url(source)):
            fail(f"{source!r} is not a usable URL: {problem}", code=2)
    dep = None if departement.strip().lower() in {"all", "*", "tous"} else _departement(
        departement)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                   transient=True, disable=json_out)
    tasks: dict[str, Any] = {}

    def progress(done: int, total: int | None, what: str) -> None:
        if what not in tasks:
            tasks[what] = bar.add_task(what.rsplit("/", 1)[-1][:40], total=total)
        bar.update(tasks[what], completed=done, total=total)

    async def work(store: Any) -> Any:
        with bar:
            return await import_sources(store, chosen, departement=dep, progress=progress,
                                        default=default, user_agent=cfg.veille_user_agent)

    report = run_with_store(work)
    if json_out:
        print_json(report.as_dict())
    else:
        print_table(f"DVF import (département {dep or 'all'})",
                    ["file", "rows read", "sales new", "already known", "rows skipped",
                     "outcome"],
                    [(s.source, f"{s.rows_read:,}", f"{s.sales_new:,}", f"{s.sales_known:,}",
                      f"{sum(s.skipped.values()):,}", s.error or s.note or "ok")
                     for s in report.sources])
        outside = report.total("rows_outside")
        out.print(f"{len(report.sources)} file(s), {report.total('rows_read'):,} rows read"
                  + (f" ({outside:,} outside the département)" if outside else "")
                  + f", {report.total('sales_new'):,} new sales, "
                  f"{report.total('sales_known'):,} already known, "
                  f"{sum(report.skipped().values()):,} rows skipped, "
                  f"in {report.seconds:.1f} s.", highlight=False)
        for reason, count in report.skipped().most_common():
            out.print(f"  skipped {count:,}: {reason}", highlight=False)
        for source in report.sources:
            if source.note:
                out.print(f"  note: {source.source}: {source.note}", highlight=False)
    for failed in report.failed:
        err.print(f"[bold red]Error:[/] {escape(failed.source)}: {escape(failed.error or '')}",
                  highlight=False)
    if report.failed:
        raise typer.Exit(1)


_DEPARTEMENT = re.compile(r"0[1-9]|1\d|2[1-9AB]|[3-8]\d|9[0-5]|97[1-6]")


def _departement(value: str) -> str:
    """A French département code as geo-DVF writes it (24, 2A, 971); anything else keeps
    no row at all, and the import said 'ok' having imported nothing."""
    code = value.strip().upper()
    if not _DEPARTEMENT.fullmatch(code):
        fail(f"--departement is a French département code (e.g. 24, 2A, 971) or 'all', "
             f"not {value!r}", code=2)
    return code


def _bad_url(value: str) -> str | None:
    """Why `value` cannot be fetched (httpx's own parser, as the download uses), or None."""
    import httpx

    try:
        url = httpx.URL(value)
        port = url.port
    except (httpx.InvalidURL, ValueError, OverflowError) as exc:
        return str(exc) or type(exc).__name__
    if url.scheme not in {"http", "https"}:
        return "only http:// and https:// URLs are fetched"
    if not url.host:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return f"port {port} out of range"
    return None
