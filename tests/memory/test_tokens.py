"""Bearer tokens (memory/tokens.py): only the hash is stored, a revoked or expired token is
no token, and a blocked person's token lets nobody in (bot/web_access.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from bot.web_access import WebAccessService
from memory.errors import InvalidInput, NotFound
from memory.store import MemoryStore
from memory.tokens import token_hash


async def test_only_the_hash_is_stored(store: MemoryStore) -> None:
    ludo = await store.add_person("Ludo", relation="créateur")
    new = await store.create_token(ludo.id, scope="chat", name="téléphone")
    assert new.secret.startswith("axi_") and len(new.secret) > 40
    async with store.db.sessions() as s:
        row = (await s.execute(text("SELECT * FROM jetons"))).one()
        dump = " ".join(str(v) for v in row)
    assert new.secret not in dump and new.secret[4:] not in dump
    assert row.empreinte == token_hash(new.secret)
    found = await store.find_token(new.secret)
    assert found is not None and (found.id, found.relation_id, found.portee) == (
        new.record.id, ludo.id, "chat")
    assert found.channel == "web" and found.address == f"personne-{ludo.id}"
    # the token's person got an identity on the token's channel
    assert await store.find_by_identity("web", f"personne-{ludo.id}") is not None
    for wrong in ["", "axi_", new.secret[:-1], new.secret + "x", new.secret.upper(),
                  "x" * 10_000, token_hash(new.secret)]:
        assert await store.find_token(wrong) is None


async def test_revoked_and_expired_tokens_are_not_found(store: MemoryStore) -> None:
    ludo = await store.add_person("Ludo", relation="créateur")
    live = await store.create_token(ludo.id)
    revoked = await store.create_token(ludo.id, scope="axis")
    expired = await store.create_token(ludo.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    later = await store.create_token(ludo.id, expires_at=datetime.now(UTC) + timedelta(hours=1))
    record = await store.revoke_token(revoked.record.id)
    assert record.revoque_le is not None
    again = await store.revoke_token(revoked.record.id)  # idempotent, first date kept
    assert again.revoque_le == record.revoque_le
    assert await store.find_token(revoked.secret) is None
    assert await store.find_token(expired.secret) is None
    assert await store.find_token(live.secret) is not None
    assert await store.find_token(later.secret) is not None
    assert [t.id for t in await store.list_tokens()] == [live.record.id, later.record.id]
    assert len(await store.list_tokens(include_revoked=True)) == 4
    for bad in (0, -1, 2**31, 2**63):
        with pytest.raises(NotFound):
            await store.revoke_token(bad)


async def test_bad_scope_name_or_person(store: MemoryStore) -> None:
    ludo = await store.add_person("Ludo", relation="créateur")
    for scope in ("root", "", "CHAT", "ADMIN"):
        with pytest.raises(InvalidInput, match="unknown scope"):
            await store.create_token(ludo.id, scope=scope)
    for name in ("", "   ", "x" * 10_000_000):
        with pytest.raises(InvalidInput, match="token name"):
            await store.create_token(ludo.id, name=name)
    for person in (ludo.id + 1, -3, 2**40):
        with pytest.raises(NotFound):
            await store.create_token(person)
    assert await store.list_tokens(include_revoked=True) == []


async def test_a_blocked_persons_token_lets_nobody_in(store: MemoryStore) -> None:
    julie = await store.add_person("Julie", relation="client")
    new = await store.create_token(julie.id)
    web = WebAccessService(store)
    grant = await web.authenticate(new.secret)
    assert grant is not None and grant.person_id == julie.id and not grant.inner_circle
    await store.update_person(julie.id, bloque=True)
    assert await store.find_token(new.secret) is not None  # the token itself is live…
    assert await web.authenticate(new.secret) is None  # …but lets nobody in
    await store.update_person(julie.id, bloque=False)
    assert await web.authenticate(new.secret) is not None


async def test_a_removed_person_takes_their_tokens(store: MemoryStore) -> None:
    julie = await store.add_person("Julie", relation="client")
    new = await store.create_token(julie.id, scope="site")
    await store.remove_person(julie.id)
    assert await store.find_token(new.secret) is None
    assert await store.list_tokens(include_revoked=True) == []
