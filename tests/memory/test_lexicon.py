"""The lexicon of document frequencies (memory/lexicon.py) and recall's use of it."""

from __future__ import annotations

from sqlalchemy import text

from memory.lexicon import LEXICON_MAX_STALENESS, scaled_counts
from memory.store import MemoryStore, NewSouvenir


async def _count(store: MemoryStore, lexeme: str) -> int | None:
    async with store.db.sessions() as session:
        return await session.scalar(text("SELECT nb FROM lexique WHERE lexeme = :l"),
                                    {"l": lexeme})


async def test_refresh_counts_lexemes_then_only_new_souvenirs(store: MemoryStore) -> None:
    assert await store.lexicon_state() is None
    await store.remember_many([NewSouvenir("Une grange à Vergt"),
                               NewSouvenir("La grange du notaire"),
                               NewSouvenir("Le notaire a appelé")])
    first = await store.refresh_lexicon()
    assert first.full and first.souvenirs_counted == 3
    assert await _count(store, "grang") == 2 and await _count(store, "notair") == 2
    state = await store.lexicon_state()
    assert state is not None and state.souvenirs == 3 and state.lexemes == first.lexemes

    again = await store.refresh_lexicon()  # nothing new: nothing counted twice
    assert not again.full and again.souvenirs_counted == 0
    assert await _count(store, "grang") == 2

    ids = await store.remember_many([NewSouvenir("Encore une grange"),
                                     NewSouvenir("Une longère")])
    step = await store.refresh_lexicon()
    assert not step.full and step.souvenirs_counted == 2
    assert await _count(store, "grang") == 3 and await _count(store, "longer") == 1
    state = await store.lexicon_state()
    assert state is not None and state.souvenirs == 5

    await store.forget_souvenir(ids[0])  # a souvenir deleted for good leaves it at once
    await store.refresh_lexicon()
    assert await _count(store, "grang") == 2
    rebuilt = await store.refresh_lexicon(full=True)  # as a rebuild counts it
    assert rebuilt.full and rebuilt.souvenirs_counted == 4
    assert await _count(store, "grang") == 2


async def test_recall_takes_frequencies_from_the_lexicon(store: MemoryStore) -> None:
    store.lexicon_min_souvenirs = 1  # a real memory needs 50,000 souvenirs for this
    ids = await store.remember_many([NewSouvenir(f"Visite de la grange numéro {i}")
                                     for i in range(4)] + [NewSouvenir("Le pigeonnier")])
    await store.refresh_lexicon()
    async with store.db.sessions() as session:
        total, terms, dfs = await store._document_frequencies(
            session, ["'grange'", "'la'", "'pigeonnier'", "'granges'"], "french")
    # stop words dropped, two forms of one word merged
    assert (total, terms, dfs) == (5, ["( 'grang' )", "( 'pigeonni' )"], [4, 1])

    # the counts really come from the table: change one and recall sees it
    async with store.db.sessions.begin() as session:
        await session.execute(text("UPDATE lexique SET nb = 3 WHERE lexeme = 'pigeonni'"))
    async with store.db.sessions() as session:
        _, _, dfs = await store._document_frequencies(session, ["'pigeonnier'"], "french")
    assert dfs == [3]

    # a word stored after the last refresh is probed, so it is found at once
    late = await store.remember("Un séchoir à tabac")
    assert [r.souvenir.id for r in await store.recall("séchoir")] == [late.id]
    assert [r.souvenir.id for r in await store.recall("pigeonnier")] == [ids[4]]


async def test_small_talk_recalls_nothing_when_asked(store: MemoryStore) -> None:
    await store.remember_many([NewSouvenir(f"Merci pour la visite {i}") for i in range(60)]
                              + [NewSouvenir("Le pigeonnier de Vergt")])
    assert await store.recall("merci", informative_only=True) == []
    assert len(await store.recall("merci", limit=100)) == 60  # a search still finds them
    found = await store.recall("merci pour le pigeonnier", informative_only=True)
    assert [r.souvenir.contenu for r in found][:1] == ["Le pigeonnier de Vergt"]


def test_a_stale_or_missing_lexicon_is_not_used() -> None:
    assert scaled_counts({"a": 10}, None, 100_000) is None
    assert scaled_counts({"a": 10}, 100_000, 40_000) is None  # memory too small to need it
    assert scaled_counts({"a": 10}, 100_000, 100_000) == {"a": 10}
    assert scaled_counts({"a": 10}, 100_000, 150_000) == {"a": 15}  # scaled to the size
    assert scaled_counts({"a": 10}, 100_000, int(100_000 * LEXICON_MAX_STALENESS) + 1) is None


async def test_warm_cache_reads_the_souvenirs(store: MemoryStore) -> None:
    await store.remember_many([NewSouvenir(f"Grange numéro {i} à Vergt") for i in range(30)])
    await store.refresh_lexicon()
    done = await store.warm_cache()
    assert done.souvenirs == 30 and done.seconds >= 0
    assert (await store.warm_cache(budget_share=0.0)).souvenirs == 0
    found = await store.recall("grange 7", limit=3)
    assert found[0].souvenir.contenu == "Grange numéro 7 à Vergt"
