"""The durable inbox/outbox: redelivery is a no-op, per-conversation order, a claim that
dies with its transaction leaves the message pending, replies and souvenirs commit together."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event

from memory.errors import InvalidInput
from memory.inbox_accept import ONE_STATEMENT_MAX
from memory.messages import inbound_params
from memory.store import MemoryStore
from tests.waiting import until


async def _accept(store: MemoryStore, ext: str, conv: str = "telegram:1", text: str = "Bonjour"):
    return await store.accept_inbound(canal="telegram", adresse="1", texte=text,
                                      identifiant_externe=ext, conversation=conv, verifie=True)


async def test_redelivery_is_a_noop(store: MemoryStore) -> None:
    first = await _accept(store, "u1")
    again = await _accept(store, "u1", text="autre texte")
    assert not first.duplicate and again.duplicate
    assert again.message.id == first.message.id and again.message.texte == "Bonjour"
    assert (await store.pending_counts()) == {"entrant:en_attente": 1}


async def test_bad_inbound(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput):
        await _accept(store, "u1", text=" \x00 ")
    with pytest.raises(InvalidInput):
        await _accept(store, "", text="salut")
    m = await _accept(store, "u2", text="sa\x00lut \ud800")
    assert m.message.texte == "salut \ufffd"


async def test_per_conversation_order_and_parallel_conversations(store: MemoryStore) -> None:
    a1 = (await _accept(store, "a1", conv="A")).message
    a2 = (await _accept(store, "a2", conv="A")).message
    b1 = (await _accept(store, "b1", conv="B")).message
    async with store.claim_inbound() as first:
        assert first is not None and first.message.id == a1.id
        # while A's first message is held, A's second must wait; B goes ahead
        async with store.claim_inbound() as second:
            assert second is not None and second.message.id == b1.id
            async with store.claim_inbound() as third:
                assert third is None
            await store.finish_inbound(second, etat="traite", relation_id=None, reply="ok B")
        await store.finish_inbound(first, etat="traite", relation_id=None, reply="ok A1",
                                   souvenirs=[{"contenu": "Bonjour"}, {"contenu": "ok A1"}])
    async with store.claim_inbound() as nxt:
        assert nxt is not None and nxt.message.id == a2.id
        history, offset = await store.conversation_history("A", current_id=a2.id)
        assert offset == 0
        assert [h.texte for h in history] == ["Bonjour", "ok A1"]
        await store.finish_inbound(nxt, etat="traite", relation_id=None, reply="ok A2")
    assert await store.count_souvenirs() == 2
    assert [r.texte for r in await store.replies_to(a2.id)] == ["ok A2"]


async def test_a_claim_that_fails_leaves_the_message_pending(store: MemoryStore) -> None:
    m = (await _accept(store, "x1")).message
    with pytest.raises(RuntimeError):
        async with store.claim_inbound() as claim:
            assert claim is not None
            await store.finish_inbound(claim, etat="traite", relation_id=None, reply="jamais",
                                       souvenirs=[{"contenu": "jamais"}])
            raise RuntimeError("worker died mid-reply")
    again = await store.get_message(m.id)
    assert again.etat == "en_attente"
    assert await store.replies_to(m.id) == [] and await store.count_souvenirs() == 0


async def test_postpone_then_retry(store: MemoryStore) -> None:
    m = (await _accept(store, "p1")).message
    async with store.claim_inbound() as claim:
        assert claim is not None
        await store.postpone_inbound(claim, delay_s=0.3, erreur="ollama down",
                                     metadata={"avis_envoye": True})
    async with store.claim_inbound() as claim:
        assert claim is None

    async def claimable():  # the message, once its retry time has come
        async with store.claim_inbound() as claim:
            return claim.message if claim is not None else None

    again = await until(claimable, 10, message="the postponed message never came back")
    assert again.id == m.id
    assert again.metadata == {"avis_envoye": True}
    assert again.tentatives == 1


async def test_outbox_claim_send_and_retry(store: MemoryStore) -> None:
    out = await store.queue_outbound(canal="console", adresse="op", conversation="c", texte="Hé")
    async with store.claim_outbound(["telegram"]) as claim:
        assert claim is None
    async with store.claim_outbound(["console"]) as claim:
        assert claim is not None and claim.message.id == out
        await store.mark_send_failed(claim, "timeout", retry_in_s=0.0)
    async with store.claim_outbound(["console"]) as claim:
        assert claim is not None
        await store.mark_sent(claim, "ext-42")
    sent = await store.get_message(out)
    assert (sent.etat, sent.identifiant_externe, sent.tentatives) == ("envoye", "ext-42", 2)
    async with store.claim_outbound(["console"]) as claim:
        assert claim is None


def _params(ext: str, text: str = "Bonjour", conv: str = "telegram:1") -> dict:  # type: ignore[type-arg]
    return inbound_params(canal="telegram", adresse="1", texte=text, identifiant_externe=ext,
                          conversation=conv, verifie=True)


async def test_a_batch_and_its_cursor_are_one_statement_in_order_and_redelivery_is_a_noop(
        store: MemoryStore) -> None:
    """A poller waits for its batch to be stored before it fetches again: a batch without
    files and its cursor go in ONE statement (it took one per message, plus the cursor,
    in a transaction). Its ids keep the batch's order; a redelivered message, in the batch
    twice or stored before, is the stored one, marked duplicate; the cursor moves anyway."""
    before = await _accept(store, "t0")
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = store.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        accepted = await store.accept_many(
            [_params("t1", "un"), _params("t2", "deux"), _params("t1", "un encore"),
             _params("t3", "trois", conv="telegram:2")],
            cursor=("telegram", "offset", "42 1700000000"))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert len(statements) == 1
    assert [(a.message.texte, a.duplicate) for a in accepted] == [
        ("un", False), ("deux", False), ("un", True), ("trois", False)]
    ids = [a.message.id for a in accepted]
    assert before.message.id < ids[0] < ids[1] < ids[3] and ids[2] == ids[0]
    assert await store.read_cursor("telegram", "offset") == "42 1700000000"
    again = await store.accept_many([_params("t0"), _params("t3")],
                                    cursor=("telegram", "offset", "43 1700000001"))
    assert [(a.message.id, a.duplicate) for a in again] == [(before.message.id, True),
                                                           (ids[3], True)]
    assert await store.read_cursor("telegram", "offset") == "43 1700000001"
    assert (await store.pending_counts()) == {"entrant:en_attente": 4}


async def test_a_batch_larger_than_one_statement_can_hold_is_stored_whole(
        store: MemoryStore) -> None:
    """PostgreSQL takes at most 32,767 parameters in a statement: a batch over
    ONE_STATEMENT_MAX (10 each) goes through the transaction, in order, with its cursor."""
    count = ONE_STATEMENT_MAX * 4
    accepted = await store.accept_many([_params(f"big{i}", f"m{i}") for i in range(count)],
                                       cursor=("telegram", "offset", "99 1700000000"))
    ids = [a.message.id for a in accepted]
    assert len(ids) == count and ids == sorted(ids) and not any(a.duplicate for a in accepted)
    assert await store.read_cursor("telegram", "offset") == "99 1700000000"
