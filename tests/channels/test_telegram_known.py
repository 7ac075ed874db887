"""Whether a Telegram sender is known (channels/telegram_known.py), asked before a batch's
files are fetched: a person paired, or blocked, since the sender was last seen gets the
files' rule of what they are now, not of what the cache remembers. Real PostgreSQL, the
store's own identity lookup."""

from __future__ import annotations

import asyncio

from bot.channel import KnownPerson
from channels.telegram_known import KnownSenders
from memory.store import MemoryStore

TTL_S = 0.05


def known_senders(store: MemoryStore) -> KnownSenders:
    async def identify(sender: str) -> KnownPerson | None:  # as bot/app.py's _identify
        person = await store.find_by_identity("telegram", sender)
        if person is None:
            return None
        return KnownPerson(id=person.id, name=person.personne,
                           relation=person.relation or "", blocked=person.bloque)

    return KnownSenders(identify, ttl_s=TTL_S)


async def test_a_stranger_paired_since_gets_their_files_fetched(store: MemoryStore) -> None:
    """A stranger wrote (not known: their files stay on Telegram); Ludo accepted them
    later; their next message's files are theirs to keep — the cache said "stranger" for
    as long as it lived, however old, and the photo they sent once paired was left."""
    known = known_senders(store)
    assert await known("3003") is False
    await store.add_person("M. Martin", relation="client", identities=[("telegram", "3003")])
    await asyncio.sleep(TTL_S * 2)
    assert await known("3003") is True


async def test_a_person_blocked_since_gets_no_file_fetched(store: MemoryStore) -> None:
    person = await store.add_person("Spam", relation="client",
                                    identities=[("telegram", "4004")])
    known = known_senders(store)
    assert await known("4004") is True
    await store.update_person(person.id, bloque=True)
    await asyncio.sleep(TTL_S * 2)
    assert await known("4004") is False
