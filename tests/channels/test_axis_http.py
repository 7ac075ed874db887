"""The earlier plain endpoints for Axis (channels/axis.py) with an `axis` token: GET
/briefing (French text: consignes, recent events, open items, status, mailbox), GET
/memory (the consignes as Markdown) and POST /memory (replaced at once for Ludo himself,
else only after his accord), with French 400s and the size limits; and the Markdown round
trip (bot/axis_text.py) on its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.axis_contract import AxisRefused
from bot.axis_text import ACTION_LABELS, MAX_CONSIGNES, consignes_markdown, parse_consignes
from memory.database import Database
from memory.records import ConsigneRecord
from tests.channels.axis_support import AxisWeb, axis_axi, mcp_session, text_of
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until


@pytest.fixture
async def box(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama) -> AsyncIterator[AxisWeb]:
    async with axis_axi(db, database_url, test_data_dir, ollama_server,
                        max_request_bytes=256 * 1024) as b:
        yield b


async def active(box: AxisWeb) -> list[str]:
    return [c.texte for c in await box.axi.store.list_consignes()]


async def test_briefing_says_what_axis_needs_in_french(box: AxisWeb) -> None:
    store = box.axi.store
    await store.add_consigne("Toujours proposer une visite")
    await store.remember("Mandat signé pour la grange de Limeuil", type="action")
    await store.mailbox_post("Une question pour toi", source="Axi", cle="t1")
    await box.axi.confirmations.ask("consignes.remplacer", "Remplacer ?", {"textes": ["x"]})
    async with httpx.AsyncClient(base_url=box.url) as http:
        assert (await http.get("/briefing")).status_code == 401
        forbidden = await http.get("/briefing", headers=box.auth("chat"))
        assert forbidden.status_code == 403 and forbidden.json()["error"] == "portee_insuffisante"
        r = await http.get("/briefing", headers=box.auth("axis"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    body = r.text
    assert body.startswith("Briefing d'Axi — ")
    assert "Consignes en vigueur :\n- Toujours proposer une visite" in body
    assert "Mandat signé pour la grange de Limeuil" in body
    assert "Questions attendant la réponse de Ludo : 1" in body
    assert "remplacer les consignes" in body and "Remplacer ?" not in body
    assert "Messages en attente :" in body and "Modèle local :" in body
    assert "Boîte d'Axis : 1 message(s) non lu(s)" in body


async def test_briefing_names_every_pending_question_in_french(box: AxisWeb) -> None:
    """Every action Ludo may be asked about has a French label in the briefing (never
    its code name, never the question's own text)."""
    confirmations = box.axi.confirmations
    assert set(confirmations.actions) <= set(ACTION_LABELS), confirmations.actions
    await confirmations.ask("site.memo", "#memo chez un visiteur", {"texte": "x"})
    await confirmations.ask("consignes.ajouter", "Ajouter ?", {"texte": "y"})
    async with httpx.AsyncClient(base_url=box.url) as http:
        body = (await http.get("/briefing", headers=box.auth("axis"))).text
    assert "mémo proposé par un visiteur du site" in body
    assert "consigne proposée par Axis" in body
    assert "site.memo" not in body and "consignes.ajouter" not in body
    assert "#memo chez un visiteur" not in body


async def test_memory_read_and_replaced_after_ludos_accord(box: AxisWeb) -> None:
    await box.axi.store.add_consigne("Ancienne consigne")
    await box.axi.store.add_consigne("Vouvoyer les clients", audience="tous")
    async with httpx.AsyncClient(base_url=box.url) as http:
        read = await http.get("/memory", headers=box.auth("axis"))
        assert read.status_code == 200 and read.headers["content-type"].startswith("text/markdown")
        assert "- Ancienne consigne\n- Vouvoyer les clients\n" in read.text
        new = read.text.replace("Ancienne consigne", "Nouvelle consigne\n  sur deux lignes")
        asked = await http.post("/memory", content=new.encode(), headers=box.auth("axis"))
        assert asked.status_code == 202, asked.text
        assert asked.json()["etat"] == "demande_envoyee" and asked.json()["consignes"] == 1
        assert "Demande envoyée à Ludo" in asked.json()["message"]
        assert await active(box) == ["Ancienne consigne", "Vouvoyer les clients"]
        question = await box.question("consignes.remplacer")
        assert "Axis propose de remplacer les consignes" in question.text
        await box.press(question, "Oui")
        await until(lambda: _has(box, "Nouvelle consigne\nsur deux lignes"), 20)
        assert await active(box) == ["Vouvoyer les clients", "Nouvelle consigne\nsur deux lignes"]
        again = await http.get("/memory", headers=box.auth("axis"))
        assert "- Nouvelle consigne\n  sur deux lignes\n" in again.text  # the round trip


async def _has(box: AxisWeb, consigne: str) -> bool:
    return consigne in await active(box)


async def test_ludo_himself_replaces_at_once(box: AxisWeb) -> None:
    await box.axi.store.add_consigne("Ancienne consigne")
    async with httpx.AsyncClient(base_url=box.url) as http:
        done = await http.post("/memory", headers=box.auth("ludo_axis"),
                               json={"markdown": "# Consignes\n- Une\n- Deux\n"})
        assert done.status_code == 200 and done.json()["etat"] == "remplacees"
        assert await active(box) == ["Une", "Deux"]
        assert not [d for d in box.telegram.sent if d.kind == "confirmation"]


async def test_bad_memory_gets_french_400s_and_limits(box: AxisWeb) -> None:
    async with httpx.AsyncClient(base_url=box.url) as http:
        async def post(body: str) -> httpx.Response:
            return await http.post("/memory", content=body.encode(), headers=box.auth("axis"))
        prose = await post("Sois gentil avec tout le monde.")
        assert prose.status_code == 400 and "commence par « - »" in prose.json()["message"]
        assert (await post("# Rien\n")).json()["message"].startswith("Aucune consigne")
        many = await post("".join(f"- c{i}\n" for i in range(MAX_CONSIGNES + 1)))
        assert many.status_code == 400 and "Trop de consignes" in many.json()["message"]
        long = await post("- " + "x" * 4001)
        assert long.status_code == 400 and "trop longue" in long.json()["message"]
        latin = await http.post("/memory", content="- été".encode("latin-1"),
                                headers=box.auth("axis"))
        assert latin.status_code == 400 and "UTF-8" in latin.json()["message"]
        huge = await post("- " + "x" * (300 * 1024))
        assert huge.status_code == 413
        chat = await http.post("/memory", content=b"- Une", headers=box.auth("chat"))
        assert chat.status_code == 403
    assert await active(box) == []


def test_markdown_round_trip_and_format_errors() -> None:
    now = datetime.now(UTC)
    records = [ConsigneRecord(id=i, texte=t, active=True, source=None, cree_le=now)
               for i, t in enumerate(["Une", "Deux\n- suite", "* pas une puce"], start=1)]
    markdown = consignes_markdown(records)
    assert parse_consignes(markdown) == ["Une", "Deux\n- suite", "* pas une puce"]
    assert parse_consignes("* a\n+ b\n\n- c\n    d") == ["a", "b", "c\nd"]
    with pytest.raises(AxisRefused, match="Aucune consigne"):
        parse_consignes(consignes_markdown([]))
    with pytest.raises(AxisRefused, match="Ligne 2"):
        parse_consignes("- a\nb")
    with pytest.raises(AxisRefused, match="vide"):
        parse_consignes("- a\n- ")


async def test_what_mcp_does_not_serve_is_a_french_404_or_405(box: AxisWeb) -> None:
    """MCP's app is mounted at the root after every route: it must not answer the rest
    with its English plain text."""
    async with httpx.AsyncClient(base_url=box.url) as http:
        for method, path, allow in (("GET", "/chat-proxy", "POST"), ("GET", "/api/chat", "POST"),
                                    ("PUT", "/contact", "POST"), ("GET", "/register", "POST"),
                                    ("DELETE", "/briefing", "GET")):
            r = await http.request(method, path)
            assert r.status_code == 405, (method, path, r.status_code, r.text)
            assert r.json()["error"] == "methode_non_autorisee", r.text
            assert f"méthode {method}" in r.json()["message"]
            assert allow in r.headers["allow"].split(", "), r.headers["allow"]
        for path in ("/foo", "/mcpx", "/axis", "/.well-known/foo"):
            r = await http.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json() == {"error": "introuvable", "message": "Cette adresse n'existe pas."}
        meta = await http.get("/.well-known/oauth-authorization-server")
        assert meta.status_code == 200 and meta.json()["issuer"]
        assert (await http.get("/.well-known/oauth-protected-resource/mcp")).status_code == 200
        assert (await http.post("/mcp", json={})).status_code == 401  # MCP's own answer
        assert (await http.get("/health")).status_code in (200, 503)
    async with mcp_session(box.url, box.tokens["axis"]) as mcp:
        assert "Briefing d'Axi" in text_of(await mcp.call_tool("briefing", {}))
