"""Erasing a person or an address on request (RGPD) and purging the site's visitors' data
after the retention: everything of theirs goes, in one transaction, and nothing of anyone
else. Data are written through the store's own paths (inbox, claims, replies with their
souvenirs, facts, tokens, confirmations, notifications) on the real database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

import memory.forget
from memory.errors import InvalidInput, NotFound
from memory.forget import Busy, Erased, parse_address
from memory.messages import ReceivedFile, inbound_params
from memory.notifications import Route
from memory.store import MemoryStore

TABLES = ("relations", "identites", "messages", "souvenirs", "faits", "fichiers_recus",
          "jetons", "confirmations", "notifications", "demandes_contact")


async def turn(store: MemoryStore, canal: str, adresse: str, texte: str, *,
               relation_id: int | None, verified: bool = True,
               files: tuple[ReceivedFile, ...] = ()) -> int:
    """One message answered as the worker does it (the reply and the two souvenirs that
    name the message in their metadata); returns the inbound message's id."""
    conversation = f"{canal}:{adresse}" + ("" if verified else ":non-vérifié")
    params = inbound_params(
        canal=canal, adresse=adresse, texte=texte, identifiant_externe=f"{canal}-{adresse}-{texte}",
        conversation=conversation, verifie=verified, files=files,
        pieces_jointes=[{"filename": f.nom} for f in files])
    msg = (await store.accept_many([params]))[0].message
    async with store.claim_inbound(message_id=msg.id) as claim:
        assert claim is not None
        await store.finish_inbound(claim, etat="traite", relation_id=relation_id,
                                   reply=f"Réponse à « {texte} »", souvenirs=[
            {"contenu": texte, "metadata": {"message_id": msg.id, "sens": "entrant",
                                            "conversation": conversation}},
            {"contenu": f"Réponse à « {texte} »",
             "metadata": {"en_reponse_a": msg.id, "sens": "sortant",
                          "conversation": conversation}}])
    return msg.id


async def souvenir_of(store: MemoryStore, message_id: int) -> int:
    async with store.db.sessions() as s:
        return int((await s.execute(text(
            "SELECT id FROM souvenirs WHERE metadata->>'message_id' = :m"),
            {"m": str(message_id)})).scalar_one())


async def snapshot(store: MemoryStore) -> dict[str, set[int]]:
    async with store.db.sessions() as s:
        return {t: {int(r[0]) for r in (await s.execute(text(f"SELECT id FROM {t}"))).all()}
                for t in TABLES}


async def contact(store: MemoryStore, email: str, *, days_ago: int = 0) -> int:
    async with store.db.sessions.begin() as s:
        return int((await s.execute(text(
            "INSERT INTO demandes_contact (site, nom, email, message, cree_le) VALUES "
            "('icidordogne.fr', 'Un visiteur', :e, 'Je cherche une maison', "
            "now() - make_interval(days => :d)) RETURNING id"),
            {"e": email, "d": days_ago})).scalar_one())


async def age(store: MemoryStore, message_ids: list[int], days: int) -> None:
    """Make messages as old as `days` (their replies too): the purge reads `cree_le`."""
    async with store.db.sessions.begin() as s:
        await s.execute(text(
            "UPDATE messages SET cree_le = now() - make_interval(days => :d) "
            "WHERE id = ANY(:m) OR en_reponse_a = ANY(:m)"), {"d": days, "m": message_ids})


@dataclass
class World:
    ludo: int
    julie: int
    durand: int
    julie_rows: dict[str, set[int]]
    before: dict[str, set[int]]


async def build_world(store: MemoryStore) -> World:
    """Ludo (créateur), Mme Durand (client) and Julie (client, Telegram and email), each
    with conversations, souvenirs and facts; Julie also has a file, a token, a web chat,
    a notification, two confirmations about her and a contact request."""
    ludo = (await store.add_person("Ludo", relation="créateur",
                                   identities=[("telegram", "1001")])).id
    durand = (await store.add_person("Mme Durand", relation="client",
                                     identities=[("telegram", "2002")])).id
    before = await snapshot(store)
    julie = (await store.add_person("Julie", relation="client", identities=[
        ("telegram", "3003"), ("email", "julie@example.fr")])).id
    m_tg = await turn(store, "telegram", "3003", "Voici le plan de la grange", relation_id=julie,
                      files=(ReceivedFile(0, "plan.pdf", "application/pdf", b"%PDF-1.4"),))
    m_mail = await turn(store, "email", "julie@example.fr", "Je vends ma grange à Vergt",
                        relation_id=julie)
    token = await store.create_token(julie, scope="chat", name="téléphone")
    await turn(store, "web", token.record.address, "Bonjour depuis le web", relation_id=julie)
    await store.remember("Julie préfère être appelée le matin", relation_id=julie)
    await store.add_fact("Julie", "vend", "une grange à Vergt", relation_id=julie,
                         source_souvenir_id=await souvenir_of(store, m_mail))
    await store.add_fact("julie", "aime", "les chats", multi_valued=True)  # her name as subject
    await store.add_fact("Ludo", "est absent", "lundi", selon="Julie (client)",
                         source_souvenir_id=await souvenir_of(store, m_tg))
    # Ludo is asked about her message, and about an action she requested
    await store.create_confirmation(
        action="message.repondre", texte="Julie a écrit : « Je vends ma grange » — répondre ?",
        payload={"message_id": m_mail}, choix=["repondre", "non"], labels=["Oui", "Non"],
        demande_a=ludo, demande_par=None, expire_le=datetime.now(UTC) + timedelta(days=1),
        routes=[("telegram", "1001")])
    await store.create_confirmation(
        action="consignes.remplacer", texte="Julie demande de changer les consignes",
        payload={"textes": ["x"]}, choix=["oui", "non"], labels=["Oui", "Non"],
        demande_a=ludo, demande_par=julie, expire_le=datetime.now(UTC) + timedelta(days=1),
        routes=[("telegram", "1001")])
    await store.queue_notification(cle="rappel:julie", genre="push", destinataire="Julie",
                                   routes=[Route("telegram", "3003", julie)],
                                   texte="Rappel : visite demain")
    await contact(store, "Julie@Example.fr")
    after_julie = await snapshot(store)
    julie_rows = {t: after_julie[t] - before[t] for t in TABLES}
    # everyone else's data, written after hers (so ids interleave)
    m_ludo = await turn(store, "telegram", "1001", "Rappelle-moi la réunion", relation_id=ludo)
    await store.add_fact("Ludo", "habite à", "Peyrebrune", relation_id=ludo,
                         source_souvenir_id=await souvenir_of(store, m_ludo))
    await turn(store, "telegram", "2002", "Avez-vous des maisons à Vergt ?", relation_id=durand)
    await store.add_fact("Mme Durand", "cherche", "une maison", relation_id=durand)
    await store.create_confirmation(
        action="identite.associer", texte="Qui est inconnu@example.fr ?",
        payload={"canal": "email", "adresse": "inconnu@example.fr"}, choix=["client", "non"],
        labels=["Client", "Non"], demande_a=ludo, demande_par=None,
        expire_le=datetime.now(UTC) + timedelta(days=1), routes=[("telegram", "1001")])
    await contact(store, "autre@example.fr")
    await store.create_token(durand, scope="chat")
    everyone = await snapshot(store)
    return World(ludo, julie, durand, julie_rows,
                 {t: everyone[t] - julie_rows[t] for t in TABLES})


JULIE_ERASED = Erased(souvenirs=7, faits=3, messages=9, fichiers=1, identites=3, jetons=1,
                      confirmations=2, notifications=1, demandes_contact=1, personnes=1)


async def test_forgetting_a_person_erases_all_of_theirs_and_nothing_else(
        store: MemoryStore) -> None:
    w = await build_world(store)
    # the rows written for Julie are the ones counted (the world is what we think it is)
    assert {t: len(ids) for t, ids in w.julie_rows.items()} == {
        "relations": 1, "identites": 3, "messages": 9, "souvenirs": 7, "faits": 3,
        "fichiers_recus": 1, "jetons": 1, "confirmations": 2, "notifications": 1,
        "demandes_contact": 1}
    preview = await store.forget_person("julie", dry_run=True)
    assert preview == JULIE_ERASED
    assert await snapshot(store) == {t: w.before[t] | w.julie_rows[t] for t in TABLES}

    erased = await store.forget_person("Julie")
    assert erased == JULIE_ERASED
    assert erased.in_words().startswith("7 souvenirs, 3 facts, 9 messages, 1 received file, ")
    assert erased.to_json()["contact_requests"] == 1
    assert await snapshot(store) == w.before  # hers all gone, everyone else's all there
    with pytest.raises(NotFound):
        await store.get_person("Julie")
    assert await store.find_by_identity("email", "julie@example.fr") is None
    assert [f.sujet for f in await store.list_facts()] == ["Mme Durand", "Ludo"]


async def test_an_address_of_a_person_forgets_that_person(store: MemoryStore) -> None:
    w = await build_world(store)
    target = await store.forget_target("email:JULIE@example.fr")
    assert target.person is not None and target.person.id == w.julie
    assert await store.forget_address("telegram:3003") == JULIE_ERASED
    assert await snapshot(store) == w.before


async def test_a_visitor_or_a_stranger_is_forgotten_by_address(store: MemoryStore) -> None:
    w = await build_world(store)
    visitor = [await turn(store, "site", "visiteur-ab12", f"Question {i}", relation_id=None,
                          verified=False) for i in range(2)]
    stranger = await turn(store, "email", "inconnu@example.fr", "Bonjour", relation_id=None,
                          verified=False)
    await store.add_fact("Ludo", "a", "une maison", selon="Interlocuteur inconnu (web)",
                         source_souvenir_id=await souvenir_of(store, visitor[0]))
    await contact(store, "inconnu@example.fr")

    target = await store.forget_target("site:visiteur-ab12:non-vérifié")  # a conversation key
    assert target.person is None and target.addresses == (("site", "visiteur-ab12"),)
    assert await store.forget_address("visiteur-ab12") == Erased(souvenirs=4, faits=1,
                                                                 messages=4)
    # the stranger: his messages, and the pairing question Ludo was asked about him
    assert await store.forget_address("Inconnu@Example.fr") == Erased(
        souvenirs=2, messages=3, confirmations=1, demandes_contact=1)
    after = await snapshot(store)
    assert after["messages"].isdisjoint({*visitor, stranger})
    assert after["relations"] == w.before["relations"] | w.julie_rows["relations"]
    assert after["faits"] == w.before["faits"] | w.julie_rows["faits"]


async def test_an_unknown_address_erases_nothing(store: MemoryStore) -> None:
    w = await build_world(store)
    erased = await store.forget_address("telegram:999999")
    assert erased == Erased() and erased.total == 0 and erased.in_words() == "nothing"
    assert await snapshot(store) == {t: w.before[t] | w.julie_rows[t] for t in TABLES}


async def test_what_is_neither_a_person_nor_an_address(store: MemoryStore) -> None:
    await store.add_person("Ludo", relation="créateur")
    for bad in ["Personne", "", "   ", "pigeon:123", "telegram:abc", "email:pas-une-adresse",
                "site:", "visiteur-a b", "x" * 10_000_000]:
        with pytest.raises(InvalidInput):
            await store.forget_target(bad)
    missing: list[str | int] = ["42", " 99999999999 ", "9" * 5000, 2**40]
    for who in missing:
        with pytest.raises(NotFound):
            await store.forget_target(who)
    with pytest.raises(NotFound):
        await store.forget_person("Personne")
    assert parse_address("JULIE@example.fr") == ("email", "julie@example.fr")
    assert parse_address("web:personne-3") == ("web", "personne-3")
    assert parse_address("axis:personne-3") == ("axis", "personne-3")


async def test_forgetting_is_all_or_nothing(store: MemoryStore) -> None:
    """A failure late in the transaction (here: a row elsewhere pinning one of her
    souvenirs, refusing its deletion) leaves every earlier deletion undone."""
    w = await build_world(store)
    pinned = min(w.julie_rows["souvenirs"])
    async with store.db.sessions.begin() as s:
        await s.execute(text("CREATE TABLE test_epingle (souvenir_id integer "
                             "REFERENCES souvenirs(id))"))
        await s.execute(text("INSERT INTO test_epingle VALUES (:s)"), {"s": pinned})
    try:
        with pytest.raises(Exception, match="test_epingle"):
            await store.forget_person("Julie")
        assert await snapshot(store) == {t: w.before[t] | w.julie_rows[t] for t in TABLES}
    finally:
        async with store.db.sessions.begin() as s:
            await s.execute(text("DROP TABLE test_epingle"))
    assert await store.forget_person("Julie") == JULIE_ERASED


async def test_a_message_being_answered_makes_forgetting_wait_then_say_so(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory.forget, "LOCK_TIMEOUT", "200ms")
    w = await build_world(store)
    pending = (await store.accept_inbound(canal="telegram", adresse="3003", texte="Encore moi",
                                          identifiant_externe="tg-encore",
                                          conversation="telegram:3003", verifie=True)).message
    async with store.claim_inbound(message_id=pending.id) as claim:
        assert claim is not None
        with pytest.raises(Busy, match="retry in a minute"):
            await store.forget_person("Julie")
    assert (await snapshot(store))["relations"] == w.before["relations"] | {w.julie}
    assert (await store.forget_person("Julie")).messages == JULIE_ERASED.messages + 1


async def test_forgetting_waits_for_a_reply_being_committed(store: MemoryStore) -> None:
    """A message answered while it is being forgotten: the reply and its souvenirs, written
    by the worker's transaction, are erased too (nothing is left behind)."""
    julie = (await store.add_person("Julie", relation="client",
                                    identities=[("telegram", "3003")])).id
    pending = (await store.accept_inbound(canal="telegram", adresse="3003", texte="Bonjour",
                                          identifiant_externe="tg-1",
                                          conversation="telegram:3003", verifie=True)).message
    release = asyncio.Event()

    async def worker() -> None:
        async with store.claim_inbound(message_id=pending.id) as claim:
            assert claim is not None
            await release.wait()
            await store.finish_inbound(claim, etat="traite", relation_id=None, reply="Bonjour !",
                                       souvenirs=[{"contenu": "Bonjour", "metadata": {
                                           "message_id": pending.id}}])

    task = asyncio.create_task(worker())
    await asyncio.sleep(0.05)
    forgetting = asyncio.create_task(store.forget_person(julie))
    await asyncio.sleep(0.2)
    assert not forgetting.done()  # waiting for the message's lock
    release.set()
    await task
    erased = await forgetting
    assert (erased.messages, erased.souvenirs) == (2, 1)
    assert await snapshot(store) == {t: set() for t in TABLES}


# ------------------------------------------------------------------ the visitors' purge
async def test_the_purge_deletes_old_visitor_data_only(store: MemoryStore) -> None:
    w = await build_world(store)
    old = [await turn(store, "site", "visiteur-old", f"Vieille question {i}", relation_id=None,
                      verified=False,
                      files=(ReceivedFile(0, "photo.jpg", "image/jpeg", b"\xff\xd8"),))
           for i in range(2)]
    recent = await turn(store, "site", "visiteur-new", "Question récente", relation_id=None,
                        verified=False)
    await store.add_fact("Ludo", "a", "une maison", selon="Interlocuteur inconnu (site)",
                         source_souvenir_id=await souvenir_of(store, old[0]))
    await store.create_confirmation(
        action="site.memo", texte="un visiteur du site propose ce mémo : …",
        payload={"message_id": old[1]}, choix=["oui", "non"], labels=["Oui", "Non"],
        demande_a=w.ludo, demande_par=None, expire_le=datetime.now(UTC) - timedelta(days=300),
        routes=[("telegram", "1001")])
    old_contact = await contact(store, "vieux@example.fr", days_ago=400)
    relay = await store.queue_outbound(
        canal="email", adresse="agence@example.fr", conversation="email:agence@example.fr",
        texte="Demande de contact de vieux@example.fr",
        metadata={"reply_to": "vieux@example.fr", "demande_contact": old_contact})
    new_contact = await contact(store, "recent@example.fr", days_ago=3)
    # a known person's messages as old (on Telegram, and one on the site itself): kept
    known_old = await turn(store, "telegram", "2002", "Ancienne question", relation_id=w.durand)
    known_site = await turn(store, "site", "visiteur-durand", "Je suis Mme Durand",
                            relation_id=w.durand, verified=False)
    await age(store, [*old, known_old, known_site], 400)
    async with store.db.sessions.begin() as s:
        await s.execute(text("UPDATE messages SET cree_le = now() - interval '400 days' "
                             "WHERE id = :r"), {"r": relay})
        await s.execute(text("UPDATE messages SET cree_le = now() - interval '400 days' "
                             "WHERE conversation LIKE 'telegram:1001%'"))  # Ludo's too
    kept = await snapshot(store)

    expected = Erased(souvenirs=4, faits=1, messages=5, fichiers=2, confirmations=1,
                      demandes_contact=1)
    assert await store.purge_visitor_data(365, dry_run=True) == expected
    assert await store.purge_visitor_data(365) == expected
    assert await store.purge_visitor_data(365) == Erased()  # nothing left to purge
    after = await snapshot(store)
    assert after["messages"] == kept["messages"] - {*old, *[i + 1 for i in old], relay}
    assert recent in after["messages"] and known_old in after["messages"]
    assert known_site in after["messages"]
    assert after["demandes_contact"] == kept["demandes_contact"] - {old_contact}
    assert new_contact in after["demandes_contact"]
    assert after["relations"] == kept["relations"] and after["identites"] == kept["identites"]
    for table in ("jetons", "notifications"):
        assert after[table] == kept[table]
    with pytest.raises(InvalidInput):
        await store.purge_visitor_data(0)


async def test_a_turn_whose_facts_are_being_extracted_waits_for_the_next_purge(
        store: MemoryStore) -> None:
    busy, free = [await turn(store, "site", f"visiteur-{i}", "Bonjour", relation_id=None,
                             verified=False) for i in ("ab", "cd")]
    await age(store, [busy, free], 400)
    async with store.db.sessions() as s, s.begin():  # the extractor holds its souvenir
        await s.execute(text("SELECT id FROM souvenirs WHERE metadata->>'message_id' = :m "
                             "FOR NO KEY UPDATE"), {"m": str(busy)})
        assert await store.purge_visitor_data(365) == Erased(souvenirs=2, messages=2)
    assert await store.purge_visitor_data(365) == Erased(souvenirs=2, messages=2)
    assert await snapshot(store) == {t: set() for t in TABLES}


async def test_purge_keeps_what_is_younger_than_the_retention(store: MemoryStore) -> None:
    m = await turn(store, "site", "visiteur-x", "Bonjour", relation_id=None, verified=False)
    await age(store, [m], 29)
    assert await store.purge_visitor_data(30) == Erased()
    assert (await store.purge_visitor_data(28)).messages == 2


# ------------------------------------------------------------------ a visitor's memo
async def memo(store: MemoryStore, ludo: int, visitor: str, words: str, *,
               days_ago: int = 0) -> tuple[int, list[int]]:
    """A visitor's `#memo` as bot/site_access.py asks it of Ludo (its payload names the
    visitor, its IP and its words; the question quotes them); returns (confirmation id,
    the ids of the messages asking it)."""
    record, asked = await store.create_confirmation(
        action="site.memo", texte=f"Un visiteur du site icidordogne propose ce mémo : « {words} »",
        payload={"site": "icidordogne", "texte": words, "ip": "203.0.113.77",
                 "visiteur": visitor},
        choix=["oui", "non"], labels=["Oui", "Non"], demande_a=ludo, demande_par=None,
        expire_le=datetime.now(UTC) + timedelta(days=7), routes=[("telegram", "1001")])
    if days_ago:
        async with store.db.sessions.begin() as s:
            await s.execute(text(
                "UPDATE confirmations SET cree_le = now() - make_interval(days => :d), "
                "expire_le = now() - make_interval(days => :d - 7) WHERE id = :c"),
                {"d": days_ago, "c": record.id})
            await s.execute(text("UPDATE messages SET cree_le = now() - make_interval("
                                 "days => :d) WHERE id = ANY(:m)"), {"d": days_ago, "m": asked})
    return record.id, asked


async def test_a_visitors_memo_is_forgotten_with_the_visitor(store: MemoryStore) -> None:
    ludo = (await store.add_person("Ludo", relation="créateur",
                                   identities=[("telegram", "1001")])).id
    _, paul_asked = await memo(store, ludo, "visiteur-paul",
                                  "je suis Paul Durand, 06 11 22 33 44")
    other, other_asked = await memo(store, ludo, "visiteur-autre", "visites le samedi")
    visit = await turn(store, "site", "visiteur-paul", "Bonjour", relation_id=None,
                       verified=False)
    assert await store.forget_address("visiteur-paul") == Erased(
        souvenirs=2, messages=3, confirmations=1)
    after = await snapshot(store)
    assert after["confirmations"] == {other}  # his words, IP and key: gone
    assert after["messages"] == set(other_asked)  # the question quoting him too
    assert visit not in after["messages"] and not set(paul_asked) & after["messages"]


async def test_the_purge_deletes_old_visitors_memos_and_their_questions(
        store: MemoryStore) -> None:
    ludo = (await store.add_person("Ludo", relation="créateur",
                                   identities=[("telegram", "1001")])).id
    _, old_asked = await memo(store, ludo, "visiteur-paul", "je suis Paul", days_ago=400)
    young, young_asked = await memo(store, ludo, "visiteur-autre", "visites le samedi",
                                    days_ago=30)
    other = await store.create_confirmation(  # not a visitor's: kept, however old
        action="identite.associer", texte="Qui est inconnu@example.fr ?",
        payload={"canal": "email", "adresse": "inconnu@example.fr"}, choix=["client", "non"],
        labels=["Client", "Non"], demande_a=ludo, demande_par=None,
        expire_le=datetime.now(UTC) - timedelta(days=390), routes=[("telegram", "1001")])
    async with store.db.sessions.begin() as s:
        await s.execute(text("UPDATE confirmations SET cree_le = now() - interval '400 days' "
                             "WHERE id = :c"), {"c": other[0].id})
    # its question is being sent right now: the memo waits for the next run
    async with store.db.sessions() as s, s.begin():
        await s.execute(text("SELECT id FROM messages WHERE id = ANY(:m) FOR UPDATE"),
                        {"m": old_asked})
        assert await store.purge_visitor_data(365) == Erased()
    assert await store.purge_visitor_data(365) == Erased(messages=1, confirmations=1)
    after = await snapshot(store)
    assert after["confirmations"] == {young, other[0].id}
    assert set(young_asked) <= after["messages"] and not set(old_asked) & after["messages"]
    assert await store.purge_visitor_data(365) == Erased()


async def lexemes(store: MemoryStore, *words: str) -> dict[str, int]:
    async with store.db.sessions() as s:
        rows = (await s.execute(text("SELECT lexeme, nb FROM lexique WHERE lexeme = ANY(:w)"),
                                {"w": list(words)})).all()
    return {r.lexeme: int(r.nb) for r in rows}


async def test_forgetting_leaves_no_word_of_theirs_in_the_lexicon(store: MemoryStore) -> None:
    """The lexicon (word → count, for recall) is brought up to date incrementally and only
    rebuilt by hand: what a person erased said (their email, their phone number, a rare
    name) must not stay in it, counted, until someone thinks of `axi db analyze`."""
    durand = await store.add_person("Mme Durand", relation="client",
                                    identities=[("telegram", "2002")])
    petit = await store.add_person("M. Petit", relation="client",
                                   identities=[("telegram", "2003")])
    await turn(store, "telegram", "2002", "Écrivez-moi à durand.secret@example.fr ou au "
               "0611223344, je vends la maison Zorglubienne", relation_id=durand.id)
    await turn(store, "telegram", "2003", "Je cherche une maison Zorglubienne aussi",
               relation_id=petit.id)
    await store.refresh_lexicon()
    before = await lexemes(store, "durand.secret@example.fr", "0611223344", "zorglubien")
    # (each turn is two souvenirs: the message, and the reply that quotes it)
    assert before == {"durand.secret@example.fr": 2, "0611223344": 2, "zorglubien": 4}
    state = await store.lexicon_state()
    assert state is not None
    erased = await store.forget_person(durand.id)
    assert erased.souvenirs == 2
    # hers are gone; a word M. Petit used too keeps his count
    assert await lexemes(store, "durand.secret@example.fr", "0611223344", "zorglubien") == {
        "zorglubien": 2}
    after = await store.lexicon_state()
    assert after is not None and after.souvenirs == state.souvenirs - 2
    again = await store.refresh_lexicon(full=True)  # what a rebuild would count: the same
    assert again.lexemes == after.lexemes


async def test_a_souvenir_forgotten_by_hand_leaves_the_lexicon_too(store: MemoryStore) -> None:
    """`axi memory forget ID` deletes a souvenir for good: its words go with it."""
    kept = await store.remember("Une maison Zorglubienne à Vergt")
    gone = await store.remember("Appelez Mme Secrète au 0699887766, maison Zorglubienne")
    await store.refresh_lexicon()
    assert await lexemes(store, "0699887766", "zorglubien") == {"0699887766": 1,
                                                                 "zorglubien": 2}
    await store.forget_souvenir(gone.id)
    assert await lexemes(store, "0699887766", "zorglubien") == {"zorglubien": 1}
    assert kept.id != gone.id
