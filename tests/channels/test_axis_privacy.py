"""Everything Axis reads leaves the server for Anthropic's cloud: one test per privacy
layer of the Axis channel (bot/axis_access.py), through the official MCP client. A
souvenir marked local-only, a fact learnt from one, whatever is linked to a person whose
messages never leave the server, a held message of such a person, and a reply of Axi
that rests on local-only content: none of them ever reaches Axis (search, facts,
briefing, talk, mailbox) — while the ordinary content beside them does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.axis_access import WITHHELD
from bot.inbound import Inbound
from memory.database import Database
from tests.channels.axis_support import AxisWeb, axis_axi, mcp_session, text_of
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

SECRET = "Le code du portail de Peyrebrune est 4821"
ORDINARY = "Le portail de Vergt a été repeint en vert"


@pytest.fixture
async def box(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama) -> AsyncIterator[AxisWeb]:
    async with axis_axi(db, database_url, test_data_dir, ollama_server) as b:
        yield b


async def test_a_local_only_souvenir_never_reaches_axis(box: AxisWeb) -> None:
    await box.axi.store.remember(SECRET, type="note", metadata={"local_only": True})
    await box.axi.store.remember(ORDINARY, type="note")
    async with mcp_session(box.url, box.tokens["axis"]) as axis:
        found = text_of(await axis.call_tool("chercher_memoire", {"requete": "portail"}))
        brief = text_of(await axis.call_tool("briefing", {}))
    assert ORDINARY in found and ORDINARY in brief
    assert "4821" not in found and "4821" not in brief


async def test_a_local_only_fact_never_reaches_axis(box: AxisWeb) -> None:
    await box.axi.store.add_fact("Mme Durand", "a pour prix plancher", "180 000 €",
                                 local_only=True)
    await box.axi.store.add_fact("Mme Durand", "vend", "une longère à Vergt")
    async with mcp_session(box.url, box.tokens["axis"]) as axis:
        facts = text_of(await axis.call_tool("faits_sur", {"sujet": "Mme Durand"}))
        mentioned = text_of(await axis.call_tool("faits_sur", {"sujet": "prix plancher"}))
    assert "vend une longère à Vergt" in facts
    assert "180 000" not in facts and "180 000" not in mentioned


async def test_what_a_never_cloud_person_left_never_reaches_axis(box: AxisWeb) -> None:
    store = box.axi.store
    notaire = await store.add_person("Maître Sol", relation="partenaire",
                                     identities=[("telegram", "3003")],
                                     jamais_hors_serveur=True)
    await store.remember("Maître Sol confie que la succession Rivière est bloquée",
                         type="note", relation_id=notaire.id)
    await store.add_fact("succession Rivière", "est", "bloquée chez Maître Sol",
                         relation_id=notaire.id)
    await store.remember("La succession Martin est réglée", type="note")
    await box.axi.pipeline.accept(Inbound(
        channel="telegram", sender="3003", verified=True, external_id="held-1",
        text="Succession Rivière : l'héritier conteste", received_at=datetime.now(UTC),
        hold="réponse automatique suspendue"))
    await until(lambda: store.held_messages(), 20)
    async with mcp_session(box.url, box.tokens["axis"]) as axis:
        found = text_of(await axis.call_tool("chercher_memoire", {"requete": "succession"}))
        facts = text_of(await axis.call_tool("faits_sur", {"sujet": "succession Rivière"}))
        brief = text_of(await axis.call_tool("briefing", {}))
    assert "La succession Martin est réglée" in found
    for seen in (found, facts, brief):
        assert "bloquée" not in seen and "confie" not in seen and "conteste" not in seen
    assert "(contenu gardé sur le serveur)" in brief  # the held message: counted, not shown


async def test_axis_prompts_never_hold_local_only_content(
    db: Database, database_url: str | None, test_data_dir: Path, ollama_server: FakeOllama
) -> None:
    """The first layer (bot/responder.py, bot/policy.CLOUD_READERS): Axi's reply to Axis
    is read in the cloud, so its prompt is built without local-only content at all."""
    async with axis_axi(db, database_url, test_data_dir, ollama_server) as box:
        await box.axi.store.remember(SECRET, type="note", public=True,
                                     metadata={"local_only": True})
        await box.axi.store.remember(ORDINARY, type="note", public=True)
        ollama_server.reply = lambda body: "Je n'ai rien à ce sujet."
        async with mcp_session(box.url, box.tokens["axis"]) as axis:
            said = text_of(await axis.call_tool(
                "parler_a_axi", {"message": "Parle-moi du portail de Peyrebrune et de Vergt"}))
        prompt = str(ollama_server.chat_bodies[-1])
        assert "repeint en vert" in prompt  # recall ran, and found the ordinary note
        assert "4821" not in prompt and said == "Je n'ai rien à ce sujet."


async def test_a_reply_resting_on_local_only_content_is_withheld(
    db: Database, database_url: str | None, test_data_dir: Path, ollama_server: FakeOllama,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second layer (bot/axis_access.py): should local-only content reach the prompt
    all the same (the first layer switched off here), the reply is withheld."""
    import bot.responder

    monkeypatch.setattr(bot.responder, "CLOUD_READERS", frozenset())
    async with axis_axi(db, database_url, test_data_dir, ollama_server) as box:
        # public, so Axis's own conversation recalls it; local-only, so it stays here
        await box.axi.store.remember(SECRET, type="note", public=True,
                                     metadata={"local_only": True})
        ollama_server.reply = lambda body: "Le code est 4821."
        async with mcp_session(box.url, box.tokens["axis"]) as axis:
            said = text_of(await axis.call_tool(
                "parler_a_axi", {"message": "Quel est le code du portail de Peyrebrune ?"}))
            assert "4821" in str(ollama_server.chat_bodies[-1])  # the local model read it
            assert said == WITHHELD
            # a late reply goes to the mailbox: withheld there too
            ollama_server.delay_s = 1.0
            service = box.axi.services.axis
            assert service is not None
            token = await service.oauth.access_token(box.tokens["axis"])
            assert token is not None
            pending = await service.talk(token.grant, "Et le code du portail, déjà ?", 0.1)
            assert pending.startswith("Axi n'a pas encore répondu")
            await until(lambda: box.axi.store.mailbox_unread(), 20)
            late = text_of(await axis.call_tool("lire_messages", {}))
        assert WITHHELD in late and "4821" not in late and "4821" not in said



async def test_an_axis_token_held_by_a_client_reads_nothing_of_ludo(box: AxisWeb) -> None:
    # an `axis` token made by mistake for a client (`axi tokens create "Mme Durand" --scope
    # axis`) must not open Ludo's private memory to her: the token only works for Axis
    # and the inner circle, like an admin token only for an administrator
    await box.axi.store.remember(SECRET, type="note")
    durand = (await box.axi.store.create_token(box.ids["durand"], scope="axis")).secret
    headers = {"Authorization": f"Bearer {durand}"}
    async with httpx.AsyncClient(base_url=box.url, timeout=30) as http:
        briefing = await http.get("/briefing", headers=headers)
        mcp = await http.post("/mcp", headers={**headers, "Accept": "application/json, "
                                               "text/event-stream"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "chercher_memoire", "arguments": {"requete": "portail"}}})
        ok = await http.get("/briefing", headers=box.auth("ludo_axis"))
    assert briefing.status_code == 401 and "4821" not in briefing.text
    assert mcp.status_code == 401 and "4821" not in mcp.text
    assert ok.status_code == 200


async def test_an_unverified_held_message_from_a_never_cloud_address_stays(
        box: AxisWeb) -> None:
    # an email from Maître Sol's own address whose DMARC failed (a forward, a list) is
    # unverified, yet most likely his: the briefing must not hand its text to Axis
    store = box.axi.store
    await store.add_person("Maître Sol", relation="partenaire",
                           identities=[("email", "sol@notaires.example")],
                           jamais_hors_serveur=True)
    await box.axi.pipeline.accept(Inbound(
        channel="email", sender="sol@notaires.example", verified=False,
        external_id="held-unverified", text="Succession Rivière : l'héritier conteste",
        received_at=datetime.now(UTC), hold="réponse automatique suspendue"))
    await until(lambda: store.held_messages(), 20)
    async with mcp_session(box.url, box.tokens["axis"]) as axis:
        brief = text_of(await axis.call_tool("briefing", {}))
    assert "conteste" not in brief
    assert "(contenu gardé sur le serveur)" in brief
