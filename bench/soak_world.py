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
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.utils import make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from sqlalchemy import text

from bench.soak_checks import (
    REPLY_TOKEN,
    SECRET,
    TOKEN,
    DigestMail,
    Seen,
    SeenKind,
    Sent,
    Stored,
    dpe_numbers,
)
from bench.soak_people import Person, Planned
from bot.notices import STRANGER_NOTICE
from memory.database import Database, open_database
from memory.store import MemoryStore
from tests.fakes.ademe_server import FakeAdeme, dpe_row
from tests.fakes.anthropic_server import TEST_API_KEY, FakeAnthropic
from tests.fakes.cpu_model import CpuConfig, RequestRecord, tokenize
from tests.fakes.cpu_ollama import CpuOllama
from tests.fakes.dovecot import Dovecot
from tests.fakes.smtp_capture import SmtpCapture
from tests.fakes.telegram_server import FakeTelegram

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("soak")

AXI_ADDRESS = "axi@icidordogne.fr"
AUTHSERV = "mx.icidordogne.fr"
AGENCY = "agence@icidordogne.fr"
SITE_ORIGIN = "https://www.icidordogne.fr"
SITE_ID = "icidordogne-bugue"
RESTIC_PASSWORD = "soak-restic-password"  # pragma: allowlist secret  (a throwaway repository)
DPE_CONFIG = {"dataset": "dpe03existant", "codes_postaux": ["24260", "24510"],
              "prix_m2": {"24260": 1800, "24510": 1600}, "fourchette": 0.15,
              "recouvrement_jours": 60, "ras": False, "taille_page": 50}
DIGEST_RECIPIENTS = (AGENCY,)
REPLY_FILLER = ("Le dossier avance bien.", "La visite est confirmée pour jeudi.",
                "Le diagnostic est en cours.", "Le notaire attend encore deux pièces.",
                "Le mandat court jusqu'à la fin du mois.", "Le prix affiché reste négociable.",
                "Les photos seront prêtes demain.", "La mairie a répondu pour le cadastre.",
                "Le DPE date de l'an dernier.", "L'agence du Bugue a le double des clés.")
NOT_YET = "n'a pas encore répondu"
CLI_TIMEOUT_S = 300.0
RESTART_S = 5.0
"""deploy/axi.service: RestartSec=5 (after an exit on failure)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------- the models' scripts
def _last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            return "\n".join(str(b.get("text") or "") for b in content if isinstance(b, dict))
        return str(content or "")
    return ""


def model_reply(body: dict[str, Any], reply_tokens: int = 50) -> str:
    """What the simulated models write: the reply to the message of the prompt's last turn,
    its token echoed first (`RREF-…`), then neutral prose up to about `reply_tokens` tokens
    (no form of address either way, so the tutoiement guard never asks for a rewrite); a
    local-only secret in the message is repeated, as a model would. A rewrite request gets
    its text back; a digest summary gets a sentence."""
    last = _last_user_text(body)
    if "Réécris ce message" in last:
        return last.rsplit("\n\n", 1)[-1]
    if "<rapport>" in last:
        return "Synthèse : de nouveaux diagnostics sont arrivés sur les communes suivies."
    message = last.split("Message :\n")[-1]
    found = TOKEN.search(message)
    if found is None:
        return "Bien noté."
    rng = random.Random(found.group(1))
    parts = [f"RREF-{found.group(1)} Bien noté."]
    secret = SECRET.search(message)
    if secret is not None:
        parts.append(f"Je garde {secret.group(0)} ici.")
    while len(tokenize(" ".join(parts))) < reply_tokens:
        parts.append(rng.choice(REPLY_FILLER))
    return " ".join(parts)


def claude_reply(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    if not isinstance(system, str):
        system = " ".join(str(b.get("text") or "") for b in system if isinstance(b, dict))
    if '"faits"' in system:  # a fact extraction fallen back to Claude: no fact
        return json.dumps({"faits": [], "oublis": []})
    return model_reply(body)


class SoakCpuOllama(CpuOllama):
    """The simulated CPU Ollama, keeping each request's body by its record (which message a
    request answered, and when its first token came)."""

    def reset(self) -> None:
        super().reset()
        self.bodies: dict[int, dict[str, Any]] = {}

    def _new_record(self, kind: str, body: dict[str, Any], num_ctx: int) -> RequestRecord:
        record = super()._new_record(kind, body, num_ctx)
        self.bodies[record.index] = body
        return record

    def first_tokens(self) -> dict[str, float]:
        """Message token → when the local model gave the first token of its reply
        (monotonic seconds; the last finished attempt)."""
        scale, out = self.config.time_scale, {}
        for record in list(self.records):
            body = self.bodies.get(record.index) or {}
            if record.kind != "chat" or body.get("format") or record.finished_s is None:
                continue
            found = TOKEN.search(_last_user_text(body).split("Message :\n")[-1])
            if found is not None:
                out[found.group(1)] = self._t0 + (record.arrival_s + record.ttft_s) * scale
        return out


# ---------------------------------------------------------------------- PostgreSQL
class SoakPostgres:
    """PostgreSQL 16 from pgserver's binaries in `directory`, owned by the soak."""

    def __init__(self, directory: Path):
        self.pgdata = directory / "pgdata"
        self.handle: Any = None
        self.url = ""

    def start(self) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
        logging.getLogger("pgserver").setLevel(logging.CRITICAL)
        self.handle = pgserver.get_server(self.pgdata, cleanup_mode=None)
        self.handle.psql("CREATE DATABASE axi;")
        info = self.handle.get_postmaster_info()
        socket_dir = quote(str(info.socket_dir or self.pgdata), safe="/")
        self.url = f"postgresql://postgres@/axi?host={socket_dir}&port={info.port or 5432}"
        return self.url

    def _pg_ctl(self, *args: str) -> None:
        from pgserver import _commands

        pg_ctl = _commands.pg_ctl  # type: ignore[attr-defined]  # made at import
        pg_ctl(list(args), pgdata=self.pgdata, user=self.handle.system_user, timeout=60)

    def stop(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(Exception):
                self._pg_ctl("-w", "-m", "fast", "stop")

    def start_again(self) -> None:
        from pgserver.postgres_server import PostgresServer

        with PostgresServer._lock:
            self.handle.ensure_postgres_running()


# ---------------------------------------------------------------------- axi run
class AxiProcess:
    """`axi run` as a subprocess of this worktree's code; SIGKILLed and restarted by the
    soak, restarted too when it exits on its own (as systemd would), which is recorded."""

    def __init__(self, env: dict[str, str], cwd: Path, logs: Path, url: str):
        self.env, self.cwd, self.logs, self.url = env, cwd, logs, url
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.kills = 0
        self.own_exits: list[tuple[int, Path]] = []
        self.up = asyncio.Event()
        self._ended: subprocess.Popen[bytes] | None = None  # killed or stopped by the soak
        self._err: Any = None
        self.lifecycle = asyncio.Lock()
        """Held while the soak kills and restarts it, or restarts it after an exit."""

    @property
    def log(self) -> Path:
        return self.logs / f"axi-run-{self.runs}.log"

    def start(self) -> None:
        if self._err is not None:
            self._err.close()
        self.runs += 1
        self._err = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"], env=self.env, cwd=self.cwd,
            stdout=subprocess.DEVNULL, stderr=self._err)

    async def ready(self, within: float = 90.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"axi run exited with {self.proc.returncode} while "
                                       f"starting: see {self.log}")
                with contextlib.suppress(httpx.HTTPError):
                    await http.get(f"{self.url}/health")
                    self.up.set()
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"axi run did not answer /health within {within:.0f} s: {self.log}")

    async def restart_until_up(self, within: float = 180.0) -> None:
        """Start it, and start it again RESTART_S after each exit on its own while it
        starts (e.g. the database is down), as systemd does (deploy/axi.service:
        Restart=on-failure, RestartSec=5); each such exit is recorded."""
        deadline = time.monotonic() + within
        while True:
            self.start()
            try:
                await self.ready(max(1.0, deadline - time.monotonic()))
                return
            except RuntimeError:
                if self.proc is None or self.proc.poll() is None \
                        or time.monotonic() >= deadline:
                    raise
                self.own_exits.append((int(self.proc.returncode or 0), self.log))
                log.warning("axi run exited with %s while starting (%s): started again in "
                            "%.0f s, as systemd would", self.proc.returncode, self.log,
                            RESTART_S)
                await asyncio.sleep(RESTART_S)

    def kill(self) -> None:
        self.up.clear()
        if self.proc is not None and self.proc.poll() is None:
            self._ended = self.proc
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.kills += 1
        if self._err is not None:
            self._err.close()

    def stop(self) -> int | None:
        """SIGTERM (a clean stop), then SIGKILL if it lingers."""
        self.up.clear()
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._ended = self.proc
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self._err is not None:
            self._err.close()
        return self.proc.returncode

    async def supervise(self, stop: asyncio.Event) -> None:
        """Restart an `axi run` that exited without being killed by the soak."""
        while not stop.is_set():
            await asyncio.sleep(0.5)
            async with self.lifecycle:
                proc = self.proc
                if proc is None or proc is self._ended or proc.poll() is None \
                        or stop.is_set():
                    continue
                log.warning("axi run exited on its own with %s (%s): restarting it",
                            proc.returncode, self.log)
                self.own_exits.append((int(proc.returncode or 0), self.log))
                self.up.clear()
                await asyncio.sleep(RESTART_S)
                with contextlib.suppress(RuntimeError):
                    await self.restart_until_up()

    def tracebacks(self) -> int:
        return sum(p.read_text(errors="replace").count("Traceback")
                   for p in self.logs.glob("axi-run-*.log"))


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


def mail(sender: str, subject: str, body: str, *, vouched: bool) -> tuple[str, bytes]:
    """(Message-ID, raw mail) as our MX delivers it: its Authentication-Results on top when
    it vouches for the sender (dmarc=pass), none otherwise."""
    domain = sender.rpartition("@")[2]
    message_id = make_msgid(domain=domain)
    lines = []
    if vouched:
        lines.append(f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom={domain}; "
                     f"dmarc=pass header.from={domain}")
    lines += [f"From: {sender}", f"To: {AXI_ADDRESS}", f"Subject: {subject}",
              f"Message-ID: {message_id}", "Date: Tue, 01 Dec 2026 10:00:00 +0100",
              "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit"]
    return message_id, ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def plain_body(message: Any) -> str:
    try:
        part = message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""
    except (KeyError, LookupError, ValueError):
        return ""


class SoakWorld:
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

    # ------------------------------------------------------------------ sending
    def _sent(self, p: Planned) -> None:
        self.sent[p.token] = Sent(p.token, p.person.key, p.channel, p.conversation, p.expect,
                                  time.monotonic(), p.seq, p.secret)

    def _attempt(self, p: Planned) -> None:
        old = self.sent[p.token]
        self.sent[p.token] = Sent(old.token, old.person, old.channel, old.conversation,
                                  old.expect, old.at, old.seq, old.secret, old.attempts + 1)

    async def send_telegram(self, p: Planned) -> None:
        assert p.person.telegram is not None
        self._sent(p)
        await asyncio.to_thread(self.telegram.message, p.person.telegram, p.text,
                                first_name=p.person.name.split()[-1])

    async def send_email(self, p: Planned) -> None:
        assert p.person.email is not None
        subject = f"Question réf. QREF-{p.token}"
        _, raw = mail(p.person.email, subject, p.text, vouched=p.person.kind != "mail_stranger")
        self._sent(p)
        await asyncio.to_thread(self.dovecot.append, raw)

    def _seen(self, channel: str, p: Planned, key: str, answer: str) -> bool:
        """Record the replies to `p` found in `answer`; True when there is one."""
        found = False
        for token in REPLY_TOKEN.findall(answer):
            self.client_seen.append(Seen(channel, p.conversation, "reply", time.monotonic(),
                                         key, token))
            found = found or token == p.token
        return found

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.axi.up.wait()

    async def send_web(self, p: Planned, http: httpx.AsyncClient, deadline: float) -> None:
        """The API's careful client: after a failure it looks its message up in its
        history before sending it again, then follows it by its status URL."""
        auth = {"Authorization": f"Bearer {self.tokens[p.person.key]}"}
        self._sent(p)
        message_id: int | None = None
        first = True
        while time.monotonic() < deadline:
            if message_id is None and not first:
                found = await self._web_history(p, http, auth)
                if found is None:
                    self._attempt(p)
                elif found[1] is not None:
                    self._seen("web", p, f"web:{found[1][0]}", found[1][1])
                    return
                else:
                    message_id = found[0]
            first = False
            try:
                if message_id is None:
                    r = await http.post(f"{self.url}/api/chat", headers=auth,
                                        json={"message": p.text, "local_only": p.local_only},
                                        timeout=self.reply_timeout_s + 45)
                else:
                    r = await http.get(f"{self.url}/api/messages/{message_id}", headers=auth,
                                       timeout=30)
            except httpx.HTTPError:
                await self._pause(0.5)
                continue
            if r.status_code in (200, 202):
                body = r.json()
                message_id = int(body.get("message_id") or message_id or 0) or None
                if body.get("reply"):
                    self._seen("web", p, f"web:{body.get('reply_id')}", str(body["reply"]))
                    return
                if r.status_code == 200 and body.get("state") not in (None, "en_attente"):
                    return  # settled without a reply: judged as lost
                await asyncio.sleep(1.0)
                continue
            await self._pause(1.0)  # 429, 5xx: the server said no; look it up and retry

    async def _web_history(self, p: Planned, http: httpx.AsyncClient, auth: dict[str, str]
                           ) -> tuple[int, tuple[int, str] | None] | None:
        """(inbound id, (reply id, reply text) or None) of the message, from the history."""
        while True:
            try:
                r = await http.get(f"{self.url}/api/history", headers=auth,
                                   params={"limit": "100"}, timeout=30)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await self._pause(1.0)
        items = r.json().get("messages") or []
        mine = [i for i in items if i.get("direction") == "in" and p.token in i.get("text", "")]
        if not mine:
            return None
        inbound = int(mine[0]["id"])
        replies = [i for i in items if i.get("direction") == "out"
                   and i.get("in_reply_to") == inbound and i.get("kind") == "message"]
        return inbound, ((int(replies[0]["id"]), str(replies[0]["text"])) if replies else None)

    async def send_site(self, p: Planned, http: httpx.AsyncClient, deadline: float,
                        page: list[dict[str, str]]) -> None:
        """The site's widget: the page's conversation so far, the visitor's IP through
        the tunnel; a visitor who gets no answer sends it again, as the widget asks."""
        headers = {"Origin": SITE_ORIGIN, "CF-Connecting-IP": p.person.ip or "203.0.113.1"}
        self._sent(p)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            if attempt > 1:
                self._attempt(p)
            body = {"system": "Tu es l'assistant du site.", "site_id": SITE_ID,
                    "messages": [*page, {"role": "user", "content": p.text}]}
            try:
                r = await http.post(f"{self.url}/chat-proxy", json=body, headers=headers,
                                    timeout=self.reply_timeout_s + 45)
            except httpx.HTTPError:
                await self._pause(0.5)
                continue
            answer = ""
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                answer = str(r.json()["content"][0]["text"])
            if r.status_code == 200 and self._seen("site", p, f"site:{p.token}:{attempt}",
                                                    answer):
                page += [{"role": "user", "content": p.text},
                         {"role": "assistant", "content": answer}]
                return
            wait = float(r.headers.get("Retry-After") or 2.0) if r.status_code == 429 else 2.0
            await self._pause(wait)

    async def send_contact(self, p: Planned, http: httpx.AsyncClient, deadline: float) -> None:
        headers = {"Origin": SITE_ORIGIN, "CF-Connecting-IP": p.person.ip or "203.0.113.1"}
        name = p.person.name
        body = {"name": name, "email": f"{p.person.key}@exemple-visiteur.fr",
                "phone": "05 53 00 00 00", "message": p.text, "bien": "", "site_id": SITE_ID}
        self._sent(p)
        first = True
        while time.monotonic() < deadline:
            if not first:
                self._attempt(p)
            first = False
            try:
                r = await http.post(f"{self.url}/contact", json=body, headers=headers,
                                    timeout=60)
                if r.status_code == 200:
                    return
                if r.status_code == 400:  # the form itself is refused: sending again is vain
                    log.warning("contact form of %s refused: %s", p.token, r.text[:300])
                    return
                wait = float(r.headers.get("Retry-After") or 2.0)
            except httpx.HTTPError:
                wait = 0.5
            await self._pause(min(wait, 30.0))

    @asynccontextmanager
    async def mcp(self, token: str) -> AsyncIterator[Any]:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                      timeout=httpx2.Timeout(self.reply_timeout_s + 45)) as http:
            async with Client(streamable_http_client(f"{self.url}/mcp", http_client=http),
                              mode="auto") as client:  # type: ignore[arg-type]
                yield client

    @staticmethod
    def _tool_text(result: Any) -> str:
        return "\n".join(getattr(c, "text", "") for c in result.content)

    async def send_axis(self, p: Planned, deadline: float) -> None:
        """Axis calls `parler_a_axi`; a late reply comes through its mailbox (read by
        `axis_mailbox`); a call cut by a kill is made again, as Axis would."""
        self._sent(p)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            if attempt > 1:
                self._attempt(p)
            try:
                async with self.mcp(self.tokens[p.person.key]) as client:
                    result = await client.call_tool("parler_a_axi", {"message": p.text})
            except Exception as exc:  # the connection cut by a kill, the server starting…
                log.debug("axis call for %s failed: %s", p.token, exc)
                await self._pause(0.5)
                continue
            said = self._tool_text(result)
            self.cloud_texts.append(said)
            if self._seen("axis", p, f"axis-call:{p.token}:{attempt}", said) or NOT_YET in said:
                return
            if "Trop de demandes" in said:
                await asyncio.sleep(2.0)
                continue
            return  # no reply will come: judged as lost

    async def axis_mailbox(self, stop: asyncio.Event) -> None:
        """Axis reads and acknowledges its mailbox every few seconds."""
        token = next(self.tokens[p.key] for p in self.people if p.kind == "axis")
        by_token = {p.token: p for p in self.planned}
        while not stop.is_set():
            await asyncio.sleep(2.0)
            if not self.axi.up.is_set():
                continue
            try:
                async with self.mcp(token) as client:
                    said = self._tool_text(await client.call_tool(
                        "lire_messages", {"non_lus_seulement": True}))
                    self.cloud_texts.append(said)
                    items = re.split(r"(?m)^- n°(\d+) \(", said)
                    ids = []
                    for i in range(1, len(items) - 1, 2):
                        ids.append(int(items[i]))
                        for t in REPLY_TOKEN.findall(items[i + 1]):
                            planned = by_token.get(t)
                            conversation = planned.conversation if planned else "axis:?"
                            self.client_seen.append(Seen("axis", conversation, "reply",
                                                         time.monotonic(),
                                                         f"axis-box:{items[i]}", t))
                    if ids:
                        await client.call_tool("acquitter_messages", {"ids": ids})
            except Exception as exc:
                log.debug("axis mailbox: %s", exc)

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

    def telegram_seen(self) -> list[Seen]:
        out: list[Seen] = []
        for i, call in enumerate(list(self.telegram.calls)):
            method = call.method.lower()
            if method not in ("sendmessage", "sendmessagedraft", "editmessagetext") \
                    or call.status != 200:
                continue
            words = html.unescape(str(call.params.get("text") or ""))
            conversation = f"telegram:{call.params.get('chat_id')}"
            if method == "sendmessage" and words.strip() == STRANGER_NOTICE:
                out.append(Seen("telegram", conversation, "stranger_notice", call.at, f"tg:{i}"))
                continue
            kind: SeenKind = "reply" if method == "sendmessage" else "draft"
            for token in REPLY_TOKEN.findall(words):
                out.append(Seen("telegram", conversation, kind, call.at, f"tg:{i}", token))
        return out

    def mail_seen(self) -> tuple[list[Seen], list[DigestMail]]:
        seen: list[Seen] = []
        digests: list[DigestMail] = []
        for captured in list(self.smtp.messages):
            message = captured.message
            key = str(message["Message-ID"] or id(captured))
            subject = str(message["Subject"] or "")
            body = plain_body(message)
            at = captured.received_at + self.mono_minus_wall
            rcpt = tuple(r.lower() for r in captured.rcpt_tos)
            if subject.startswith("Veille DPE"):
                digests.append(DigestMail(key, rcpt, tuple(dpe_numbers(body))))
            elif "Nouvelle demande de contact" in body:
                for token in TOKEN.findall(body):
                    seen.append(Seen("contact", f"contact:{rcpt[0]}", "relay", at, key, token))
            else:
                for token in REPLY_TOKEN.findall(body):
                    seen.append(Seen("email", f"email:{rcpt[0] if rcpt else '?'}", "reply",
                                     at, key, token))
        return seen, digests

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

