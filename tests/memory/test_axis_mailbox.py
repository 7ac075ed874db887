"""The Axis mailbox and the Axis person (memory/axis_mailbox.py) and the OAuth state
store (memory/oauth_state.py) on the real database: a post is idempotent on its key,
read and acknowledged once; the Axis person is made once, prefers the Axis channel and
has its address there; OAuth rows serve once and vanish when expired."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from memory.store import MemoryStore


async def test_posts_are_idempotent_listed_and_acknowledged(store: MemoryStore) -> None:
    first = await store.mailbox_post("Une question pour Axis", source="Axi", cle="q:1")
    again = await store.mailbox_post("Une question pour Axis (bis)", source="Axi", cle="q:1")
    other = await store.mailbox_post("Sans clé")
    assert first == again and other != first
    assert [i.texte for i in await store.mailbox_list()] == ["Une question pour Axis",
                                                             "Sans clé"]
    assert await store.mailbox_unread() == 2
    assert await store.mailbox_acknowledge([first, first, 999_999, -1]) == 1
    assert await store.mailbox_acknowledge([first]) == 0
    assert [i.id for i in await store.mailbox_list()] == [other]
    everything = await store.mailbox_list(unread_only=False)
    assert [i.lu_le is not None for i in everything] == [True, False]


async def test_the_axis_person_is_made_once_and_reachable(store: MemoryStore) -> None:
    axis_id = await store.ensure_axis_person()
    assert await store.ensure_axis_person() == axis_id
    person = await store.get_person(axis_id)
    assert (person.personne, person.relation) == ("Axis", "axis")
    assert person.details["canal_prefere"] == "axis"
    assert ("axis", f"personne-{axis_id}") in {(i.canal, i.adresse) for i in person.identities}
    assert (await store.find_by_identity("axis", f"personne-{axis_id}")).id == axis_id  # type: ignore[union-attr]


async def test_an_existing_axis_gets_the_axis_channel(store: MemoryStore) -> None:
    made = await store.add_person("Axis", relation="axis")
    assert await store.ensure_axis_person() == made.id
    assert (await store.get_person(made.id)).details["canal_prefere"] == "axis"


async def test_oauth_rows_serve_once_and_expire(store: MemoryStore) -> None:
    soon = datetime.now(UTC) + timedelta(minutes=5)
    await store.oauth_put("code", "h1", client_id="c1", donnees={"etat": "a"}, expire_le=soon)
    assert (await store.oauth_get("code", "h1")) is not None
    assert await store.oauth_take("code", "h1", client_id="autre") is None
    assert (await store.oauth_transition("code", "h1", field="etat", old="a", new="b")
            ) is not None
    assert await store.oauth_transition("code", "h1", field="etat", old="a", new="b") is None
    taken = await store.oauth_take("code", "h1", client_id="c1")
    assert taken is not None and taken.donnees["etat"] == "b"
    assert await store.oauth_take("code", "h1") is None
    past = datetime.now(UTC) - timedelta(seconds=1)
    await store.oauth_put("code", "h2", client_id="c1", donnees={}, expire_le=past)
    assert await store.oauth_get("code", "h2") is None
    assert await store.oauth_get("code", "h2", expired_too=True) is not None
    await store.oauth_put("code", "h2", client_id="c1", donnees={"n": 2}, expire_le=soon)
    assert (await store.oauth_get("code", "h2")).donnees == {"n": 2}  # type: ignore[union-attr]
    assert await store.oauth_purge() == 0
    await store.oauth_put("code", "h3", client_id=None, donnees={}, expire_le=past)
    assert await store.oauth_purge() == 1


async def test_a_reply_handed_over_is_read_at_once_unless_posted_before(
        store: MemoryStore) -> None:
    """What Axis was handed in its tool call is in the mailbox already read; if the outbox
    left it there first (unread, maybe listed already), it stays as Axis will read it."""
    handed = await store.mailbox_handed_over("Réponse", source="réponse", cle="message:7")
    assert handed is not None and await store.mailbox_unread() == 0
    assert await store.mailbox_post("Réponse", cle="message:7") == handed  # outbox: no-op
    assert await store.mailbox_unread() == 0
    posted = await store.mailbox_post("Réponse tardive", cle="message:8")
    assert await store.mailbox_handed_over("Réponse tardive", source=None,
                                           cle="message:8") is None
    assert [i.id for i in await store.mailbox_list()] == [posted]
