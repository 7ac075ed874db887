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


async def test_forgetting_matches_whole_words_and_lists_them_first(axi: Axi) -> None:
    for objet in ("le golf", "le site web", "une longère à Vergt"):
        await axi.store.add_fact("Ludo", "aime" if objet == "le golf" else "a", objet,
                                 relation_id=1, multi_valued=True)
    assert await axi.store.facts_mentioning("le") == []  # too short to mean anything
    assert await axi.store.facts_mentioning("Lu") == []
    assert [f.objet for f in await axi.store.facts_mentioning("golf")] == ["le golf"]
    assert [f.objet for f in await axi.store.facts_mentioning("LONGERE")] == [
        "une longère à Vergt"]
    assert await axi.store.facts_mentioning("gol") == []  # whole words only
    assert await axi.store.facts_mentioning("%") == [] and await axi.store.facts_mentioning(
        ".*.*") == []
    await axi.pipeline.accept(telegram("1001", "/oublie golf"))
    await run_all(axi)
    question = next(d for d in sent(axi) if d.kind == "confirmation")
    assert "- Ludo aime le golf" in question.text and "site web" not in question.text
    await axi.pipeline.accept(telegram("1001", "/oublie le"))
    await run_all(axi)
    assert "rien à oublier" in sent(axi)[-1].text


async def test_forgetting_more_facts_than_one_question_holds_says_some_remain(axi: Axi) -> None:
    """/oublie ends at most 20 facts per question: when more match, Ludo must be told
    that some will remain (he would believe « Vergt » forgotten, and 5 facts stay)."""
    for i in range(25):
        await axi.store.add_fact("Ludo", "a visité", f"la maison {i} à Vergt", relation_id=1,
                                 multi_valued=True)
    await axi.pipeline.accept(telegram("1001", "/oublie Vergt"))
    await run_all(axi)
    question = next(d for d in sent(axi) if d.kind == "confirmation")
    assert "… et 10 autre(s)" in question.text
    assert "D'autres faits parlent encore de « Vergt »" in question.text
