"""`axi ask`, `axi chat` and `axi run` as real processes, against the test database and a
loopback Ollama; and a worker killed with SIGKILL mid-reply that loses nothing."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from memory.store import MemoryStore
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

HERE = Path(__file__).parent


def axi(env: dict[str, str], *args: str, stdin: str | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin,
                          capture_output=True, text=True, env=env, timeout=timeout, cwd=HERE)


async def test_ask_prints_the_reply(cli_env, store: MemoryStore, ollama_server: FakeOllama):
    ollama_server.reply = "Bonjour, je suis Axi, l'assistant d'ICI Dordogne."
    r = axi(cli_env, "ask", "Qui es-tu ?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Bonjour, je suis Axi, l'assistant d'ICI Dordogne."
    body = ollama_server.chat_bodies[0]
    assert "Qui es-tu ?" in body["messages"][-1]["content"]
    assert body["options"]["num_ctx"] == 4096
    found = await store.recall("assistant Dordogne")
    assert [f.souvenir.metadata.get("auteur") for f in found] == ["Axi"]


async def test_ask_as_a_client_is_vouvoyee(cli_env, store: MemoryStore,
                                           ollama_server: FakeOllama):
    await store.add_person("Mme Durand", relation="client")
    ollama_server.reply = "Tu peux passer à l'agence demain."
    r = axi(cli_env, "ask", "--as", "Mme Durand", "Je peux passer ?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Vous pouvez passer à l'agence demain."
    assert "Vouvoie cette personne." in ollama_server.chat_bodies[0]["messages"][0]["content"]
    r = axi(cli_env, "ask", "--as", "Personne", "Bonjour")
    assert r.returncode == 1 and "no person" in r.stderr


async def test_ask_waits_when_no_model_answers(cli_env, store: MemoryStore,
                                              ollama_server: FakeOllama):
    ollama_server.stop()
    r = axi(cli_env, "ask", "Tu es là ?")
    assert r.returncode == 4, r.stderr
    assert "ton message" in r.stdout and "waiting in the inbox" in r.stderr
    assert (await store.pending_counts()) == {"entrant:en_attente": 1}


async def test_ask_local_only_never_falls_back(cli_env, store: MemoryStore,
                                              ollama_server: FakeOllama, anthropic_server):
    from tests.fakes.anthropic_server import TEST_API_KEY
    env = {**cli_env, "ANTHROPIC_API_KEY": TEST_API_KEY, "ANTHROPIC_BASE_URL": anthropic_server.url}
    ollama_server.stop()
    anthropic_server.reply = "Ici Claude."
    r = axi(env, "ask", "--no-extract", "--local-only", "Le prix plancher du vendeur ?")
    assert r.returncode == 4, r.stderr
    assert "ne doit pas quitter le serveur" in r.stdout
    assert anthropic_server.requests == []
    # without the flag (another conversation) the same setup falls back to Claude
    await store.add_person("Julie", relation="équipe")
    r = axi(env, "ask", "--no-extract", "--as", "Julie", "Tu as les horaires ?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "Ici Claude." and len(anthropic_server.requests) == 1


async def test_chat_line_by_line(cli_env, ollama_server: FakeOllama):
    ollama_server.reply = lambda body: "Réponse à : " + body["messages"][-1]["content"].split(
        "Message :\n")[-1]
    r = axi(cli_env, "chat", stdin="Bonjour\n\nOù est l'agence ?\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Réponse à : Bonjour", "Réponse à : Où est l'agence ?"]
    talk = [b for b in ollama_server.chat_bodies if not b.get("format")]  # not extraction
    second = talk[1]["messages"]
    assert any(m["content"] == "Réponse à : Bonjour" for m in second)  # history kept


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_run_serves_health_answers_pending_and_stops(
    cli_env, store: MemoryStore, ollama_server: FakeOllama
):
    accepted = await store.accept_inbound(canal="console", adresse="operateur",
                                          texte="Bonjour Axi", identifiant_externe="pending-1",
                                          conversation="console:operateur", verifie=True)
    port = _free_port()
    env = {**cli_env, "AXI_HTTP_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=HERE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        async with httpx.AsyncClient(timeout=2) as client:

            async def health() -> httpx.Response | None:
                assert proc.poll() is None, f"axi run exited: {proc.communicate()[1]}"
                try:
                    return await client.get(f"http://127.0.0.1:{port}/health")
                except httpx.TransportError:
                    return None  # not listening yet

            response = await until(health, 60, message="axi run never served /health")
        assert response.status_code == 200, proc.stderr
        assert response.json()["components"]["database"]["status"] == "ok"

        async def sent() -> bool:
            replies = await store.replies_to(accepted.message.id)
            return bool(replies) and replies[0].etat == "envoye"

        await until(sent, 30, message="the pending message was never answered")
        # the maintenance loop built recall's lexicon in the background
        await until(store.lexicon_state, 30, message="the lexicon was never built")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Telegram désactivé" in err and "Modèle local" not in err
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_worker_killed_mid_reply_loses_nothing(
    cli_env, store: MemoryStore, ollama_server: FakeOllama
):
    ollama_server.delay_s = 60
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "ask", "Message important"],
                            env=cli_env, cwd=HERE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    await until(lambda: ollama_server.chat_bodies, 60, message="the worker never reached the model")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # the claim died with its transaction: the message is pending, nothing half-written
    # (the server notices the dead connection and rolls back a moment later)
    async def pending_again() -> bool:
        return await store.pending_counts() == {"entrant:en_attente": 1}

    await until(pending_again, 10, message="the killed worker's claim was never released")
    assert await store.count_souvenirs() == 0
    # restart: the pending message is answered, exactly once
    ollama_server.delay_s = 0
    ollama_server.reply = "Bien reçu."
    r = axi(cli_env, "ask", "Et celui-ci ?")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["Bien reçu.", "Bien reçu."]  # the pending one first
    from sqlalchemy import text
    async with store.db.engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT i.texte, count(o.id) FROM messages i LEFT JOIN messages o "
            "ON o.en_reponse_a = i.id WHERE i.sens = 'entrant' GROUP BY i.id ORDER BY i.id"
        ))).all()
    assert [tuple(r) for r in rows] == [("Message important", 1), ("Et celui-ci ?", 1)]
    assert await store.count_souvenirs() == 4


async def test_ask_after_an_outage_answers_the_waiting_message_first(
    cli_env, store: MemoryStore, ollama_server: FakeOllama
):
    ollama_server.stop()
    assert axi(cli_env, "ask", "Premier message").returncode == 4
    ollama_server.start()
    ollama_server.reply = lambda body: "Vu : " + body["messages"][-1]["content"].split(
        "Message :\n")[-1]
    r = axi(cli_env, "ask", "--no-extract", "Second message")
    assert r.returncode == 0, r.stderr
    # the waiting message is answered first, and both replies are shown, in order
    assert r.stdout.splitlines() == ["Vu : Premier message", "Vu : Second message"]
    assert await store.pending_counts() == {}
    talk = [b for b in ollama_server.chat_bodies if not b.get("format")]
    assert [b["messages"][-1]["content"].split("Message :\n")[-1] for b in talk] == [
        "Premier message", "Second message"]


async def test_llm_status_reports_providers_and_local_share(cli_env, store: MemoryStore,
                                                             ollama_server: FakeOllama):
    import json

    ollama_server.reply = "Bonjour."
    assert axi(cli_env, "ask", "--no-extract", "Bonjour").returncode == 0
    r = axi(cli_env, "llm", "status", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["local"]["state"] == "ok"
    assert report["fallback"]["configured"] is False
    assert report["usage"]["1"]["local_share"] == 1.0
    assert report["alerts"] == []
    assert report["embeddings"]["model"] is None and report["embeddings"]["souvenirs"] >= 2
    from memory.notifications import Route
    await store.queue_notification(cle="budget-claude:2026-11", genre="push", destinataire="Ludo",
                                   routes=[Route("console", "operateur")],
                                   texte="Alerte Axi : budget atteint.", urgente=True)
    shown = axi(cli_env, "llm", "status")
    assert "Alert budget-claude:2026-11 raised" in shown.stdout, shown.stderr
    ollama_server.models.clear()
    missing = json.loads(axi(cli_env, "llm", "status", "--json").stdout)
    assert missing["local"]["state"] == "model missing"
    assert "ollama pull mistral:7b-instruct-q4_K_M" in missing["local"]["detail"]


async def test_run_stopped_while_it_probes_the_local_model_stops_cleanly(
    cli_env, store: MemoryStore, tmp_path
):
    """SIGTERM right after "Axi est en marche", while the local model's probe waits for a
    server that never answers (up to 5 s): a clean stop, exit code 0 (the handlers were
    installed after the probe, so the signal's default killed the process: -15)."""
    mute = socket.socket()  # accepts connections (the backlog) and never answers
    mute.bind(("127.0.0.1", 0))
    mute.listen(8)
    env = {**cli_env, "AXI_HTTP_PORT": str(_free_port()),
           "OLLAMA_HOST": f"http://127.0.0.1:{mute.getsockname()[1]}"}
    log = tmp_path / "run.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=HERE,
                                stdout=subprocess.DEVNULL, stderr=err, text=True)
    try:
        def started() -> bool:
            assert proc.poll() is None, log.read_text()
            return "Axi est en marche" in log.read_text()

        await until(started, 60, message="axi run never started")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0, log.read_text()
        assert "Arrêt demandé" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
        mute.close()
