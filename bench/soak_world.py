"""The soak's world (bench/soak.py): Axi for real, as `axi run` subprocesses, and every
server it talks to, owned by the soak so that it may break them.

- PostgreSQL 16: the `pgserver` binaries Axi embeds, in the soak's own directory, started
  and restarted by the soak (`pg_ctl stop -m fast`, then started again); never the shared
  server of the test suite. Axi reaches it through `AXI_DATABASE_URL`.
- Telegram: the loopback Bot API (tests/fakes/telegram_server.py).
- Email: a real Dovecot (IMAPS, the test CA trusted through SSL_CERT_FILE) and a real SMTP
  server capturing what Axi sends (aiosmtpd), which the soak closes for a while.
- The HTTP API (`POST /api/chat` with `axi`'s chat tokens), the site's `/chat-proxy` and
  `/contact` (each visitor behind its own `CF-Connecting-IP`), Axis over MCP.
- The local model: the simulated CPU Ollama (tests/fakes/cpu_ollama.py: one slot, prompt
  and generation rates of a 7B on a CPU, on a scaled clock), stopped for a while; the
  fallback: the loopback Anthropic server, whose every request body is kept.
- A DPE veille on the scheduler of `axi run` (every minute) against the loopback ADEME
  API, which gains new DPEs as the soak goes; one `axi veille run dpe` beside it; one
  `axi backup run` (restic) in the middle.

The people (bench/soak_people.py) write through their channels' real protocols; what they
see is recorded as `Seen` (bench/soak_checks.py).

The models' scripts, the soak's PostgreSQL and `axi run` are in bench/soak_servers.py, the
people's clients per channel in bench/soak_clients.py; here their assembly: starting and
stopping it all, the disruptions the soak plays, and what it reads back for the checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench.soak_checks import TOKEN, Seen, Sent, Stored
from bench.soak_clients import AUTHSERV, AXI_ADDRESS, SITE_ORIGIN, SoakClients
from bench.soak_people import Person, Planned
from bench.soak_servers import (
    AxiProcess,
    SoakCpuOllama,
    SoakPostgres,
    claude_reply,
    free_port,
    model_reply,
)
from memory.database import Database, open_database
from memory.store import MemoryStore
from tests.fakes.ademe_server import FakeAdeme, dpe_row
from tests.fakes.anthropic_server import TEST_API_KEY, FakeAnthropic
from tests.fakes.cpu_model import CpuConfig
from tests.fakes.dovecot import Dovecot
from tests.fakes.smtp_capture import SmtpCapture
from tests.fakes.telegram_server import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("soak")

AGENCY = "agence@icidordogne.fr"
RESTIC_PASSWORD = "soak-restic-password"  # pragma: allowlist secret  (a throwaway repository)
DPE_CONFIG = {"dataset": "dpe03existant", "codes_postaux": ["24260", "24510"],
              "prix_m2": {"24260": 1800, "24510": 1600}, "fourchette": 0.15,
              "recouvrement_jours": 60, "ras": False, "taille_page": 50}
DIGEST_RECIPIENTS = (AGENCY,)
CLI_TIMEOUT_S = 300.0


# ---------------------------------------------------------------------- the world
@dataclass
class SoakConfig:
    messages: int
    people: int
    kills: int
    seed: int
    time_scale: float
    duration_s: float  # the sending phase, wall seconds
    ollama_outage_s: float
    smtp_cut_s: float
    pg_down_s: float
    drain_s: float  # at most this long after the sending phase for everything to settle
    work_dir: Path
    keep: bool = False
    reply_tokens: int = 50


@dataclass
class Timeline:
    t0: float = field(default_factory=time.monotonic)
    events: list[tuple[float, str]] = field(default_factory=list)

    def note(self, what: str) -> None:
        at = time.monotonic() - self.t0
        self.events.append((at, what))
        log.info("[%6.1f s] %s", at, what)




class SoakWorld(SoakClients):
    """Every server, `axi run`, the people's clients and what they saw."""

    def __init__(self, cfg: SoakConfig, people: list[Person]):
        self.cfg = cfg
        self.people = people
        self.dir = cfg.work_dir
        self.timeline = Timeline()
        self.sent: dict[str, Sent] = {}
        self.client_seen: list[Seen] = []
        self.cloud_texts: list[str] = []  # what Axis (Claude.ai) read over MCP
        self.tokens: dict[str, str] = {}  # person key -> API token
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.mono_minus_wall = time.monotonic() - time.time()
        self.backup: dict[str, Any] = {}
        self.veille_run: dict[str, Any] = {}
        self.dpe_serial = 0
        self._stack = contextlib.AsyncExitStack()
        self.db: Database
        self.store: MemoryStore
        self.axi: AxiProcess
        self.reply_timeout_s = 60.0
        self.planned: list[Planned] = []
        self.final_seen: list[Seen] = []
        self.final_stored: list[Stored] = []

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> SoakWorld:
        try:
            await self._start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def _start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        (self.dir / "cwd").mkdir(exist_ok=True)  # no .env there
        self.pg = SoakPostgres(self.dir)
        url = await asyncio.to_thread(self.pg.start)
        self.timeline.note(f"PostgreSQL 16 started ({self.pg.pgdata})")
        self.telegram = FakeTelegram()
        self.telegram.start()
        self.dovecot = Dovecot()
        await asyncio.to_thread(self.dovecot.start)
        self.smtp = SmtpCapture()
        self.smtp.start()
        cpu = CpuConfig(num_parallel=1, time_scale=self.cfg.time_scale)
        self.cpu = SoakCpuOllama(cpu)
        self.cpu.reply = lambda body: model_reply(body, self.cfg.reply_tokens)
        self.cpu.json_reply = json.dumps({"faits": [], "oublis": []})
        self.cpu.start()
        self.anthropic = FakeAnthropic()
        self.anthropic.reply = claude_reply
        self.anthropic.start()
        self.ademe = FakeAdeme([self._dpe() for _ in range(6)])
        self.ademe.start()
        # the fakes' uvicorn servers log their long polls cut at the end as errors: no news
        # (a filter, which survives the logging configuration each restart of a fake redoes)
        logging.getLogger("uvicorn.error").addFilter(lambda r: r.levelno >= logging.CRITICAL)
        self.env = self._env(url)
        upgrade = await self.axi_cli("db", "upgrade")
        if upgrade.returncode != 0:
            raise RuntimeError(f"axi db upgrade failed: {upgrade.stderr[-2000:]}")
        self.db = await self._stack.enter_async_context(open_database(url, self.dir / "data"))
        self.store = MemoryStore(self.db)
        await self._people()
        await self._veille()
        self.axi = AxiProcess(self.env, self.dir / "cwd", self.dir / "logs", self.url)
        self.axi.start()
        await self.axi.ready()
        self.timeline.note(f"axi run is up ({self.url})")

    async def __aexit__(self, *exc: object) -> None:
        axi = getattr(self, "axi", None)
        if axi is not None:
            await asyncio.to_thread(axi.stop)
        await self._stack.aclose()
        for name in ("telegram", "smtp", "cpu", "anthropic", "ademe"):
            server = getattr(self, name, None)
            if server is not None:
                with contextlib.suppress(Exception):
                    server.stop()
        dovecot = getattr(self, "dovecot", None)
        if dovecot is not None:
            await asyncio.to_thread(dovecot.close)
        pg = getattr(self, "pg", None)
        if pg is not None:
            await asyncio.to_thread(pg.stop)
        if not self.cfg.keep:
            shutil.rmtree(self.dir / "pgdata", ignore_errors=True)
            shutil.rmtree(self.dir / "restic", ignore_errors=True)
            shutil.rmtree(self.dir / "data", ignore_errors=True)

    def _env(self, database_url: str) -> dict[str, str]:
        scale = self.cfg.time_scale
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AXI_", "OLLAMA_",
                                                                          "ANTHROPIC_"))}
        env.update({
            "PYTHONPATH": str(ROOT), "AXI_DATABASE_URL": database_url,
            "AXI_DATA_DIR": str(self.dir / "data"), "AXI_HTTP_PORT": str(self.http_port),
            "AXI_LOG_LEVEL": "INFO", "AXI_QUIET_HOURS": "off",
            "OLLAMA_HOST": self.cpu.url, "ANTHROPIC_API_KEY": TEST_API_KEY,
            "ANTHROPIC_BASE_URL": self.anthropic.url,
            # background work waits for this much quiet, and is bounded so (model time)
            "AXI_BACKGROUND_QUIET": f"{max(20.0 * scale, 0.05):.3f}",
            "AXI_BACKGROUND_MAX": f"{max(120.0 * scale, 3.0):.3f}",
            "AXI_TELEGRAM_TOKEN": FakeTelegram.TOKEN,
            "AXI_TELEGRAM_API_URL": self.telegram.base_url,
            "AXI_TELEGRAM_FILE_URL": self.telegram.base_file_url,
            "AXI_EMAIL_ADDRESS": AXI_ADDRESS, "AXI_MAIL_AUTHSERV_ID": AUTHSERV,
            "AXI_IMAP_HOST": self.dovecot.host, "AXI_IMAP_PORT": str(self.dovecot.ssl_port),
            "AXI_IMAP_TLS": "ssl", "AXI_IMAP_USER": self.dovecot.user,
            "AXI_IMAP_PASSWORD": self.dovecot.password,
            "SSL_CERT_FILE": str(self.dovecot.cafile),
            "AXI_SMTP_HOST": self.smtp.host, "AXI_SMTP_PORT": str(self.smtp.port),
            "AXI_SMTP_TLS": "none",
            "AXI_EMAIL_MAX_PER_SENDER_HOUR": "10000", "AXI_EMAIL_MAX_PER_HOUR": "100000",
            "AXI_SITE_ORIGINS": SITE_ORIGIN, "AXI_WEB_RATE_PER_MINUTE": "600",
            "AXI_WEB_REPLY_TIMEOUT_S": f"{self.reply_timeout_s:.0f}",
            "AXI_AGENCY_EMAIL": AGENCY, "AXI_ADEME_API_URL": self.ademe.url,
            # the DPE veille's enrichment sources are not part of the soak: refused at once
            "AXI_GEO_API_URL": f"http://127.0.0.1:{free_port()}",
            "AXI_ANNUAIRE_API_URL": f"http://127.0.0.1:{free_port()}",
        })
        return env

    async def axi_cli(self, *args: str, extra: dict[str, str] | None = None
                      ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra or {})}
        return await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "bot.cli", *args], env=env,
            cwd=self.dir / "cwd", capture_output=True, text=True, timeout=CLI_TIMEOUT_S)

    async def _people(self) -> None:
        """The roster, as `axi people add` and `axi tokens create` make them (the same
        store calls, in this process: thirty CLI runs would cost the quick soak 25 s)."""
        s = self.store
        for p in self.people:
            if p.kind == "axis":
                axis = await s.ensure_axis_person()
                self.tokens[p.key] = (await s.create_token(axis, scope="axis")).secret
                continue
            if not p.known:
                continue
            identities = []
            if p.telegram is not None:
                identities.append(("telegram", str(p.telegram)))
            if p.email is not None:
                identities.append(("email", p.email))
            person = await s.add_person(
                p.name, relation=p.relation or "client",
                comment_interagir="vouvoie" if p.vouvoie else "tutoie",
                identities=identities, jamais_hors_serveur=p.never_cloud)
            if p.web:
                self.tokens[p.key] = (await s.create_token(person.id, scope="chat")).secret

    async def _veille(self) -> None:
        """The seeded DPE veille every minute against the loopback ADEME API, its digest
        mailed to the agency (and summed up for Ludo); the DVF veille paused."""
        await self.store.edit_veille(
            "dpe", horaire="* * * * *", config=DPE_CONFIG,
            destinataires={"courriel": ["agence"], "resume": ["Ludo"]}, active=True)
        with contextlib.suppress(Exception):
            await self.store.edit_veille("dvf", active=False)

    def _dpe(self) -> dict[str, Any]:
        self.dpe_serial += 1
        rng = random.Random(self.dpe_serial)
        code = ("24260", "24510")[self.dpe_serial % 2]
        return dpe_row(f"2624S{self.dpe_serial:08d}", date.today() - timedelta(days=1), code,
                       classe=rng.choice("ABCDEFG"), surface=float(rng.randrange(30, 220)),
                       address=f"{self.dpe_serial} rue du Marché {code}")

    # ------------------------------------------------------------------ disruptions
    async def kill_and_restart(self, rng: random.Random) -> None:
        async with self.axi.lifecycle:
            await asyncio.to_thread(self.axi.kill)
            self.timeline.note(f"SIGKILL axi run (kill {self.axi.kills})")
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            exits = len(self.axi.own_exits)
            await self.axi.restart_until_up()
            again = len(self.axi.own_exits) - exits
        self.timeline.note("axi run restarted and up" + (
            f" (after {again} exit(s) while starting)" if again else ""))

    async def ollama_outage(self, seconds: float) -> None:
        await asyncio.to_thread(self.cpu.stop)
        self.timeline.note(f"local model stopped for {seconds:.0f} s")
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.cpu.start)
        self.timeline.note("local model back")

    async def smtp_cut(self, seconds: float) -> None:
        await asyncio.to_thread(self.smtp.down)
        self.timeline.note(f"SMTP cut for {seconds:.0f} s")
        await asyncio.sleep(seconds)
        await asyncio.to_thread(self.smtp.up)
        self.timeline.note("SMTP back")

    async def pg_restart(self, down_s: float) -> None:
        await asyncio.to_thread(self.pg.stop)
        self.timeline.note(f"PostgreSQL stopped (fast) for {down_s:.0f} s")
        await asyncio.sleep(down_s)
        await asyncio.to_thread(self.pg.start_again)
        self.timeline.note("PostgreSQL started again")

    async def take_backup(self) -> None:
        self.timeline.note("axi backup run")
        began = time.monotonic()
        done = await self.axi_cli("backup", "run", "--json", extra={
            "AXI_BACKUP_REPOSITORY": str(self.dir / "restic"),
            "RESTIC_PASSWORD": RESTIC_PASSWORD})
        report: dict[str, Any] = {}
        with contextlib.suppress(ValueError):
            report = json.loads(done.stdout)
        self.backup = {"exit": done.returncode, "seconds": time.monotonic() - began,
                       "ok": done.returncode == 0 and bool(report.get("ok")),
                       "snapshot": next((r.get("snapshot") for r in report.get(
                           "repositories") or []), None),
                       "error": done.stderr.strip().splitlines()[-1:] if done.returncode else []}
        self.timeline.note(f"backup: {'ok' if self.backup['ok'] else 'FAILED'} "
                           f"(exit {done.returncode}, snapshot {self.backup['snapshot']})")

    async def run_veille_by_hand(self) -> None:
        self.timeline.note("axi veille run dpe (beside the scheduler)")
        done = await self.axi_cli("veille", "run", "dpe")
        self.veille_run = {"exit": done.returncode,
                           "said": (done.stdout + done.stderr).strip().splitlines()[-1:]}
        self.timeline.note(f"axi veille run dpe: exit {done.returncode}")

    async def new_dpes(self, count: int) -> None:
        self.ademe.add([self._dpe() for _ in range(count)])

    # ------------------------------------------------------------------ observing
    def seen(self) -> list[Seen]:
        """Everything the people saw: the clients' records, the Telegram chats, the mails."""
        return [*self.client_seen, *self.telegram_seen(), *self.mail_seen()[0]]


    def busy_intervals(self) -> list[tuple[float, float]]:
        """When the simulated CPU computed (loading, evaluating, generating), in this
        process's monotonic seconds."""
        scale, t0 = self.cpu.config.time_scale, self.cpu._t0
        out = []
        for r in list(self.cpu.records):
            if r.finished_s is None:
                continue
            busy = r.load_s + r.prompt_eval_s + r.eval_s
            out.append((t0 + (r.finished_s - busy) * scale, t0 + r.finished_s * scale))
        return out

    async def stored(self) -> list[Stored]:
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT i.id, i.canal, i.etat, i.texte, i.tentatives, count(o.id) FILTER "
                "(WHERE coalesce(o.metadata->>'genre', 'reply') = 'reply') AS replies, "
                "coalesce(max(o.tentatives) FILTER (WHERE coalesce(o.metadata->>'genre', "
                "'reply') = 'reply'), 0) AS send_tries "
                "FROM messages i LEFT JOIN messages o ON o.en_reponse_a = i.id "
                "AND o.sens = 'sortant' WHERE i.sens = 'entrant' GROUP BY i.id "
                "ORDER BY i.id"))).all()
            contacts = (await conn.execute(text(
                "SELECT id, message, relaye_le IS NOT NULL AS relayed FROM demandes_contact "
                "ORDER BY id"))).all()
        out = []
        for r in rows:
            tokens = TOKEN.findall(r.texte)
            out.append(Stored(int(r.id), str(r.canal), tokens[0] if tokens else None,
                              str(r.etat), int(r.replies), int(r.tentatives),
                              int(r.send_tries)))
        for c in contacts:
            tokens = TOKEN.findall(c.message)
            out.append(Stored(int(c.id), "contact", tokens[0] if tokens else None,
                              "relaye" if c.relayed else "a_relayer", 0))
        return out

    def dpe_served(self) -> list[str]:
        """Every DPE the loopback ADEME API serves (the veille must report each once)."""
        return [str(r["numero_dpe"]) for r in list(self.ademe.rows)]

    async def veille_items(self) -> tuple[list[str], int]:
        """(every DPE item the veille stored, how many are not yet reported)."""
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT e.cle, e.signale_le IS NULL AS waiting FROM elements_veille e "
                "JOIN veilles v ON v.id = e.veille_id WHERE v.nom = 'dpe'"))).all()
        return [str(r.cle) for r in rows], sum(1 for r in rows if r.waiting)

    async def settled(self) -> tuple[bool, str]:
        """Nothing left to do: the inbox and outbox empty, every veille item reported,
        every expected outcome seen. (False, what is still missing) otherwise."""
        try:
            pending = await self.store.pending_counts()
            items, unreported = await self.veille_items()
        except Exception as exc:  # the database is restarting
            return False, f"database: {type(exc).__name__}"
        unreported += len(set(self.dpe_served()) - set(items))  # not even fetched yet
        seen = self.seen()
        replied = {s.token for s in seen if s.kind in ("reply", "relay")}
        told = {s.conversation for s in seen if s.kind == "stranger_notice"}
        missing = [m.token for m in self.sent.values()
                   if (m.expect in ("reply", "relay") and m.token not in replied)
                   or (m.expect == "stranger" and m.conversation not in told)]
        unsent = len(self.planned) - len(self.sent)
        if pending or unreported or missing or unsent:
            return False, (f"pending {pending}, unreported veille items {unreported}, "
                           f"outcomes not seen {len(missing)}, not sent yet {unsent}")
        return True, ""

    async def usage(self) -> dict[str, Any]:
        return await self.store.llm_usage(days=1)

    def local_model_texts(self) -> list[str]:
        return [json.dumps(r.body, ensure_ascii=False) for r in list(self.cpu.requests)
                if r.path in ("/api/chat", "/api/generate")]

    def cloud(self) -> list[str]:
        """Every text that reached the cloud: the fallback's request bodies and what Axis
        read over MCP."""
        bodies = [json.dumps(b, ensure_ascii=False) for b in self.anthropic.bodies]
        return [*bodies, *self.cloud_texts]


def spread(rng: random.Random, count: int, start: float, end: float, gap: float) -> list[float]:
    """`count` random moments in [start, end], at least `gap` apart when room allows."""
    if count <= 0:
        return []
    room = end - start - gap * (count - 1)
    if room <= 0:
        return [start + (end - start) * (i + 0.5) / count for i in range(count)]
    cuts = sorted(rng.uniform(0, room) for _ in range(count))
    return [start + c + gap * i for i, c in enumerate(cuts)]

