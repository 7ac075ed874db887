"""The soak's people and plan (bench/soak_people.py) and what its simulated models write
(bench/soak_servers.model_reply): every kind of person is there, every message carries its
own token, what must stay on the server carries a secret, and a model's reply names the
message it answers."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from bench.soak_checks import REPLY_TOKEN, SECRET, TOKEN
from bench.soak_people import MAX_CONTACTS_PER_VISITOR, MIN_PEOPLE, plan, roster
from bench.soak_servers import claude_reply, model_reply
from bot.tutoiement import guard_reply


def test_thirty_people_hold_every_kind_and_the_designed_mix() -> None:
    people = roster(30)
    kinds = Counter(p.kind for p in people)
    assert len(people) == 30 and len({p.name for p in people}) == 30
    assert kinds["ludo"] == kinds["axis"] == 1
    assert kinds["tg_stranger"] == 3 and kinds["mail_stranger"] == 2 and kinds["visitor"] == 6
    assert sum(p.never_cloud for p in people) == 3  # Claire and two clients
    assert len({p.telegram for p in people if p.telegram}) == \
        len([p for p in people if p.telegram])
    assert len({p.ip for p in people if p.ip}) == kinds["visitor"]
    with pytest.raises(ValueError):
        roster(MIN_PEOPLE - 1)
    assert {p.kind for p in roster(MIN_PEOPLE)} >= {"ludo", "axis", "visitor", "tg_stranger",
                                                    "mail_stranger", "client_tg"}


def test_the_plan_is_the_seeds_and_marks_every_message() -> None:
    people = roster(30)
    one = plan(people, 400, 100.0, random.Random(5))
    assert one == plan(people, 400, 100.0, random.Random(5))
    assert [p.offset for p in one] == sorted(p.offset for p in one)
    assert all(0 <= p.offset <= 100 for p in one)
    assert len({p.token for p in one}) == 400
    assert all(TOKEN.findall(p.text) == [p.token] for p in one)
    channels = Counter(p.channel for p in one)
    assert set(channels) == {"telegram", "email", "web", "site", "contact", "axis"}
    for p in one:  # a secret exactly where content must stay on the server
        assert (p.secret is not None) == (p.person.never_cloud or p.local_only)
        assert SECRET.findall(p.text) == ([p.secret] if p.secret else [])
    assert any(p.text.startswith("/local ") for p in one)
    assert max(Counter(p.person.key for p in one if p.variant == "contact").values()) \
        <= MAX_CONTACTS_PER_VISITOR
    expects = {p.person.kind: p.expect for p in one}
    assert expects["tg_stranger"] == "stranger" and expects["mail_stranger"] == "held"
    assert expects["ludo"] == expects["axis"] == "reply"


def test_the_models_reply_names_its_message_and_keeps_to_no_form_of_address() -> None:
    prompt = {"messages": [
        {"role": "user", "content": "Message :\nAvant (réf. QREF-aaaaaa)"},
        {"role": "assistant", "content": "RREF-aaaaaa Bien noté."},
        {"role": "user", "content": "Souvenirs : QREF-cccccc\n\nMessage :\nEt la grange ? "
                                    "(réf. QREF-bbbbbb) Code confidentiel : SECRET-0000ff."}]}
    said = model_reply(prompt, reply_tokens=40)
    assert REPLY_TOKEN.findall(said) == ["bbbbbb"] and said.startswith("RREF-bbbbbb")
    assert SECRET.findall(said) == ["SECRET-0000ff"]  # a model repeats what it read
    assert not guard_reply(said, "tu").needs_llm_rewrite
    assert not guard_reply(said, "vous").needs_llm_rewrite
    rewrite = {"messages": [{"role": "user", "content": "Réécris ce message en vous.\n\nTexte"}]}
    assert model_reply(rewrite) == "Texte"
    claude = {"system": 'Réponds en JSON : {"faits": []}', "messages": prompt["messages"]}
    assert claude_reply(claude) == '{"faits": [], "oublis": []}'
    blocks = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Message :\nBonjour (réf. QREF-dddddd)"}]}]}
    assert claude_reply(blocks).startswith("RREF-dddddd")
