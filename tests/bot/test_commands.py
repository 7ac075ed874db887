"""Commands typed to Axi: parsing and permissions (pure), and /claude, the one question
sent to the fallback model on purpose — by Ludo only, never for local-only content."""

from __future__ import annotations

import json

from bot import commands
from bot.app import Axi
from memory.records import PersonRecord
from tests.bot.test_pipeline import run_all, sent, telegram
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama


def person(relation: str, blocked: bool = False) -> PersonRecord:
    return PersonRecord(id=1, personne="X", relation=relation, comment_interagir=None,
                        details={}, cree_le=None, bloque=blocked,  # type: ignore[arg-type]
                        jamais_hors_serveur=False)


def test_a_command_ends_at_any_whitespace() -> None:
    assert commands.split_command("/local@axi_test_bot\nle prix\nplancher") == (
        "local", "le prix\nplancher")
    assert commands.split_command("/AIDE") == ("aide", "")
    assert commands.split_command("bonjour /aide") is None
    assert commands.parse("/claude\trédige") == commands.Command("claude", "rédige")


def test_parse_and_permissions() -> None:
    assert commands.parse("/souvenirs@axi_bot longère  Vergt") == commands.Command(
        "souvenirs", "longère  Vergt")
    assert commands.parse("/inconnue x") is None and commands.parse("bonjour /statut") is None
    statut = commands.Command("statut", "")
    assert commands.allowed(statut, person("équipe"))
    assert not commands.allowed(statut, person("client")) and not commands.allowed(statut, None)
    assert not commands.allowed(statut, person("créateur", blocked=True))
    claude = commands.Command("claude", "x")
    assert commands.allowed(claude, person("créateur"))
    assert not commands.allowed(claude, person("administrateur"))
    assert "/claude" in commands.refusal(claude, "vous") and "t'est" in commands.refusal(
        claude, "tu")


async def test_claude_is_asked_directly_for_ludo_only(
    axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
) -> None:
    anthropic_server.reply = "Voici une annonce."
    await axi.pipeline.accept(telegram("1001", "/claude rédige une annonce pour la longère"))
    await run_all(axi)
    assert [d.text for d in sent(axi)] == ["Voici une annonce."]
    assert len(anthropic_server.requests) == 1 and ollama_server.chat_bodies == []
    body = json.dumps(anthropic_server.bodies, ensure_ascii=False)
    assert "rédige une annonce pour la longère" in body and "/claude" not in body
    await axi.pipeline.accept(telegram("2002", "/claude dites-moi tout"))
    await run_all(axi)
    assert sent(axi)[-1].text == "Désolé, la commande /claude n'est pas disponible pour vous."
    assert len(anthropic_server.requests) == 1
    # local-only content never goes, even when asked
    await axi.pipeline.accept(telegram("1001", "/claude le prix plancher ?", local_only=True))
    await run_all(axi)
    assert len(anthropic_server.requests) == 1
