"""`axi doctor`: every check Anthony needs before he calls for help, each with the fix in
plain words — configuration, database and migrations, the local model and its models
pulled, the Claude key, each channel's login (Telegram, IMAP, SMTP), disk space, the
backup repository.

Why one module: the checks share one result shape (`Check`) and one verdict (any `fail`
makes the command exit non-zero; `warn` and `off` do not), and each reuses the component's
own code to connect (a channel's `probe`, the local model's `probe`, the database's
opening and migration status) so the doctor never disagrees with `axi run`.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from bot.cli_support import out, print_json, print_table, run
from bot.config import Settings

OK, WARN, FAIL, OFF = "ok", "warn", "fail", "off"
MIN_FREE_BYTES = 2 * 1024**3
MIN_FREE_SHARE = 0.05
PROBE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Check:
    name: str
    state: str
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, str]:
        return asdict(self)


def verdict(checks: list[Check]) -> int:
    """The exit code: 1 when something is wrong, else 0 (pure)."""
    return 1 if any(c.state == FAIL for c in checks) else 0


async def run_checks(cfg: Settings) -> list[Check]:
    checks = [check_config(cfg)]
    checks += await check_database(cfg)
    checks.append(await _bounded("local model", check_ollama(cfg)))
    checks.append(await _bounded("Claude fallback", check_claude(cfg)))
    checks += await check_channels(cfg)
    checks += check_disk(cfg)
    checks += await check_backups(cfg)
    return checks


async def _bounded(name: str, probe: Awaitable[Check]) -> Check:
    try:
        return await asyncio.wait_for(probe, PROBE_TIMEOUT_S)
    except TimeoutError:
        return Check(name, FAIL, f"no answer within {PROBE_TIMEOUT_S:.0f} s",
                     "check that the service runs and the network reaches it")


# ------------------------------------------------------------------ configuration
def check_config(cfg: Settings) -> Check:
    from jobs.cron import ScheduleError, check_schedule

    problems, fixes = [], []
    for alias, value in (("AXI_BACKUP_SCHEDULE", cfg.backup_schedule),
                         ("AXI_BACKUP_VERIFY_SCHEDULE", cfg.backup_verify_schedule)):
        try:
            check_schedule(value)
        except ScheduleError as exc:
            problems.append(f"{alias}: {exc}")
            fixes.append(f"fix {alias} in .env")
    if problems:
        return Check("configuration", FAIL, "; ".join(problems), "; ".join(fixes))
    notes = []
    if not cfg.agency_email:
        notes.append("AXI_AGENCY_EMAIL unset: veille digests go to Ludo only")
    if notes:
        return Check("configuration", WARN, "; ".join(notes),
                     "set AXI_AGENCY_EMAIL (and AXI_AGENCY_CC) in .env")
    return Check("configuration", OK, "settings valid")


def config_failure(message: str) -> Check:
    return Check("configuration", FAIL, message,
                 "fix the setting named above in .env (see .env.example), then run "
                 "`axi doctor` again")


# ------------------------------------------------------------------ database
async def check_database(cfg: Settings) -> list[Check]:
    from memory import migrate
    from memory.database import open_database
    from memory.errors import MemoryStoreError

    url = cfg.database_url.get_secret_value() if cfg.database_url else None
    try:
        async with open_database(url, cfg.data_dir, pool_size=1) as db:
            status = await migrate.status(db.engine)
            where = db.display_url
    except MemoryStoreError as exc:
        fix = ("check AXI_DATA_DIR (free space, permissions) or remove a stale lock; "
               "see docs/exploitation.md" if url is None else
               "check that PostgreSQL runs and AXI_DATABASE_URL (host, port, user, password)")
        return [Check("database", FAIL, str(exc)[:300], fix)]
    checks = [Check("database", OK, where)]
    if status.up_to_date:
        checks.append(Check("migrations", OK, f"schema at {status.current}"))
    else:
        checks.append(Check("migrations", FAIL,
                            f"{len(status.pending)} migration(s) pending "
                            f"({', '.join(status.pending)})", "run `axi db upgrade`"))
    return checks


# ------------------------------------------------------------------ models
async def check_ollama(cfg: Settings) -> Check:
    from bot.llm_wiring import ollama_config
    from llm.ollama_chat import OllamaChat

    chat = OllamaChat(ollama_config(cfg))
    try:
        found = await chat.probe()
    finally:
        await chat.aclose()
    name = "local model"
    if found["state"] == "unreachable":
        return Check(name, FAIL, f"Ollama unreachable at {cfg.ollama_host} ({found['detail']})",
                     "start Ollama (`systemctl start ollama` or `docker compose up -d ollama`) "
                     "and check OLLAMA_HOST")
    if found["state"] == "model missing":
        return Check(name, FAIL, f"not installed in Ollama: {', '.join(found['missing'])}",
                     found["detail"])
    installed = set(found.get("models") or [])
    if cfg.embed_model and not ({cfg.embed_model, f"{cfg.embed_model}:latest"} & installed):
        return Check(name, WARN, f"{cfg.local_model} ready; embedding model {cfg.embed_model} "
                     "missing (recall falls back to full text)",
                     f"ollama pull {cfg.embed_model}, or AXI_EMBED_MODEL=off")
    return Check(name, OK, f"{cfg.local_model} ready at {cfg.ollama_host}")


async def check_claude(cfg: Settings) -> Check:
    from bot.llm_wiring import anthropic_config
    from llm.anthropic_chat import AnthropicChat

    config = anthropic_config(cfg)
    if config is None:
        return Check("Claude fallback", OFF, "ANTHROPIC_API_KEY unset: local model only")
    async with AnthropicChat(config) as chat:
        found = await chat.probe()
    fixes = {"key refused": "create a key at console.anthropic.com and set ANTHROPIC_API_KEY",
             "model unknown": "set AXI_FALLBACK_MODEL to a current model (e.g. "
                              "claude-sonnet-4-6)",
             "unreachable": "check the server's internet access (and ANTHROPIC_BASE_URL if set)"}
    if found["state"] != "ok":
        return Check("Claude fallback", FAIL, found["detail"], fixes.get(found["state"], ""))
    return Check("Claude fallback", OK, f"key accepted, model {cfg.fallback_model}")


# ------------------------------------------------------------------ channels
async def check_channels(cfg: Settings) -> list[Check]:
    from bot.channel import ProbeFailed
    from channels import registry

    checks = []
    builders: dict[str, Callable[[Settings], Any]] = {
        "telegram": registry.telegram_channel, "email": registry.email_channel}
    configured = registry.configured_channels(cfg)
    for name, build in builders.items():
        if name not in configured:
            checks.append(Check(name, OFF, "not configured"))
            continue
        try:
            found = await asyncio.wait_for(build(cfg).probe(), PROBE_TIMEOUT_S)
        except ProbeFailed as exc:
            checks.append(Check(name, FAIL, exc.problem, exc.fix))
        except TimeoutError:
            checks.append(Check(name, FAIL, f"no answer within {PROBE_TIMEOUT_S:.0f} s",
                                "check the server's internet access and the host/port"))
        else:
            checks.append(Check(name, OK, found))
    return checks


# ------------------------------------------------------------------ disk
def check_disk(cfg: Settings) -> list[Check]:
    places = [("disk (data)", cfg.data_dir)]
    repo = cfg.backup_repository
    if repo and (repo.startswith("/") or repo.startswith("local:")):
        places.append(("disk (backups)", Path(repo.removeprefix("local:"))))
    checks = []
    for name, path in places:
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        try:
            usage = shutil.disk_usage(probe)
        except OSError as exc:
            checks.append(Check(name, FAIL, f"cannot read {path}: {exc.strerror}",
                                "check that the disk is mounted"))
            continue
        free = usage.free
        text = f"{free / 1024**3:.1f} GB free of {usage.total / 1024**3:.0f} GB ({path})"
        if free < MIN_FREE_BYTES or free < MIN_FREE_SHARE * usage.total:
            checks.append(Check(name, FAIL, text, "free space (old logs, `docker system prune`, "
                                "a bigger disk): PostgreSQL stops writing when the disk is full"))
        else:
            checks.append(Check(name, OK, text))
    return checks


# ------------------------------------------------------------------ backups
async def check_backups(cfg: Settings) -> list[Check]:
    """Each configured restic repository opens with the password (its snapshots listed),
    through the backups' own code (jobs/backup.py)."""
    if not cfg.backup_repository:
        return [Check("backups", WARN, "AXI_BACKUP_REPOSITORY unset: no backup is taken",
                      "set AXI_BACKUP_REPOSITORY and RESTIC_PASSWORD (docs/exploitation.md)")]
    from jobs.backup import Backups
    from jobs.backup_rules import BackupError

    backups = Backups(None, cfg)
    try:
        backups.check_configured()
        found = await asyncio.wait_for(backups.snapshots(), PROBE_TIMEOUT_S * 2)
    except BackupError as exc:
        return [Check("backups", FAIL, exc.en, "see docs/exploitation.md, « Sauvegardes »")]
    except TimeoutError:
        return [Check("backups", FAIL, "restic did not answer in time",
                      "check the repository's disk or network")]
    fixes = {"mot_de_passe": "RESTIC_PASSWORD is not this repository's password",
             "verrou": "a stale lock: `axi backup unlock` once no backup runs",
             "pas_de_depot": "check that the disk is mounted; the first backup creates "
                             "a new repository (`axi backup run`)",
             "disque_plein": "free space on the backup disk"}
    checks = []
    for depot, snaps in found.items():
        name = f"backups ({depot})"
        if isinstance(snaps, BackupError):
            state = WARN if snaps.kind == "pas_de_depot" else FAIL
            checks.append(Check(name, state, snaps.en, fixes.get(snaps.kind, "see "
                                "docs/exploitation.md, « Sauvegardes »")))
        elif not snaps:
            checks.append(Check(name, WARN, "the repository holds no backup yet",
                                "run `axi backup run` (axi run takes one every day)"))
        else:
            latest = max(s.time for s in snaps)
            checks.append(Check(name, OK, f"{len(snaps)} snapshot(s), the latest "
                                f"{latest:%Y-%m-%d %H:%M} UTC"))
    return checks


# ------------------------------------------------------------------ the command
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_MARK = {"ok": "[green]✓ ok[/]", "warn": "[yellow]! warn[/]", "fail": "[bold red]✗ fail[/]",
         "off": "[dim]– off[/]"}


def doctor(json_out: JsonOpt = False) -> None:
    """Check the configuration, the database, the models, each channel's login, the disk
    and the backups; print the fix for each problem; exit 1 when something is wrong."""
    from bot.config import ConfigError, load_settings

    try:
        cfg = load_settings()
    except ConfigError as exc:
        checks = [config_failure(str(exc))]
    else:
        checks = run(run_checks(cfg))
    code = verdict(checks)
    if json_out:
        print_json({"ok": code == 0, "checks": [c.as_json() for c in checks]})
        raise typer.Exit(code)
    print_table("axi doctor", ["check", "state", "detail", "fix"],
                [(c.name, Text.from_markup(_MARK.get(c.state, escape(c.state))), c.detail, c.fix)
                 for c in checks])
    bad = [c for c in checks if c.state == "fail"]
    out.print(f"{len(bad)} problem(s) to fix." if bad else "Everything checked is fine.",
              highlight=False)
    raise typer.Exit(code)
