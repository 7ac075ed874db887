"""What must never leave the server never reaches Claude, by any route: not as a turn, not
inside the data block a later turn was sent with, not as a fact learnt from it, not
inside an extraction prompt that quotes a local-only reply."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sqlalchemy import text

from bot.app import Axi
from bot.inbound import Inbound
from tests.bot.test_pipeline import run_all, telegram
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama

SECRET = "4821"


def email(text: str, n: int) -> Inbound:
    return Inbound(channel="email", sender="ludo@icidordogne.fr", verified=True, text=text,
                   external_id=f"mail-{n}", received_at=datetime.now(UTC), local_only=True)


def claude_saw(anthropic: FakeAnthropic) -> str:
    return json.dumps(anthropic.bodies, ensure_ascii=False)


async def test_a_data_block_holding_a_local_only_souvenir_is_never_repeated_to_claude(
    axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
) -> None:
    await axi.store.link_identity("Ludo", "email", "ludo@icidordogne.fr")
    await axi.pipeline.accept(email(f"Le code du portail de la longère est {SECRET}", 1))
    await run_all(axi)
    # the local model is down: Claude answers the next turn from a prompt without the
    # code, but the turn is stored as the LOCAL prompt sent it (its data block holds it)
    ollama_server.stop()
    anthropic_server.reply = "Je ne peux pas te le dire ici."
    asked = await axi.pipeline.accept(
        telegram("1001", "Quel est le code du portail de la longère ?"))
    await run_all(axi)
    assert SECRET in (await axi.store.get_message(asked)).metadata["tour_envoye"]
    await axi.pipeline.accept(telegram("1001", "Merci. Autre chose : quel temps demain ?"))
    await run_all(axi)
    assert len(anthropic_server.requests) == 2
    assert SECRET not in claude_saw(anthropic_server)


async def test_facts_learnt_from_a_local_only_message_stay_on_the_server(
    axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
) -> None:
    # learnt in another conversation, so only the fact carries it into this one
    await axi.store.link_identity("Ludo", "email", "ludo@icidordogne.fr")
    await axi.pipeline.accept(email("Retiens que j'aime le golf", 3))
    await run_all(axi)
    while await axi.extractor.extract_one():
        pass
    facts = await axi.store.facts_about("Ludo", relation_id=1)
    golf = [f for f in facts if "golf" in f.objet]
    assert golf and all(f.jamais_hors_serveur for f in golf)
    ollama_server.stop()
    anthropic_server.reply = "Salut, rien de spécial."
    await axi.pipeline.accept(telegram("1001", "Que fais-tu ce week-end ?"))
    await run_all(axi)
    assert anthropic_server.requests and "golf" not in claude_saw(anthropic_server)
    assert "Peyrebrune" in claude_saw(anthropic_server)  # ordinary facts still go


async def test_extraction_quoting_a_local_only_reply_never_falls_back(
    axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic
) -> None:
    await axi.store.link_identity("Ludo", "email", "ludo@icidordogne.fr")
    await axi.pipeline.accept(email("Note bien le code du portail", 2))
    await run_all(axi)
    ollama_server.reply = f"Le code du portail de la longère est {SECRET}."
    asked = await axi.pipeline.accept(telegram("1001", "Rappelle-moi le code du portail ?"))
    await run_all(axi)
    reply = await axi.store.replies_to(asked)
    assert reply and reply[-1].metadata["local_only"] is True  # made from local-only content
    ollama_server.stop()
    for _ in range(6):
        await axi.extractor.extract_one()
    assert SECRET not in claude_saw(anthropic_server)


async def test_an_unproved_message_from_a_never_cloud_address_stays_on_the_server(
        axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> None:
    """A message from the address of someone whose messages never leave the server, not
    proved (a forward that failed DMARC, released by Ludo): answered as a stranger's, but
    his words never go to Claude (found by a review: with the local model down, the
    fallback got them)."""
    await axi.store.add_person("Maître Sol", relation="client", comment_interagir="vouvoie",
                               identities=[("telegram", "3003")])
    await axi.store.update_person("Maître Sol", jamais_hors_serveur=True)
    ollama_server.stop()
    await axi.pipeline.accept(telegram("3003", "Mon dossier confidentiel", verified=False))
    await run_all(axi)
    assert anthropic_server.requests == []
    async with axi.db.engine.connect() as conn:
        row = (await conn.execute(text(
            "SELECT etat, relation_id FROM messages WHERE sens = 'entrant'"))).one()
    assert row.etat == "en_attente" and row.relation_id is None  # waits; still no identity
