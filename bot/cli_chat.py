"""`axi run`, `axi ask`, `axi chat` and `axi llm status`: the whole assistant, one message
through the whole pipeline, an interactive terminal, and the LLM's health and spend.

The assistant, its LLM clients and its channels are imported inside the commands that
use them (through the composition root, `channels/registry.py`): `axi --help` and the
memory commands load no transport library.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli_llm import figures_json, print_figures
from bot.cli_support import err, fail, out, print_json, print_table, run, settings
from bot.config import Settings

if TYPE_CHECKING:
    from bot.app import Axi
    from bot.channel import ReplyOutcome

llm_app = typer.Typer(help="The language models: status and local share.", no_args_is_help=True)
EXIT_WAITING = 4
EXIT_CONFIG = 2

AsOpt = Annotated[str | None, typer.Option("--as", help="Speak as this person (name or id).")]
LocalOnlyOpt = Annotated[bool, typer.Option(
    "--local-only", help="Never send this message to Claude: only the local model answers it.")]


async def console_address(axi: Axi, who: str | None) -> str:
    from channels.registry import console_address as address_of

    return address_of(None if who is None else (await axi.store.get_person(who)).id)


def configure_logging(cfg: Settings, *, quiet: bool) -> None:
    """Plain or JSON lines (AXI_LOG_JSON), secrets redacted (bot/logs.py)."""
    from bot.logs import configure

    configure(cfg, quiet=quiet)


def ask(
    message: str,
    as_: AsOpt = None,
    extract: Annotated[bool, typer.Option(help="Extract facts after the reply (else `axi run` will).")]
    = True,
    local_only: LocalOnlyOpt = False,
) -> None:
    """Send one message through the whole pipeline and print Axi's reply."""
    from bot.app import Axi
    from channels.registry import for_terminal

    cfg = settings()
    configure_logging(cfg, quiet=True)
    wiring = for_terminal(cfg, sys.stdout, stream=False)
    console = wiring.channels["console"]

    async def main() -> int:
        async with Axi(cfg, wiring) as axi:
            inbound = axi.console_inbound(message, await console_address(axi, as_),
                                          local_only=local_only)
            outcome = await axi.answer_one(inbound)
            show_if_elsewhere(console, outcome)
            if not outcome.answered:
                if outcome.state == "en_attente":
                    err.print("The message is waiting in the inbox; `axi run` will answer it "
                              "when a model is available.", highlight=False)
                else:
                    err.print(f"The message was not answered ({outcome.state}).",
                              highlight=False)
                return EXIT_WAITING
            if not extract:
                return 0
            # this command's own extraction, now: nobody else waits for this process's model
            axi.gate.quiet_s = 0.0
            with contextlib.suppress(TimeoutError):  # facts after the reply, bounded
                async with asyncio.timeout(120):
                    await axi.extractor.extract_one(message_id=outcome.message_id)
            return 0

    code = run(main())
    raise typer.Exit(code)


def chat(as_: AsOpt = None, local_only: LocalOnlyOpt = False) -> None:
    """Talk with Axi in the terminal (line by line when stdin is not a terminal)."""
    from bot.app import Axi
    from channels.registry import for_terminal

    cfg = settings()
    configure_logging(cfg, quiet=True)
    tty = sys.stdin.isatty()
    wiring = for_terminal(cfg, sys.stdout, stream=tty)

    async def main() -> int:
        async with Axi(cfg, wiring) as axi:
            address = await console_address(axi, as_)
            axi.start_loops(worker=False, outbox=False, extractor=True, embeddings=False,
                            maintenance=False)
            if tty:
                out.print("[bold]Axi[/] — écrivez votre message (Ctrl-D pour quitter).")
            while True:
                line = await asyncio.to_thread(_read_line, tty)
                if line is None:
                    break
                if not line.strip():
                    continue
                outcome = await axi.answer_one(
                    axi.console_inbound(line, address, local_only=local_only))
                show_if_elsewhere(wiring.channels["console"], outcome)
                axi.extractor.wake.set()
            return 0

    raise typer.Exit(run(main()))


def show_if_elsewhere(console: object, outcome: ReplyOutcome) -> None:
    """Print the reply when another process answered (and delivered) it: the console
    of this process printed only what it delivered itself."""
    from bot.channel import Delivery

    shown = {d.message_id for d in console.delivered}  # type: ignore[attr-defined]
    if outcome.answered and outcome.reply_id not in shown:
        console.show(Delivery(  # type: ignore[attr-defined]
            message_id=outcome.reply_id or 0, channel="console", address="", conversation="",
            text=outcome.reply or "", in_reply_to=outcome.message_id, thread_ref=None))


def _read_line(tty: bool) -> str | None:
    try:
        return input("vous> " if tty else "")
    except EOFError:
        return None


def run_command() -> None:
    """Run the whole assistant: channels, worker, outbox, extractor, HTTP server."""
    from bot.app import Axi, freeze_heap
    from channels.registry import for_run

    cfg = settings()
    configure_logging(cfg, quiet=False)
    log = logging.getLogger("axi")
    wiring = for_run(cfg)
    from jobs.registry import for_run as jobs_for_run

    wiring.jobs = list(jobs_for_run(cfg))

    async def main() -> int:
        async with Axi(cfg, wiring, alerting=True) as axi:
            # first: a stop asked while the channels start or the local model is probed
            # (up to 5 s) is a clean stop once they are done, not the signal's default
            # (killed: `docker stop` or systemd at the wrong moment)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, axi.stop_event.set)
            try:
                await axi.start_channels()
            except OSError as exc:  # the HTTP port in use, a socket not allowed…
                fail(str(exc), code=EXIT_CONFIG)
            axi.start_loops()
            await axi.start_jobs()
            freeze_heap()
            web = axi.channels.get("web")
            log.info("Axi est en marche — http://%s:%s/health", cfg.http_host,
                     getattr(web, "port", cfg.http_port))
            for line in missing(cfg):
                log.warning("%s", line)
            local = await axi.router.local.probe()  # type: ignore[attr-defined]
            if local["state"] != "ok":
                log.warning("Modèle local indisponible / local model unavailable (%s): %s — "
                            "les messages attendront / messages will wait", local["state"],
                            local["detail"])
            await axi.stop_event.wait()
            log.info("Arrêt demandé : Axi s'arrête proprement.")
        return 0

    raise typer.Exit(run(main()))


def missing(cfg: Settings) -> list[str]:
    """What is not configured, in French and English, for the operator's log."""
    notes = []
    if cfg.embedded_database:
        notes.append(f"Base embarquée / embedded database: {cfg.data_dir / 'pgdata'}")
    if cfg.anthropic_api_key is None:
        notes.append("Pas de repli Claude (ANTHROPIC_API_KEY absent) / no Claude fallback")
    if cfg.telegram_token is None:
        notes.append("Telegram désactivé (AXI_TELEGRAM_TOKEN absent) / Telegram off")
    if not (cfg.email_address and cfg.smtp_host):
        notes.append("Courriel désactivé (AXI_EMAIL_ADDRESS/AXI_SMTP_HOST absents) / email off")
    elif not cfg.imap_host:
        notes.append("Courriel : envoi seulement (AXI_IMAP_HOST absent) / email: sending only")
    if cfg.email_address and cfg.imap_host and not cfg.mail_authserv_id:
        notes.append("Courriel : AXI_MAIL_AUTHSERV_ID absent, aucun expéditeur n'est vérifié, "
                     "aucun courriel n'aura de réponse automatique / no sender can be verified")
    if cfg.embed_model is None:
        notes.append("Rappel hybride désactivé (AXI_EMBED_MODEL=off) : texte intégral seul / "
                     "hybrid recall off: full text only")
    return notes


@llm_app.command("status")
def llm_status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Both providers, the share answered locally over 1, 7 and 30 days, and the local
    model as measured (prompt and generation rates, cache share, queue wait)."""
    from bot.app import Axi

    cfg = settings()

    async def main():  # type: ignore[no-untyped-def]
        async with Axi(cfg) as axi:
            local = await axi.router.local.probe()  # type: ignore[attr-defined]
            usage = {d: await axi.store.llm_usage(d) for d in (1, 7, 30)}
            spend = await axi.store.claude_spend_this_month(timezone=cfg.timezone)
            alerts = await axi.store.list_notifications(limit=5, urgent_only=True)
            embedded = (await axi.store.count_embeddings(cfg.embed_model)
                        if cfg.embed_model else None)
            total = await axi.store.count_souvenirs()
            measured = await axi.store.llm_local_status()
            return (local, usage, spend, axi.router.remote is not None, alerts, embedded,
                    total, measured)

    local, usage, spend, remote, alerts, embedded, total, measured = run(main())
    report = {
        "local": {"host": cfg.ollama_host, "model": cfg.local_model, **local},
        "fallback": {"configured": remote, "model": cfg.fallback_model,
                     "spend_this_month_eur": round(spend, 4),
                     "monthly_budget_eur": cfg.claude_monthly_budget_eur},
        "usage": usage,
        "local_measured": figures_json(measured),
        "embeddings": {"model": cfg.embed_model, "souvenirs_embedded": embedded,
                       "souvenirs": total},
        "alerts": [{"key": a.cle, "text": a.texte, "queued": a.messages_mis_en_file,
                    "raised_at": a.cree_le.isoformat()} for a in alerts],
    }
    if json_out:
        print_json(report)
        return
    out.print(f"Local: {cfg.local_model} at {cfg.ollama_host} — {local['state']}"
              + (f" ({local['detail']})" if local.get("detail") else ""), highlight=False)
    out.print(f"Fallback: {'Claude ' + cfg.fallback_model if remote else 'none (ANTHROPIC_API_KEY unset)'}"
              f" — spent {spend:.2f} € of {cfg.claude_monthly_budget_eur:.2f} € this month",
              highlight=False)

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.0f} %"

    print_table("Answered locally (target ≥ 80 %)", ["period", "replies", "local", "fallbacks",
                                                     "failures", "Claude €"],
                [(f"{d} d", u["replies"], pct(u["local_share"]), u["fallbacks"], u["failures"],
                  f"{u['spend_eur']:.2f}") for d, u in usage.items()])
    print_figures(measured)
    if cfg.embed_model:
        out.print(f"Embeddings: {cfg.embed_model} — {embedded:,} of {total:,} souvenirs embedded "
                  "(hybrid recall once there are some)", highlight=False)
    else:
        out.print("Embeddings: off (AXI_EMBED_MODEL) — full-text recall", highlight=False)
    for alert in alerts:
        out.print(f"Alert {alert.cle} raised {alert.cree_le:%Y-%m-%d %H:%M} "
                  f"({alert.messages_mis_en_file} message(s) queued for Ludo)", highlight=False)
