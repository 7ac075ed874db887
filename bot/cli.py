"""The `axi` command line: one Typer app whose sub-commands are the interfaces that
scripts, the operator runbook and outside checks rely on (DESIGN "Interfaces")."""

from __future__ import annotations

import sys
import time
from typing import Annotated

import typer
from rich.markup import escape
from sqlalchemy import text

from bot import cli_forget  # noqa: F401  (adds `people forget` and `people purge-visitors`)
from bot.cli_backup import backup_app
from bot.cli_chat import ask, chat, llm_app, missing, run_command
from bot.cli_doctor import doctor
from bot.cli_dvf import dvf_app
from bot.cli_legacy import import_app
from bot.cli_mail import mail_app
from bot.cli_memory import consignes_app, facts_app, memory_app, people_app
from bot.cli_ops import confirm_app, inbox_app
from bot.cli_status import status
from bot.cli_support import (
    check_arguments,
    check_tls_environment,
    err,
    opened,
    out,
    print_json,
    print_table,
    run,
    settings,
)
from bot.cli_tokens import tokens_app
from bot.cli_veille import veille_app
from bot.config import redacted
from memory import migrate
from memory.lexicon import LexiconRefresh
from memory.store import MemoryStore

app = typer.Typer(
    name="axi",
    help="Axi, the permanent assistant of ICI Dordogne.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database: schema upgrade and status, statistics.",
                     no_args_is_help=True)
config_app = typer.Typer(help="Configuration.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(people_app, name="people")
app.add_typer(memory_app, name="memory")
app.add_typer(facts_app, name="facts")
app.add_typer(consignes_app, name="consignes")
app.add_typer(llm_app, name="llm")
app.add_typer(confirm_app, name="confirm")
app.add_typer(inbox_app, name="inbox")
app.add_typer(mail_app, name="mail")
app.add_typer(veille_app, name="veille")
app.add_typer(dvf_app, name="dvf")
app.add_typer(tokens_app, name="tokens")
app.add_typer(import_app, name="import")
app.add_typer(backup_app, name="backup")
app.command("run")(run_command)
app.command("ask")(ask)
app.command("chat")(chat)
app.command("doctor")(doctor)
app.command("status")(status)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations (safe to run again)."""
    cfg = settings()

    async def main() -> tuple[migrate.SchemaStatus, migrate.SchemaStatus, str]:
        async with opened(cfg, require_schema=False) as db:
            before, after = await migrate.upgrade(db.engine)
            return before, after, db.display_url

    before, after, where = run(main())
    if before.up_to_date:
        out.print(f"Schema already up to date (revision {after.current}) in {where}.")
    else:
        out.print(f"Upgraded {where} from {before.current or 'empty'} to {after.current} "
                  f"({len(before.pending)} migration(s)).")


@db_app.command("status")
def db_status(json_out: JsonOpt = False) -> None:
    """Show the schema revision and pending migrations."""
    cfg = settings()

    async def main() -> tuple[migrate.SchemaStatus, str]:
        async with opened(cfg, require_schema=False) as db:
            return await migrate.status(db.engine), db.display_url

    st, where = run(main())
    if json_out:
        print_json({"database": where, "current": st.current, "head": st.head,
                    "pending": st.pending, "up_to_date": st.up_to_date})
        return
    out.print(f"Database: {where}")
    out.print(f"Revision: {st.current or '(empty: run `axi db upgrade`)'} (latest {st.head})")
    if st.up_to_date:
        out.print("Up to date.")
    else:
        out.print(f"{len(st.pending)} migration(s) pending: {', '.join(st.pending)}. "
                  "Run `axi db upgrade`.")
        raise typer.Exit(3)


@db_app.command("analyze")
def db_analyze(json_out: JsonOpt = False) -> None:
    """Refresh the planner statistics and rebuild recall's lexicon of word frequencies
    (`axi run` keeps both up to date by itself; use this after a bulk import)."""
    cfg = settings()

    async def main() -> tuple[LexiconRefresh, float, str]:
        async with opened(cfg) as db:
            with err.status("ANALYZE souvenirs…"):
                t0 = time.perf_counter()
                async with db.engine.connect() as conn:
                    await conn.execute(text("ANALYZE souvenirs"))
                    await conn.commit()
                analyze_s = time.perf_counter() - t0
            with err.status("Rebuilding the lexicon (about 10 s per million souvenirs)…"):
                done = await MemoryStore(db).refresh_lexicon(full=True)
            return done, analyze_s, db.display_url

    done, analyze_s, where = run(main())
    if json_out:
        print_json({"database": where, "analyze_seconds": round(analyze_s, 2),
                    "souvenirs": done.souvenirs_counted, "lexemes": done.lexemes,
                    "lexicon_seconds": round(done.seconds, 2)})
        return
    out.print(f"Analyzed {where} in {analyze_s:.1f} s; lexicon rebuilt from "
              f"{done.souvenirs_counted:,} souvenirs: {done.lexemes:,} words in {done.seconds:.1f} s.")


@config_app.command("check")
def config_check(json_out: JsonOpt = False) -> None:
    """Print the effective configuration, secrets redacted; exit 2 if invalid."""
    cfg = settings()
    values = redacted(cfg)
    if json_out:
        print_json(values)
        return
    print_table("Effective configuration", ["setting", "value"], sorted(values.items()))
    for line in missing(cfg):
        out.print(f"- {line}")


def main() -> None:
    check_arguments(sys.argv[1:])
    check_tls_environment()
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # usage: one line, not click's boxed page
        if type(exc).__name__ != "NoArgsIsHelpError":  # that one printed the help already
            ctx = getattr(exc, "ctx", None)
            where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            err.print(f"[bold red]Error:[/] {escape(exc.format_message())}{where}",
                      highlight=False)
        raise SystemExit(getattr(exc, "exit_code", 2)) from None
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        err.print("[bold red]Error:[/] cancelled", highlight=False)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
