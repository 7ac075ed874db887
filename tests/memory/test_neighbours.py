"""Conversation neighbours and score spreading, against real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from memory.neighbours import Neighbour, conversation_neighbours, spread
from memory.recall_query import RecallFilter
from memory.records import SouvenirRecord
from memory.store import MemoryStore, NewSouvenir

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MODEL = "test-embed"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def turn(text: str, minutes: float, *, conv: str | None = "telegram:42", source: str = "telegram",
         **kw: object) -> NewSouvenir:
    meta = {"conversation": conv} if conv else {}
    return NewSouvenir(text, type="conversation", source=source, timestamp=at(minutes),
                       metadata=meta, **kw)  # type: ignore[arg-type]


def steps_of(found: list[Neighbour], of: int) -> dict[int, int]:
    return {n.souvenir.id: n.steps for n in found if n.of == of}


def _record(sid: int) -> SouvenirRecord:
    return SouvenirRecord(id=sid, timestamp=T0, type="conversation", source=None, contenu="x",
                          resume=None, importance=5, metadata={}, relation_id=None,
                          public=False)


def test_spread_is_a_share_over_steps() -> None:
    near = [Neighbour(of=1, steps=-1, souvenir=_record(2)),
            Neighbour(of=1, steps=2, souvenir=_record(3)),
            Neighbour(of=2, steps=1, souvenir=_record(1))]
    out = spread({1: 1.0, 2: 0.2}, near, share=0.5)
    assert out[1] == pytest.approx(1.0 + 0.5 * 0.2)
    assert out[2] == pytest.approx(0.2 + 0.5 * 1.0)
    assert out[3] == pytest.approx(0.5 * 1.0 / 2)  # a neighbour that had no score
    assert spread({1: 1.0}, near, share=0.0) == {1: 1.0}
    assert spread({}, near) == {}


async def test_neighbours_stay_in_their_conversation(store: MemoryStore) -> None:
    ids = await store.remember_many([
        turn("a1", 0), turn("b1", 0.5, conv="telegram:7"),  # another chat, interleaved
        turn("a2", 1), NewSouvenir("une note", timestamp=at(1.2)),  # not a conversation
        turn("a3", 2), turn("x", 2.5, source="email"),  # same key, another channel
        turn("a4", 3), turn("a5", 4),
        turn("a6", 3 * 60 + 4),  # three hours later: still the same sitting
        turn("a7", 10 * 60 + 4),  # six hours after a6: another sitting
    ])
    a1, b1, a2, note, a3, _email, a4, a5, a6, a7 = ids
    found = await conversation_neighbours(store.db, [a3, b1, note, a7], reach=2)
    assert steps_of(found, a3) == {a1: -2, a2: -1, a4: 1, a5: 2}
    assert steps_of(found, b1) == {}
    assert steps_of(found, note) == {}  # only conversation turns have neighbours
    assert steps_of(found, a7) == {}
    assert steps_of(await conversation_neighbours(store.db, [a5], reach=1), a5) == {a4: -1,
                                                                                  a6: 1}
    assert steps_of(await conversation_neighbours(store.db, [a6], reach=1), a6) == {a5: -1}
    assert await conversation_neighbours(store.db, [a3], reach=0) == []
    assert await conversation_neighbours(store.db, []) == []
    # records come whole, ready to be recalled
    first = next(n for n in found if n.souvenir.id == a2)
    assert first.souvenir.contenu == "a2" and first.souvenir.type == "conversation"


async def test_without_a_key_the_same_person_is_the_conversation(store: MemoryStore) -> None:
    ludo = await store.add_person("Ludo", relation="créateur")
    julie = await store.add_person("Julie", relation="équipe")
    ids = await store.remember_many([
        turn("l1", 0, conv=None, relation_id=ludo.id),
        turn("j1", 1, conv=None, relation_id=julie.id),
        turn("l2", 2, conv=None, relation_id=ludo.id),
        turn("k1", 3, relation_id=ludo.id),  # has a key: another conversation
        turn("l3", 4, conv=None, relation_id=ludo.id),
    ])
    l1, j1, l2, _keyed, l3 = ids
    found = await conversation_neighbours(store.db, [l2, j1], reach=1)
    assert steps_of(found, l2) == {l1: -1, l3: 1}
    assert steps_of(found, j1) == {}


async def test_neighbours_obey_the_recall_filter(store: MemoryStore) -> None:
    ids = await store.remember_many([
        turn("q", 0, public=True), turn("secret", 1), turn("r", 2, public=True),
    ])
    q, secret, r = ids
    assert steps_of(await conversation_neighbours(store.db, [q], reach=1), q) == {secret: 1}
    # a stranger never sees the private turn; the next visible one is the neighbour
    seen = await conversation_neighbours(store.db, [q], reach=1,
                                         flt=RecallFilter(private_ok=False))
    assert steps_of(seen, q) == {r: 1}


async def _dialogue(store: MemoryStore) -> dict[str, int]:
    """A pipeline-like exchange: the answer holds none of the question's words."""
    texts = {
        "ask": "Ludo: Tu as pu visiter la grange de Sarlat ?",
        "answer": "Julie: Oui, vendredi matin avec le notaire, toiture à refaire.",
        "thanks": "Ludo: Merci !",
        "other": "Ludo: Le rendez-vous chez le dentiste est mardi.",
    }
    ids = await store.remember_many([
        turn(texts["ask"], 0), turn(texts["answer"], 1), turn(texts["thanks"], 2),
        turn(texts["other"], 60 * 24 * 3),
    ])
    return dict(zip(texts, ids, strict=True))


async def test_hybrid_recalls_the_answer_through_its_question(store: MemoryStore) -> None:
    ids = await _dialogue(store)
    query = "visite de la grange de Sarlat"
    plain = [r.souvenir.id for r in await store.recall(query, limit=5)]
    assert plain == [ids["ask"]]
    alone = await store.recall_hybrid(query, None, model=MODEL, limit=5, neighbours=0)
    assert [r.souvenir.id for r in alone] == [ids["ask"]]
    hits = await store.recall_hybrid(query, None, model=MODEL, limit=5)
    got = [r.souvenir.id for r in hits]
    assert got[:2] == [ids["ask"], ids["answer"]]
    assert ids["other"] not in got  # three days later: another sitting
    by_id = {r.souvenir.id: r for r in hits}
    assert by_id[ids["answer"]].relevance == 0.0  # found through its neighbour only
    assert by_id[ids["answer"]].souvenir.contenu.startswith("Julie: Oui")
    assert [r.score for r in hits] == sorted((r.score for r in hits), reverse=True)
    # reach 1: the turn two steps away is not reached
    near = await store.recall_hybrid(query, None, model=MODEL, limit=5, reach=1)
    assert [r.souvenir.id for r in near] == [ids["ask"], ids["answer"]]


async def test_hybrid_neighbours_with_vectors(store: MemoryStore) -> None:
    ids = await _dialogue(store)
    house, teeth = [1.0, 0.0], [0.0, 1.0]
    await store.store_embeddings([(ids["ask"], house), (ids["answer"], teeth),
                                  (ids["thanks"], teeth), (ids["other"], teeth)], MODEL)
    hits = await store.recall_hybrid("grange", house, model=MODEL, limit=2)
    assert [r.souvenir.id for r in hits] == [ids["ask"], ids["answer"]]
    plain = await store.recall_hybrid("grange", house, model=MODEL, limit=2, neighbours=0)
    assert plain[0].souvenir.id == ids["ask"] and plain[1].souvenir.id != ids["answer"]


async def test_hybrid_spreading_reveals_nothing_private(store: MemoryStore) -> None:
    ask, answer = await store.remember_many([
        turn("Client: Quel est le prix de la grange de Sarlat ?", 0, public=True),
        turn("Ludo: Entre nous, le vendeur accepterait 150 000.", 1),
    ])
    everything = await store.recall_hybrid("prix grange Sarlat", None, model=MODEL, limit=5)
    assert [r.souvenir.id for r in everything] == [ask, answer]
    stranger = await store.recall_hybrid("prix grange Sarlat", None, model=MODEL, limit=5,
                                         private_ok=False)
    assert [r.souvenir.id for r in stranger] == [ask]
