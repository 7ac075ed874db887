"""Souvenir embeddings and hybrid recall against real PostgreSQL, with small hand-made
vectors (no model). Runs on PostgreSQL with pgvector (embedded 16) and without it (e.g. the
system 15); the plain-SQL similarity path is also forced on a server that has pgvector."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memory.embeddings import unit
from memory.errors import InvalidInput, NotFound
from memory.hybrid_recall import rrf
from memory.store import MemoryStore, NewSouvenir

MODEL = "test-embed"

# 4 "semantic" axes: house, money, family, weather
HOUSE = [1.0, 0.0, 0.0, 0.0]
MONEY = [0.0, 1.0, 0.0, 0.0]
FAMILY = [0.0, 0.0, 1.0, 0.0]
WEATHER = [0.0, 0.0, 0.0, 1.0]


def mix(*parts: tuple[list[float], float]) -> list[float]:
    out = [0.0] * 4
    for vec, w in parts:
        out = [a + w * b for a, b in zip(out, vec, strict=True)]
    return out


@pytest.fixture(params=["server", "plain-sql"])
async def vstore(request: pytest.FixtureRequest, store: MemoryStore) -> AsyncIterator[MemoryStore]:
    """The store, once with the server's own similarity path, once forced to plain SQL."""
    if request.param == "plain-sql":
        store._pgvector = False  # type: ignore[attr-defined]
    yield store


async def _ids(results) -> list[int]:
    return [r.souvenir.id for r in results]


def test_unit_and_rrf_pure() -> None:
    assert unit([3.0, 4.0]) == pytest.approx([0.6, 0.8])
    for bad in ([], [0.0, 0.0], [float("nan"), 1.0]):
        with pytest.raises(InvalidInput):
            unit(bad)
    scores = rrf([[1, 2, 3], [3, 4]], k=60)
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[1] == pytest.approx(1 / 61)
    assert max(scores, key=scores.__getitem__) == 3


async def test_migration_matches_server(store: MemoryStore) -> None:
    async with store.db.sessions() as session:
        from sqlalchemy import text

        available = await session.scalar(
            text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"))
        table = await session.scalar(text("SELECT to_regclass('souvenirs_vecteurs')::text"))
    assert table == "souvenirs_vecteurs"
    # where pgvector ships with the server, the migration installed it (we run as superuser)
    assert await store.has_pgvector() == bool(available)


async def test_store_and_missing(vstore: MemoryStore) -> None:
    ids = await vstore.remember_many([NewSouvenir(f"souvenir {i}") for i in range(4)])
    assert [s.id for s in await vstore.missing_embeddings(10)] == ids[::-1]  # newest first
    assert await vstore.store_embeddings([(ids[0], HOUSE), (ids[2], [0.0, 2.0, 0.0, 0.0])],
                                         MODEL) == 2
    assert [s.id for s in await vstore.missing_embeddings(10)] == [ids[3], ids[1]]
    assert [s.id for s in await vstore.missing_embeddings(1)] == [ids[3]]
    # another model: everything is missing for it
    assert len(await vstore.missing_embeddings(10, model="other")) == 4
    # replacing a vector is allowed (one vector per souvenir), stored unit-length
    await vstore.store_embeddings([(ids[2], [0.0, 0.0, 3.0, 0.0])], MODEL)
    nearest = await vstore.nearest_souvenirs(FAMILY, model=MODEL, limit=5)
    assert nearest[0][0].id == ids[2]
    assert nearest[0][1] == pytest.approx(1.0, abs=1e-5)
    # a deleted souvenir takes its vector with it
    await vstore.forget_souvenir(ids[2])
    assert [s.id for s, _ in await vstore.nearest_souvenirs(FAMILY, model=MODEL)] == [ids[0]]


async def test_store_rejects_bad_input(vstore: MemoryStore) -> None:
    sid = (await vstore.remember("une note")).id
    with pytest.raises(InvalidInput):
        await vstore.store_embeddings([(sid, [0.0, 0.0])], MODEL)
    with pytest.raises(InvalidInput):
        await vstore.store_embeddings([(sid, HOUSE)], "")
    with pytest.raises(NotFound):
        await vstore.store_embeddings([(sid + 999, HOUSE)], MODEL)
    assert await vstore.store_embeddings([], MODEL) == 0


async def test_nearest_ignores_other_models_and_dimensions(vstore: MemoryStore) -> None:
    a, b = await vstore.remember_many([NewSouvenir("a"), NewSouvenir("b")])
    await vstore.store_embeddings([(a, HOUSE)], MODEL)
    await vstore.store_embeddings([(b, [1.0, 0.0, 0.0])], MODEL)  # another dimension
    assert [s.id for s, _ in await vstore.nearest_souvenirs(HOUSE, model=MODEL)] == [a]
    assert await vstore.nearest_souvenirs(HOUSE, model="other") == []


async def _corpus(store: MemoryStore) -> dict[str, int]:
    texts = {
        "grange": ("Visite de la grange à Sarlat, toiture à refaire", HOUSE),
        "longere": ("Une longère avec trois chambres et un grand jardin",
                    mix((HOUSE, 0.9), (WEATHER, 0.1))),
        "prix": ("Le notaire annonce 180 000 euros pour la vente", MONEY),
        "famille": ("Anniversaire de la petite nièce dimanche", FAMILY),
        "pluie": ("Orage violent sur Périgueux hier soir", WEATHER),
    }
    ids = await store.remember_many([NewSouvenir(t) for t, _ in texts.values()])
    by_name = dict(zip(texts, ids, strict=True))
    await store.store_embeddings([(by_name[n], v) for n, (_, v) in texts.items()], MODEL)
    return by_name


async def test_hybrid_finds_semantic_match_without_keyword(vstore: MemoryStore) -> None:
    ids = await _corpus(vstore)
    query = "maison à vendre"  # no souvenir holds these words except "vente" (stem vent)
    assert ids["longere"] not in await _ids(await vstore.recall(query, limit=5))
    hybrid = await vstore.recall_hybrid(query, mix((HOUSE, 1.0), (MONEY, 0.2)), model=MODEL,
                                        limit=3)
    got = await _ids(hybrid)
    assert ids["grange"] in got and ids["longere"] in got
    assert ids["pluie"] not in got and ids["famille"] not in got
    # relevance is the full-text part (0 for a vector-only hit); score is the fused one
    by_id = {r.souvenir.id: r for r in hybrid}
    assert by_id[ids["longere"]].relevance == 0.0
    assert all(r.score > 0 for r in hybrid)
    assert [r.score for r in hybrid] == sorted((r.score for r in hybrid), reverse=True)


async def test_hybrid_keyword_and_vector_agreeing_comes_first(vstore: MemoryStore) -> None:
    ids = await _corpus(vstore)
    hybrid = await vstore.recall_hybrid("notaire", MONEY, model=MODEL, limit=5)
    assert (await _ids(hybrid))[0] == ids["prix"]


async def test_hybrid_without_vector_is_full_text(vstore: MemoryStore) -> None:
    ids = await _corpus(vstore)
    hybrid = await vstore.recall_hybrid("orage", None, model=MODEL, limit=5)
    assert await _ids(hybrid) == [ids["pluie"]]
    assert await vstore.recall_hybrid("orage", None, model=MODEL, limit=0) == []


async def test_hybrid_respects_privacy_and_filters(vstore: MemoryStore) -> None:
    client = await vstore.add_person("Mme Dupuis", relation="client")
    other = await vstore.add_person("M. Martin", relation="client")
    private, public, hers, his = await vstore.remember_many([
        NewSouvenir("Note privée de Ludo sur son budget maison", type="note"),
        NewSouvenir("Annonce publique : maison de bourg", type="annonce", public=True),
        NewSouvenir("Projet de Mme Dupuis", relation_id=client.id, type="note"),
        NewSouvenir("Projet de M. Martin", relation_id=other.id, type="note"),
    ])
    await vstore.store_embeddings(
        [(private, HOUSE), (public, HOUSE), (hers, HOUSE), (his, HOUSE)], MODEL)
    query, vec = "maison", HOUSE

    everything = set(await _ids(await vstore.recall_hybrid(query, vec, model=MODEL, limit=10)))
    assert everything == {private, public, hers, his}
    stranger = await _ids(await vstore.recall_hybrid(query, vec, model=MODEL, limit=10,
                                                     private_ok=False))
    assert stranger == [public]
    for_her = set(await _ids(await vstore.recall_hybrid(
        query, vec, model=MODEL, limit=10, private_ok=False)))
    assert for_her == {public}  # a private note linked to her is not hers to see
    about_him = await _ids(await vstore.recall_hybrid(query, vec, model=MODEL, limit=10,
                                                      relation_id=other.id))
    assert about_him == [his]
    notes = set(await _ids(await vstore.recall_hybrid(query, vec, model=MODEL, limit=10,
                                                      types=["note"])))
    assert notes == {private, hers, his}


async def test_hnsw_index_serves_nearest_when_pgvector_is_there(store: MemoryStore) -> None:
    from sqlalchemy import text

    from memory.embeddings import ann_sql, vector_index_name
    from memory.recall_query import RecallFilter

    ids = await _corpus(store)
    created = await store.ensure_vector_index(MODEL, 4)
    assert created == await store.has_pgvector()
    assert await store.count_embeddings(MODEL) == 5 and await store.count_embeddings("x") == 0
    near = await store.nearest_souvenirs(HOUSE, model=MODEL, limit=2)
    assert [s.id for s, _ in near] == [ids["grange"], ids["longere"]]
    assert near[0][1] == pytest.approx(1.0)
    if not created:
        return  # PostgreSQL without pgvector: the exact plain-SQL scan answered
    sql, params = ann_sql(RecallFilter(), MODEL, 4)
    params.update({"q": unit(HOUSE), "k": 2, "fetch": 40})
    async with store.db.engine.begin() as conn:
        # five rows: without this the planner rightly sorts them; at scale it picks HNSW
        await conn.execute(text("SET LOCAL enable_sort = off"))
        plan = "\n".join(r[0] for r in (await conn.execute(text("EXPLAIN " + sql), params)).all())
    assert vector_index_name(MODEL, 4) in plan, plan


async def test_unusual_model_names_are_never_put_in_sql(store: MemoryStore) -> None:
    from memory.embeddings import indexable, vector_index_sql

    assert not indexable("x'; DROP TABLE souvenirs; --", 4) and not indexable("m", 4096)
    assert not indexable("org/:tag", 4) and not indexable("m\n", 4)
    assert indexable("nomic-embed-text:latest", 768) and indexable("bge-m3", 1024)
    with pytest.raises(InvalidInput):
        vector_index_sql("x' OR '1'='1", 4)
    assert await store.ensure_vector_index("x' OR '1'='1", 4) is False
    odd = "modèle étrange"  # not indexable: the exact scan still finds its vectors
    (a,) = await store.remember_many([NewSouvenir("a")])
    await store.store_embeddings([(a, HOUSE)], odd)
    assert [s.id for s, _ in await store.nearest_souvenirs(HOUSE, model=odd)] == [a]
