"""The operations store (memory/operations.py): what /health, `axi status` and the
backups' alerts read — the last finished and the last good operation of a kind, the
previous one, and the closing of operations whose process died."""

from __future__ import annotations

import pytest

from memory.errors import InvalidInput, NotFound
from memory.store import MemoryStore


async def test_last_and_last_good_per_kind(store: MemoryStore) -> None:
    assert await store.last_operation("sauvegarde", "local") is None
    assert await store.last_good_operation("sauvegarde", "local") is None
    first = await store.start_operation("sauvegarde", "local", details={"depot": "/mnt/d2"})
    running = await store.last_operation("sauvegarde", "local")
    assert running is None  # en cours: not finished yet
    ok = await store.finish_operation(first, "ok", instantane="930a5411",
                                      taille_octets=1234, details={"lignes": 40})
    assert ok.etat == "ok" and ok.fin is not None and ok.details == {"depot": "/mnt/d2",
                                                                       "lignes": 40}
    second = await store.start_operation("sauvegarde", "local")
    failed = await store.finish_operation(second, "echec", erreur="disque plein " * 500)
    assert failed.erreur is not None and len(failed.erreur) == 2000
    remote = await store.start_operation("sauvegarde", "distant")
    await store.finish_operation(remote, "ok")

    last = await store.last_operation("sauvegarde", "local")
    assert last is not None and last.id == second and last.etat == "echec"
    good = await store.last_good_operation("sauvegarde", "local")
    assert good is not None and good.id == first and good.instantane == "930a5411"
    before = await store.last_operation("sauvegarde", "local", before=second)
    assert before is not None and before.id == first
    assert await store.last_operation("verification", "local") is None
    assert [o.id for o in await store.list_operations()] == [remote, second, first]
    assert await store.last_started("sauvegarde") is not None
    assert await store.last_started("restauration") is None


async def test_an_operation_whose_process_died_is_closed_as_failed(store: MemoryStore) -> None:
    dead = await store.start_operation("verification", "local")
    other = await store.start_operation("sauvegarde", "local")
    assert await store.abandon_operations("verification", "interrompue") == 1
    closed = await store.last_operation("verification", "local")
    assert closed is not None and closed.id == dead and closed.etat == "echec"
    assert closed.erreur == "interrompue" and closed.details == {"interrompue": True}
    assert await store.last_operation("sauvegarde", "local") is None  # untouched
    await store.finish_operation(other, "ok")


async def test_bad_kinds_are_refused(store: MemoryStore) -> None:
    with pytest.raises(InvalidInput):
        await store.start_operation("sauvetage", "local")
    with pytest.raises(InvalidInput):
        await store.last_operation("sauvegarde", "nuage")
    with pytest.raises(InvalidInput):
        await store.finish_operation(1, "en_cours")
    with pytest.raises(NotFound):
        await store.finish_operation(999, "ok")


async def test_an_attempt_cut_by_a_stop_is_not_the_last_attempt_for_health(
        store: MemoryStore) -> None:
    done = await store.start_operation("verification", "local")
    await store.finish_operation(done, "ok")
    await store.start_operation("verification", "local")
    assert await store.abandon_operations("verification", "arrêt d'Axi") == 1
    cut = await store.last_operation("verification", "local")
    assert cut is not None and cut.etat == "echec" and cut.details.get("interrompue")
    last = await store.last_operation("verification", "local", interrupted=False)
    assert last is not None and last.id == done and last.etat == "ok"
