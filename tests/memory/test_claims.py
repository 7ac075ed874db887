"""Claims (what someone said who may not assert it as a fact) and consigne audiences, on
real PostgreSQL: a claim never supersedes a fact, is never public, and the readers that
feed prompts leave it out."""

from __future__ import annotations

import pytest

from memory.errors import InvalidInput
from memory.facts import CLAIM_MAX_CONFIDENCE
from memory.store import MemoryStore


async def test_a_claim_never_supersedes_a_fact(store: MemoryStore) -> None:
    ludo = await store.add_person("Ludo", relation="créateur")
    fact = await store.add_fact("Ludo", "habite à", "Peyrebrune", relation_id=ludo.id)
    change = await store.add_fact("Ludo", "habite à", "Bordeaux", confiance=0.95, public=True,
                                  selon="Mme Durand (client)")
    assert change.outcome == "claimed" and change.superseded == []
    claim = change.fact
    assert claim.claim and claim.selon == "Mme Durand (client)"
    assert claim.confiance == CLAIM_MAX_CONFIDENCE and not claim.public
    kept = await store.get_fact(fact.fact.id)
    assert kept.current and kept.confiance == 1.0 and kept.remplace_par is None
    # the readers that feed prompts never return it; asked, they do, attributed
    assert [f.objet for f in await store.facts_about("Ludo", relation_id=ludo.id)] == [
        "Peyrebrune"]
    assert [f.objet for f in await store.facts_about_people_named_in("Où habite Ludo ?")] == [
        "Peyrebrune"]
    both = await store.facts_about("Ludo", include_claims=True)
    assert {(f.objet, f.selon) for f in both} == {
        ("Peyrebrune", None), ("Bordeaux", "Mme Durand (client)")}
    named = await store.facts_about_people_named_in("Où habite Ludo ?", include_claims=True)
    assert len(named) == 2


async def test_a_fact_leaves_claims_alone_and_a_claim_is_confirmed_by_its_source(
        store: MemoryStore) -> None:
    first = await store.add_fact("Ludo", "aime", "le golf", selon="Interlocuteur inconnu")
    again = await store.add_fact("Ludo", "aime", "le golf", selon="Interlocuteur inconnu")
    assert again.outcome == "confirmed" and again.fact.id == first.fact.id
    other = await store.add_fact("Ludo", "aime", "le golf", selon="Mme Durand (client)")
    assert other.outcome == "claimed" and other.fact.id != first.fact.id
    fact = await store.add_fact("Ludo", "aime", "la pêche")
    assert fact.outcome == "created"  # claims are not current facts to supersede
    assert (await store.get_fact(first.fact.id)).current
    # a fact saying what the claim says makes a new claim redundant
    fact2 = await store.add_fact("Ludo", "habite à", "Peyrebrune")
    same = await store.add_fact("Ludo", "habite à", "Peyrebrune", selon="Mme Durand (client)")
    assert same.outcome == "confirmed" and same.fact.id == fact2.fact.id and not same.fact.claim


async def test_forgetting_ends_claims_too(store: MemoryStore) -> None:
    await store.add_fact("Ludo", "aime", "le golf", selon="Mme Durand (client)")
    forgotten = await store.forget_facts_matching("Ludo", "aime", "le golf")
    assert len(forgotten) == 1 and forgotten[0].claim


async def test_consignes_for_the_inner_circle_by_default(store: MemoryStore) -> None:
    inner = await store.add_consigne("Ne jamais citer le prix plancher.")
    everyone = await store.add_consigne("Toujours proposer une visite.", audience="tous")
    assert inner.audience == "interne" and everyone.audience == "tous"
    assert [c.id for c in await store.list_consignes()] == [inner.id, everyone.id]
    assert [c.id for c in await store.list_consignes(inner_circle=True)] == [inner.id, everyone.id]
    assert [c.id for c in await store.list_consignes(inner_circle=False)] == [everyone.id]
    with pytest.raises(InvalidInput):
        await store.add_consigne("x", audience="clients")  # type: ignore[arg-type]
