"""Axis over MCP (channels/axis_mcp.py) with the official `mcp` client over streamable HTTP
against a whole Axi on a real uvicorn: the tools listed in French and each one called,
401 without a token, 403 with a chat token, the Host check, a late reply reaching the
mailbox, `notify("Axis", …)` landing there too, and a reply returned by the call never
unread in the mailbox at any moment."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from memory.database import Database
from tests.channels.axis_support import AxisWeb, axis_axi, mcp_session, text_of
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

TOOLS = {"parler_a_axi", "chercher_memoire", "faits_sur", "briefing", "ajouter_consigne",
         "ajouter_note", "lire_messages", "acquitter_messages"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "test", "version": "1"}}}


@pytest.fixture
async def box(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama) -> AsyncIterator[AxisWeb]:
    async with axis_axi(db, database_url, test_data_dir, ollama_server) as b:
        yield b


async def test_every_tool_is_listed_in_french_and_answers(box: AxisWeb) -> None:
    store = box.axi.store
    await store.remember("Compromis signé pour la longère de Vergt", type="action")
    await store.add_fact("Ludo", "habite à", "Peyrebrune", relation_id=box.ids["ludo"])
    await store.add_consigne("Toujours proposer une visite")
    async with mcp_session(box.url, box.tokens["axis"], mode="legacy") as client:
        listed = (await client.list_tools()).tools
        assert {t.name for t in listed} == TOOLS
        assert all(t.description and " " in t.description for t in listed)
        assert client.instructions and "Axi n'est pas toi" in client.instructions

        said = text_of(await client.call_tool("parler_a_axi", {"message": "Bonjour Axi"}))
        assert said == "Salut, tu peux compter sur moi."  # Axis is tutoyé
        [inbound] = [m for m in await store.conversation_page(
            f"axis:personne-{box.ids['axis']}", limit=10) if m.sens == "entrant"]
        assert inbound.texte == "Bonjour Axi" and inbound.verifie

        found = text_of(await client.call_tool("chercher_memoire", {"requete": "longère"}))
        assert "Compromis signé pour la longère de Vergt" in found
        facts = text_of(await client.call_tool("faits_sur", {"sujet": "Ludo"}))
        assert "Ludo habite à Peyrebrune" in facts
        brief = text_of(await client.call_tool("briefing", {}))
        assert "Toujours proposer une visite" in brief and "Boîte d'Axis : 0" in brief

        # a consigne is in every prompt from then on: Axis proposes, Ludo accepts
        added = text_of(await client.call_tool("ajouter_consigne",
                                               {"texte": "Répondre avant midi"}))
        assert added.startswith("Demande envoyée à Ludo")
        assert not [c for c in await store.list_consignes() if c.texte == "Répondre avant midi"]
        question = await box.question("consignes.ajouter")
        assert "Axis propose d'ajouter cette consigne" in question.text
        await box.press(question, "Oui")

        async def added_now() -> list:
            return [(c.audience, c.source) for c in await store.list_consignes()
                    if c.texte == "Répondre avant midi"]
        assert await until(added_now, 20) == [("interne", "axis:Axis")]
        noted = text_of(await client.call_tool("ajouter_note",
                                               {"texte": "Le notaire rappelle jeudi"}))
        assert noted.startswith("Note n°")
        assert "Le notaire rappelle jeudi" in text_of(
            await client.call_tool("chercher_memoire", {"requete": "notaire"}))

        # the reply returned in the call is in the mailbox already read: nothing waits
        assert text_of(await client.call_tool("lire_messages", {})) == "Aucun message non lu."
        await box.axi.notifier.notify("Axis", "Ludo veut ton avis sur la veille DPE",
                                      key="test:axis:1", kind="notice")
        await until(lambda: store.mailbox_unread(), 10)
        unread = text_of(await client.call_tool("lire_messages", {}))
        assert "Ludo veut ton avis sur la veille DPE" in unread
        box_id = int(unread.split("n°")[1].split(" ")[0])
        acked = text_of(await client.call_tool("acquitter_messages", {"ids": [box_id]}))
        assert acked == "1 message(s) marqué(s) comme lu(s)."
        assert text_of(await client.call_tool("lire_messages", {})) == "Aucun message non lu."
        everything = text_of(await client.call_tool("lire_messages",
                                                    {"non_lus_seulement": False}))
        assert "Salut, tu peux compter sur moi." in everything  # the history stays


async def test_a_reply_not_ready_in_time_waits_in_the_mailbox(
    db: Database, database_url: str | None, test_data_dir: Path, ollama_server: FakeOllama
) -> None:
    async with axis_axi(db, database_url, test_data_dir, ollama_server,
                        reply_timeout_s=0.3) as box:
        ollama_server.delay_s = 1.5
        async with mcp_session(box.url, box.tokens["axis"]) as client:  # 2026 protocol
            pending = text_of(await client.call_tool("parler_a_axi",
                                                     {"message": "Tu as un moment ?"}))
            assert pending.startswith("Axi n'a pas encore répondu (message n°")
            await until(lambda: box.axi.store.mailbox_unread(), 20,
                        message="the late reply never reached the mailbox")
            late = text_of(await client.call_tool("lire_messages", {}))
            assert "Salut, tu peux compter sur moi." in late and "réponse au message n°" in late


ROW_STATES = (
    "CREATE TABLE test_boite_etats (op text, cle text, lu boolean)",
    "CREATE FUNCTION test_boite_etat() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO test_boite_etats VALUES (TG_OP, NEW.cle, NEW.lu_le IS NOT NULL); "
    "RETURN NEW; END $$",
    "CREATE TRIGGER test_boite_etat AFTER INSERT OR UPDATE ON boite_axis "
    "FOR EACH ROW EXECUTE FUNCTION test_boite_etat()")
NO_ROW_STATES = ("DROP TRIGGER IF EXISTS test_boite_etat ON boite_axis",
                 "DROP FUNCTION IF EXISTS test_boite_etat()",
                 "DROP TABLE IF EXISTS test_boite_etats")


async def test_a_reply_returned_by_the_call_is_never_unread_in_the_mailbox(box: AxisWeb) -> None:
    """Axis must not be shown the same reply twice: a `lire_messages` at any moment of the
    call must not list the reply the call returns. Every state the mailbox row ever had
    (each INSERT and UPDATE, recorded by a trigger) is checked, not a lucky timing."""
    db = box.axi.store.db
    async with db.sessions.begin() as session:
        for sql in ROW_STATES:
            await session.execute(text(sql))
    try:
        async with mcp_session(box.url, box.tokens["axis"]) as client:
            said = text_of(await client.call_tool("parler_a_axi", {"message": "Bonjour Axi"}))
            assert said == "Salut, tu peux compter sur moi."
            assert text_of(await client.call_tool("lire_messages", {})) == \
                "Aucun message non lu."
        async with db.sessions() as session:
            states = (await session.execute(text(
                "SELECT op, cle, lu FROM test_boite_etats"))).all()
        assert states and all(cle.startswith("message:") for _, cle, _ in states)
        assert [(op, lu) for op, _, lu in states] == [("INSERT", True)]
    finally:
        async with db.sessions.begin() as session:
            for sql in NO_ROW_STATES:
                await session.execute(text(sql))


async def test_no_token_401_chat_token_403_foreign_host_421(box: AxisWeb) -> None:
    async with httpx.AsyncClient(base_url=box.url) as http:
        none = await http.post("/mcp", json=INIT, headers=MCP_HEADERS)
        assert none.status_code == 401
        assert (f'resource_metadata="https://{"axi.test.example"}/.well-known/'
                'oauth-protected-resource/mcp"') in none.headers["www-authenticate"]
        wrong = await http.post("/mcp", json=INIT,
                                headers={**MCP_HEADERS, "Authorization": "Bearer axi_faux"})
        assert wrong.status_code == 401
        chat = await http.post("/mcp", json=INIT, headers={**MCP_HEADERS, **box.auth("chat")})
        assert chat.status_code == 403 and chat.json()["error"] == "insufficient_scope"
        foreign = await http.post("/mcp", json=INIT, headers={
            **MCP_HEADERS, **box.auth("axis"), "Host": "evil.example"})
        assert foreign.status_code == 421
        public = await http.post("/mcp", json=INIT, headers={
            **MCP_HEADERS, **box.auth("axis"), "Host": "axi.test.example"})
        assert public.status_code == 200
        resource = (await http.get("/.well-known/oauth-protected-resource/mcp")).json()
        assert resource["resource"] == "https://axi.test.example/mcp"
        assert resource["authorization_servers"] == ["https://axi.test.example"]
        await box.axi.store.revoke_token(1)  # Axis's token: revoked, refused
        revoked = await http.post("/mcp", json=INIT, headers={**MCP_HEADERS, **box.auth("axis")})
        assert revoked.status_code == 401


async def test_ludo_leaves_axis_a_question_with_a_command(box: AxisWeb) -> None:
    """`/axis …`: a question Axi cannot answer goes to Axis's mailbox (and, being read in
    the cloud, never a message that must stay on the server)."""
    from datetime import UTC, datetime

    from bot.inbound import Inbound

    async def send(text: str, external_id: str, local_only: bool = False) -> None:
        await box.axi.pipeline.accept(Inbound(
            channel="telegram", sender="1001", verified=True, text=text, local_only=local_only,
            external_id=external_id, received_at=datetime.now(UTC)))

    await send("/axis Quel notaire pour la longère de Vergt ?", "q1")
    await until(lambda: [d for d in box.telegram.sent if "transmis à Axis" in d.text], 20)
    async with mcp_session(box.url, box.tokens["axis"]) as client:
        unread = await until(lambda: _unread(client), 20)
        assert "Question de Ludo : Quel notaire pour la longère de Vergt ?" in unread
        await send("/axis le prix plancher du vendeur", "q2", local_only=True)  # stays here
        await until(lambda: [d for d in box.telegram.sent if "ne le transmets pas" in d.text],
                    20)
        assert "prix plancher" not in text_of(await client.call_tool(
            "lire_messages", {"non_lus_seulement": False}))


async def _unread(client: Any) -> str | None:
    said = text_of(await client.call_tool("lire_messages", {}))
    return None if said == "Aucun message non lu." else said


async def test_a_database_outage_gets_a_503_and_one_log_line(
    db: Database, test_data_dir: Path, ollama_server: FakeOllama,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The bearer check needs the database: while it is away, an MCP request is answered
    503 in JSON (Axis tries again) with one clean log line, never a 500 and a traceback."""
    import logging

    from tests.fakes.tcp_proxy import TcpProxy

    proxy = TcpProxy.for_database(db.engine.url)
    await proxy.start()
    try:
        async with axis_axi(db, proxy.url_for(db.engine.url), test_data_dir,
                            ollama_server) as box, httpx.AsyncClient(base_url=box.url) as http:
            headers = {**MCP_HEADERS, **box.auth("axis")}
            assert (await http.post("/mcp", json=INIT, headers=headers)).status_code == 200
            await proxy.cut()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                down = await http.post("/mcp", json=INIT, headers=headers)
            assert down.status_code == 503 and down.json()["error"] == "indisponible"
            assert down.headers["retry-after"]
            assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
            assert [r.getMessage() for r in caplog.records
                    if "token store is unavailable" in r.getMessage()] != []
            await proxy.restore()
            back = await until(lambda: _status(http, headers), 20)
            assert back == 200
    finally:
        await proxy.close()


async def _status(http: httpx.AsyncClient, headers: dict[str, str]) -> int | None:
    status = (await http.post("/mcp", json=INIT, headers=headers)).status_code
    return status if status == 200 else None
