"""A channel that resends its whole conversation with each message (the agency's site:
its widget sends the visitor's chat every time) supplies the prompt's history
(`Inbound.supplied_history`): several people may share one address there (one carrier IP,
the same « Bonjour »), so what is stored under it must never reach another's prompt. The
stored conversation stays the record."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text

from bot.app import Axi
from bot.gathered import SUPPLIED_KEY, supplied_history
from bot.inbound import Inbound
from bot.pipeline import _params
from memory.messages import StoredMessage
from tests.bot.test_pipeline import run_all
from tests.fakes.ollama_server import FakeOllama

_ids = itertools.count(1)
VISITOR = "visiteur-0123456789abcdef"
SECRET = "Claire Dupont, 0611223344, je divorce et dois vendre vite"


def from_site(message: str, *earlier: tuple[str, str], sender: str = VISITOR,
              **extra: object) -> Inbound:
    return Inbound(channel="site", sender=sender, verified=False, text=message,
                   external_id=f"site-{next(_ids)}", received_at=datetime.now(UTC),
                   supplied_history=earlier, **extra)  # type: ignore[arg-type]


@pytest.mark.nodb
def test_a_supplied_history_is_role_and_text_pairs() -> None:
    as_json: list[Any] = [["user", "Bonjour"], ["assistant", "Bonjour !"]]
    turns = from_site("Et à Vergt ?", *as_json)
    assert turns.supplied_history == (("user", "Bonjour"), ("assistant", "Bonjour !"))
    assert from_site("Bonjour").supplied_history == ()
    assert Inbound(channel="site", sender=VISITOR, verified=False, text="Bonjour",
                   external_id="x", received_at=datetime.now(UTC)).supplied_history is None
    for bad in ((("system", "Tu es…"),), (("user", 3),), (("user",),), ((
            "user", "a", "b"),)):
        with pytest.raises(ValueError):
            from_site("Bonjour", *bad)  # type: ignore[arg-type]


@pytest.mark.nodb
def test_it_is_kept_with_the_message_bounded_and_cleaned() -> None:
    long = [("user" if i % 2 == 0 else "assistant", f"tour {i} " + "x" * 3000)
            for i in range(25)]
    meta = json.loads(_params(from_site("Et alors ?", *long))["meta"])
    kept = meta[SUPPLIED_KEY]
    assert kept["debut"] == 5 and len(kept["tours"]) == 20
    assert kept["tours"][0][0] == "assistant" and kept["tours"][0][1].startswith("tour 5 ")
    assert all(len(t) <= 2000 for _, t in kept["tours"])
    # half an emoji, a NUL: JSONB refuses them, so they never reach it
    meta = json.loads(_params(from_site(
        "Bonjour", ("user", "Salut \ud83c\x00!"),
        thread_meta={"site": "icidordogne\ud83c", "n\x00": ["a\x00"]}))["meta"])
    assert meta[SUPPLIED_KEY]["tours"] == [["user", "Salut \ufffd!"]]
    assert meta["fil"] == {"site": "icidordogne\ufffd", "n": ["a"]}


@pytest.mark.nodb
def test_the_prompt_reads_it_as_turns_that_are_no_rows() -> None:
    now = datetime.now(UTC)
    msg = StoredMessage(
        id=7, sens="entrant", canal="site", adresse=VISITOR, verifie=False, relation_id=None,
        conversation=f"site:{VISITOR}:non-vérifié", identifiant_externe="e", reference_fil=None,
        texte="Et alors ?", pieces_jointes=[], etat="en_attente", tentatives=0,
        prochain_essai=None, erreur=None, en_reponse_a=None, recu_le=now, cree_le=now,
        metadata={SUPPLIED_KEY: {"debut": 4, "tours": [
            ["user", "Bonjour"], ["assistant", "Bonjour !"], ["system", "ignoré"], ["user", " "],
            "pas un tour"]}})
    found = supplied_history(msg)
    assert found is not None
    turns, offset = found
    assert offset == 4
    assert [(t.id, t.sens, t.texte, t.metadata) for t in turns] == [
        (-1, "entrant", "Bonjour", {}), (-2, "sortant", "Bonjour !", {})]
    assert all(t.recu_le == now and t.conversation == msg.conversation for t in turns)
    bare = StoredMessage(**{**msg.__dict__, "metadata": {}})
    assert supplied_history(bare) is None


async def test_two_visitors_sharing_an_address_never_read_each_other(
        axi: Axi, ollama_server: FakeOllama) -> None:
    """Same site, same IP, same first message: one address, one stored conversation —
    yet each prompt holds only its own visitor's turns."""
    await axi.pipeline.accept(from_site(SECRET, ("user", "Bonjour"),
                                        ("assistant", "Bonjour !")))
    await run_all(axi)
    calls = len(ollama_server.chat_bodies)
    await axi.pipeline.accept(from_site("Qu'ai-je dit ?", ("user", "Bonjour"),
                                        ("assistant", "Bonjour, que cherchez-vous ?")))
    await run_all(axi)
    second = json.dumps(ollama_server.chat_bodies[calls:], ensure_ascii=False)
    assert "Qu'ai-je dit ?" in second
    assert "Bonjour, que cherchez-vous ?" in second  # its own earlier turns do reach it
    assert "dois vendre vite" not in second
    # both stay on record under the one address (forgetting it forgets both)
    async with axi.store.db.sessions() as s:
        rows = (await s.execute(text(
            "SELECT DISTINCT conversation FROM messages WHERE canal = 'site'"))).all()
    assert len(rows) == 1
