"""What the soak runs beneath its people and breaks (bench/soak_world.py assembles it):
the simulated models' scripts, the soak's own PostgreSQL 16, `axi run` as a subprocess.

- The local model: the simulated CPU Ollama (tests/fakes/cpu_ollama.py), keeping each
  request's body to tell when the first token of each message's reply came; the fallback's
  script (the loopback Anthropic server) is here too. Both write `model_reply`: the token
  of the message answered, then neutral prose.
- PostgreSQL 16: the `pgserver` binaries Axi embeds, in the soak's own directory, stopped
  (`pg_ctl stop -m fast`) and started again by the soak.
- `axi run`: this worktree's code as a subprocess, SIGKILLed and restarted by the soak,
  restarted too after an exit on its own, as systemd would.

Apart from the world so that each of these reads (and the models' scripts are tested,
tests/bench/test_soak_people.py) without the whole soak's assembly around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from bench.soak_checks import SECRET, TOKEN
from tests.fakes.cpu_model import RequestRecord, tokenize
from tests.fakes.cpu_ollama import CpuOllama

log = logging.getLogger("soak")

REPLY_FILLER = ("Le dossier avance bien.", "La visite est confirmée pour jeudi.",
                "Le diagnostic est en cours.", "Le notaire attend encore deux pièces.",
                "Le mandat court jusqu'à la fin du mois.", "Le prix affiché reste négociable.",
                "Les photos seront prêtes demain.", "La mairie a répondu pour le cadastre.",
                "Le DPE date de l'an dernier.", "L'agence du Bugue a le double des clés.")
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
