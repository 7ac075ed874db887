"""A group (a Telegram group allowed by id) is a room several people read: whoever asks
there, Ludo included, Axi answers as it would to the public, and the answer goes to the
room. Proven end to end, then layer by layer (each test fails when its layer alone is
switched off; switched off in a copy of the tree, seen failing):

| layer | switched off by | test that fails |
|---|---|---|
| policy | `Interlocutor.trust` ignores `shared` | test_without_the_builder_… |
| gather | `person_facts` gathered for `who.person` | test_what_is_gathered_… |
| builder | `viewer = person` in `build_prompt`/`render_system` | test_the_builder_alone_… |
| commands | `PRIVATE_ONLY` empty | test_memory_commands_are_refused_… |
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest

import bot.policy
from bot.app import Axi
from bot.inbound import Inbound
from memory.database import Database
from tests.bot.conftest import assistant
from tests.bot.test_pipeline import run_all
from tests.bot.test_privacy_layers import (
    EVERYONE_CONSIGNE,
    PUBLIC_SOUVENIR,
    _allow_everything,
    _conversation_bodies,
    _leaks,
    _ludos_world,
    _text,
    scripted,
)
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama

GROUP = "-100777"
_ids = count(1)
QUESTION = ("Rappelle-moi mon prix plancher pour la longère de Vergt au pigeonnier, où en "
            "est la négociation avec Mme Durand, mon numéro personnel et ma santé ?")


@pytest.fixture
async def axi(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> AsyncIterator[Axi]:
    async with assistant(db, database_url, test_data_dir, ollama_server, anthropic_server,
                         reply=scripted) as app:
        yield app


async def in_group(app: Axi, sender: str, text: str) -> int:
    """A message said in the group by `sender` (a verified Telegram user id), answered."""
    message_id = await app.pipeline.accept(Inbound(
        channel="telegram", sender=sender, verified=True, text=text,
        external_id=f"{GROUP}:{next(_ids)}", received_at=datetime.now(UTC), room=GROUP))
    await run_all(app)
    return message_id


def _group_prompt(ollama: FakeOllama) -> str:
    return _text([_conversation_bodies(ollama.chat_bodies)[-1]])


async def test_in_a_group_ludo_gets_only_what_is_public_and_the_answer_goes_there(
        axi: Axi, ollama_server: FakeOllama) -> None:
    await _ludos_world(axi)
    message_id = await in_group(axi, "1001", QUESTION)
    prompt = _group_prompt(ollama_server)
    assert "mon prix plancher pour la longère" in prompt  # this is the group turn's prompt
    assert _leaks(prompt) == {}
    assert PUBLIC_SOUVENIR in prompt and EVERYONE_CONSIGNE in prompt
    assert "tout le monde dans le groupe" in prompt and "Tutoie cette personne." in prompt
    inbound = await axi.store.get_message(message_id)
    assert inbound.conversation == f"telegram:{GROUP}" and inbound.relation_id is not None
    sent = [d for d in axi.channels["telegram"].sent  # type: ignore[attr-defined]
            if d.in_reply_to == message_id]
    assert [d.address for d in sent] == [GROUP]
    assert sent[0].conversation == f"telegram:{GROUP}" and sent[0].kind == "reply"
    # the same question in Ludo's private chat gets his private memory (not vacuous)
    await axi.pipeline.accept(Inbound(channel="telegram", sender="1001", verified=True,
                                      text=QUESTION, external_id="prive-1",
                                      received_at=datetime.now(UTC)))
    await run_all(axi)
    private = _group_prompt(ollama_server)
    assert {"212 000", "hernie", "215 000", "06 12 34 56 78", "Maître Lacoste"} <= set(
        _leaks(private).values())


async def test_a_clients_own_facts_are_not_told_to_the_group(
        axi: Axi, ollama_server: FakeOllama) -> None:
    await _ludos_world(axi)
    await in_group(axi, "2002", "Que cherchais-je déjà comme maison ?")
    prompt = _group_prompt(ollama_server)
    assert "une longère avec jardin" not in prompt  # hers, told to Axi alone
    assert "Vouvoie cette personne." in prompt


async def test_the_builder_alone_keeps_private_memory_from_the_group(
        axi: Axi, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder's viewer is the only layer left: the policy treats Ludo as private in
    the group (so recall, consignes and named people's facts all come in private)."""
    await _ludos_world(axi)
    plain_trust = bot.policy.Interlocutor.trust.fget  # type: ignore[attr-defined]

    def trust_ignoring_rooms(self: bot.policy.Interlocutor) -> bot.policy.Trust:
        return plain_trust(bot.policy.Interlocutor(  # type: ignore[no-any-return]
            person=self.person, channel=self.channel, address=self.address,
            verified=self.verified))

    monkeypatch.setattr(bot.policy.Interlocutor, "trust", property(trust_ignoring_rooms))
    await in_group(axi, "1001", QUESTION)
    prompt = _group_prompt(ollama_server)
    assert _leaks(prompt) == {}


async def test_without_the_builder_the_policy_and_gathering_keep_the_group_public(
        axi: Axi, ollama_server: FakeOllama, monkeypatch: pytest.MonkeyPatch) -> None:
    """The builder lets everything through: only what is gathered for a public audience
    (recall, consignes, facts about Ludo and the people he names) keeps the prompt clean."""
    await _ludos_world(axi)
    _allow_everything(monkeypatch, "sees_souvenir", "sees_fact", "sees_consigne")
    await in_group(axi, "1001", QUESTION)
    prompt = _group_prompt(ollama_server)
    assert _leaks(prompt) == {}
    assert PUBLIC_SOUVENIR in prompt


async def test_what_is_gathered_for_a_group_is_public_only(axi: Axi) -> None:
    """What the responder gathers (before any builder filter) for Ludo in the group."""
    await _ludos_world(axi)
    message_id = await axi.pipeline.accept(Inbound(
        channel="telegram", sender="1001", verified=True, text=QUESTION,
        external_id=f"{GROUP}:{next(_ids)}", received_at=datetime.now(UTC), room=GROUP))
    msg = await axi.store.get_message(message_id)
    responder = axi.pipeline.responder
    who = await responder.identify(msg)
    assert who.shared and who.person is not None and who.person.personne == "Ludo"
    gathered = await responder.gather(msg, who)
    assert gathered.person_facts == [] and gathered.related_facts == []
    assert all(c.audience == "tous" for c in gathered.consignes)
    assert gathered.retrieved and all(r.souvenir.public for r in gathered.retrieved)
    private = await responder.gather(msg, replace(who, shared=False))  # not vacuous
    assert private.person_facts and not all(r.souvenir.public for r in private.retrieved)


async def test_memory_commands_are_refused_in_a_group(axi: Axi) -> None:
    await _ludos_world(axi)
    asked = [await in_group(axi, "1001", command)
             for command in ("/souvenirs longère", "/consignes", "/statut")]
    sent = [d for d in axi.channels["telegram"].sent  # type: ignore[attr-defined]
            if d.in_reply_to in asked]
    assert len(sent) == 3 and all(d.address == GROUP for d in sent)
    assert all("ne s'utilise pas dans un groupe" in d.text for d in sent)
    assert not any("Maître Lacoste" in d.text or "198 000" in d.text for d in sent)
