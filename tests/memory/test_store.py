"""MemoryStore against real PostgreSQL: souvenirs, facts and supersession, people and
identities, consignes, and bad input that must fail cleanly and write nothing."""

from __future__ import annotations

import pytest

from memory.errors import AlreadyExists, InvalidInput, NotFound
from memory.store import MemoryStore, NewSouvenir


async def test_remember_and_get_back(store: MemoryStore) -> None:
    s = await store.remember("Mandat signé", type="action", source="telegram", importance=9,
                             metadata={"bien": "ferme", "prix": 250000})
    got = await store.get_souvenir(s.id)
    assert (got.contenu, got.type, got.source, got.importance) == (
        "Mandat signé", "action", "telegram", 9)
    assert got.metadata == {"bien": "ferme", "prix": 250000}


async def test_nul_and_surrogates_are_cleaned(store: MemoryStore) -> None:
    s = await store.remember("mai\x00son \udc80 à vendre", metadata={"k\x00": "v\x00\ud800"})
    got = await store.get_souvenir(s.id)
    assert got.contenu == "maison \ufffd à vendre"
    assert got.metadata == {"k": "v\ufffd"}
    assert [r.souvenir.id for r in await store.recall("maison")] == [s.id]


@pytest.mark.parametrize("bad", ["", "   ", "\x00\x00", "\n\t"])
async def test_empty_text_rejected(store: MemoryStore, bad: str) -> None:
    with pytest.raises(InvalidInput, match="empty"):
        await store.remember(bad)
    assert await store.count_souvenirs() == 0


async def test_five_megabytes_rejected_nothing_written(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput, match="too long"):
        await store.remember("maison " * 750_000)
    assert await store.count_souvenirs() == 0


async def test_large_text_within_limit_is_stored_and_found(store: MemoryStore) -> None:
    text = ("La maison de Vergt a une grange. " * 29_000)[:990_000]
    s = await store.remember(text)
    assert [r.souvenir.id for r in await store.recall("grange vergt")] == [s.id]


async def test_bulk_is_all_or_nothing(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput):
        await store.remember_many([NewSouvenir("ok"), NewSouvenir("  ")])
    with pytest.raises(NotFound):
        await store.remember_many([NewSouvenir("ok"), NewSouvenir("x", relation_id=999)])
    assert await store.count_souvenirs() == 0


async def test_unknown_ids(store: MemoryStore) -> None:
    with pytest.raises(NotFound):
        await store.get_souvenir(424242)
    with pytest.raises(NotFound):
        await store.forget_souvenir(424242)
    with pytest.raises(NotFound):
        await store.forget_fact(424242)
    with pytest.raises(NotFound):
        await store.get_person("Personne Inconnue")
    with pytest.raises(NotFound):
        await store.remove_consigne(424242)
    with pytest.raises(NotFound):
        await store.remember("x", relation_id=424242)
    with pytest.raises(NotFound):
        await store.add_fact("Ludo", "aime", "le vélo", source_souvenir_id=424242)


async def test_forget_souvenir_keeps_facts(store: MemoryStore) -> None:
    s = await store.remember("Ludo a dit qu'il aime le vélo")
    f = await store.add_fact("Ludo", "aime", "le vélo", source_souvenir_id=s.id)
    await store.forget_souvenir(s.id)
    kept = await store.get_fact(f.fact.id)
    assert kept.current and kept.source_souvenir_id is None


async def test_fact_supersession_keeps_history(store: MemoryStore) -> None:
    first = await store.add_fact("Ludo", "habite à", "Périgueux")
    second = await store.add_fact("ludo", "Habite à", "Peyrebrune", confiance=0.9)
    assert first.outcome == "created" and second.outcome == "superseded"
    old = await store.get_fact(first.fact.id)
    assert not old.current and old.remplace_par == second.fact.id
    assert old.confiance == pytest.approx(0.5)
    current = await store.facts_about("LUDO")
    assert [(f.predicat, f.objet) for f in current] == [("Habite à", "Peyrebrune")]
    history = await store.facts_about("Ludo", include_history=True)
    assert {f.objet for f in history} == {"Périgueux", "Peyrebrune"}


async def test_same_fact_is_confirmed_not_duplicated(store: MemoryStore) -> None:
    a = await store.add_fact("Julie", "travaille à", "l'agence de Vergt", confiance=0.6)
    b = await store.add_fact("Julie", "travaille à", "L'agence de  VERGT", confiance=0.8)
    assert b.outcome == "confirmed" and b.fact.id == a.fact.id
    assert b.fact.confiance == pytest.approx(0.8)
    assert len(await store.facts_about("Julie", include_history=True)) == 1


async def test_multi_valued_facts_coexist(store: MemoryStore) -> None:
    await store.add_fact("Ludo", "aime", "le vélo", multi_valued=True)
    await store.add_fact("Ludo", "aime", "les cèpes", multi_valued=True)
    assert {f.objet for f in await store.facts_about("Ludo")} == {"le vélo", "les cèpes"}


async def test_forget_fact_ends_validity_or_purges(store: MemoryStore) -> None:
    f = await store.add_fact("Anthony", "administre", "le serveur")
    ended = await store.forget_fact(f.fact.id)
    assert ended.valide_jusqu_a is not None
    assert await store.facts_about("Anthony") == []
    await store.forget_fact(f.fact.id, purge=True)
    with pytest.raises(NotFound):
        await store.get_fact(f.fact.id)


async def test_bad_fact_input(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput):
        await store.add_fact("", "aime", "x")
    with pytest.raises(InvalidInput):
        await store.add_fact("Ludo", "aime", "x", confiance=1.5)


async def test_people_and_identities(store: MemoryStore) -> None:
    ludo = await store.add_person(
        "Ludo", relation="createur", comment_interagir="tutoie, chaleureux",
        identities=[("telegram", "123456"), ("email", "Ludo@Ici-Dordogne.FR")])
    assert ludo.relation == "créateur"
    found = await store.find_by_identity("email", "ludo@ici-dordogne.fr")
    assert found is not None and found.id == ludo.id
    found_padded = await store.find_by_identity("telegram", " 123456 ")
    assert found_padded is not None and found_padded.id == ludo.id
    assert await store.find_by_identity("telegram", "999") is None
    assert await store.find_by_identity("telegram", "not-a-number") is None
    julie = await store.add_person("Julie", relation="équipe")
    with pytest.raises(AlreadyExists, match="Ludo"):
        await store.link_identity("Julie", "telegram", "123456")
    await store.link_identity("julie", "telegram", "777")
    found_julie = await store.find_by_identity("telegram", "777")
    assert found_julie is not None and found_julie.id == julie.id
    with pytest.raises(AlreadyExists):
        await store.add_person("LUDO", relation="client")
    assert [p.personne for p in await store.list_people()] == ["Julie", "Ludo"]
    await store.remove_person("Ludo")
    assert await store.find_by_identity("telegram", "123456") is None


async def test_bad_people_input_writes_nothing(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput, match="relation"):
        await store.add_person("X", relation="ami")
    with pytest.raises(InvalidInput, match="numeric"):
        await store.add_person("X", relation="client", identities=[("telegram", "@ludo")])
    with pytest.raises(InvalidInput, match="email"):
        await store.add_person("X", relation="client", identities=[("email", "pas-un-mail")])
    assert await store.list_people() == []


async def test_consignes_crud(store: MemoryStore) -> None:
    c = await store.add_consigne("Ne rien lancer sans accord de Ludo")
    await store.add_consigne("Toujours signer « Axi »")
    assert next(x.texte for x in await store.list_consignes()) == c.texte
    await store.set_consigne_active(c.id, False)
    assert len(await store.list_consignes()) == 1
    assert len(await store.list_consignes(active_only=False)) == 2
    await store.remove_consigne(c.id)
    assert len(await store.list_consignes(active_only=False)) == 1


async def test_facts_about_people_named_in_a_message(store: MemoryStore) -> None:
    await store.add_person("Ludo", relation="créateur")
    await store.add_person("Mme Durand", relation="client")
    await store.add_person("Élodie", relation="équipe")
    await store.add_fact("Mme Durand", "vend", "une longère", multi_valued=True)
    await store.add_fact("Élodie", "travaille à", "Vergt", multi_valued=True)
    await store.add_fact("Ludo", "habite à", "Peyrebrune", multi_valued=True)
    old = await store.add_fact("Élodie", "habite à", "Sarlat")
    await store.add_fact("Élodie", "habite à", "Bergerac")  # supersedes Sarlat
    found = await store.facts_about_people_named_in(
        "Tu as des nouvelles de MME DURAND et d'elodie ? Ludo", exclude="Ludo")
    assert {(f.sujet, f.objet) for f in found} == {
        ("Mme Durand", "une longère"), ("Élodie", "Vergt"), ("Élodie", "Bergerac")}
    assert old.fact.id not in {f.id for f in found}
    assert await store.facts_about_people_named_in("Rien à voir, Durandal") == []
