"""Pure text rules: cleaning, folding, query building (no database)."""

from __future__ import annotations

import pytest

from memory.text import InvalidText, clean, clean_content, fold, tsquery_text, words


def test_clean_removes_nul_and_surrogates() -> None:
    assert clean("a\x00b") == "ab"
    assert clean("x\udcffy") == "x\ufffdy"


def test_clean_content_rejects_empty_and_too_long() -> None:
    with pytest.raises(InvalidText, match="empty"):
        clean_content(" \x00 \n")
    with pytest.raises(InvalidText, match="too long"):
        clean_content("a" * 11, limit=10)


def test_fold_accents_and_ligatures() -> None:
    assert fold("Immobilière Œuvre Été À") == "immobiliere oeuvre ete a"


def test_query_words_and_quoting() -> None:
    assert words("L'été à Vergt, l'été!") == ["l", "été", "à", "vergt"]
    q = tsquery_text("maison d'été & ! ' |")
    assert q == "'maison' & 'd' & ( 'été' | 'ete' )"
    assert tsquery_text("!!! ???") is None
    assert tsquery_text("a b", mode="or") == "'a' | 'b'"


def test_idf_and_query_plan() -> None:
    from memory.recall_query import idf, plan_query

    assert idf(1, 1000) > idf(100, 1000) > idf(900, 1000) > 0
    plan = plan_query(["'absent'", "'caroline'", "'support'"], [0, 600, 3], 1000)
    assert plan is not None and plan.informative
    # a word found nowhere is left out; one in 60 % of the memory selects nothing...
    assert plan.strict == "'support'" and plan.loose == "'support'"
    # ...but still scores, less than the rare one
    assert dict(plan.weights)["'support'"] > dict(plan.weights)["'caroline'"] > 0
    assert plan_query(["'x'"], [0], 1000) is None
    common_only = plan_query(["'a'", "'b'"], [500, 600], 1000)
    assert common_only is not None and common_only.loose == "'a' | 'b'"
    assert common_only.strict == "'a' & 'b'" and not common_only.informative
    # a word nearly everywhere does not even score when another one does
    nearly_everywhere = plan_query(["'a'", "'b'"], [900, 500], 1000)
    assert nearly_everywhere is not None
    assert [t for t, _ in nearly_everywhere.weights] == ["'b'"]
    # a repeated fragment counts once
    repeated = plan_query(["'a'", "'a'", "'b'"], [5, 5, 7], 1000)
    assert repeated is not None
    assert len(repeated.weights) == 2


def test_long_queries_keep_their_rarest_words() -> None:
    from memory.recall_query import longest_words, plan_query

    words = [f"'w{i}'" for i in range(10)]
    dfs = [900, 5, 800, 1, 700, 600, 3, 500, 400, 2]
    plan = plan_query(words, dfs, 10_000, max_words=4)
    assert plan is not None
    assert plan.strict == "'w1' & 'w3' & 'w6' & 'w9'"  # the 4 rarest, in message order
    assert longest_words(["un", "troisième", "deux", "quatrième"], limit=2) == [
        "troisième", "quatrième"]


def test_searches_skip_all_words_when_any_word_finds_few() -> None:
    from memory.recall_query import plan_query, searches

    few = plan_query(["'grang'", "'sarlat'"], [3, 8], 100_000)
    assert few is not None
    assert searches(few, 100) == [("'grang' | 'sarlat'", 11)]  # ranks all 11, both-words first
    many = plan_query(["'grang'", "'sarlat'"], [3_000, 8_000], 100_000)
    assert many is not None
    assert [s for s, _ in searches(many, 100)] == ["'grang' & 'sarlat'", "'grang' | 'sarlat'"]
    one = plan_query(["'grang'"], [3_000], 100_000)
    assert one is not None
    assert searches(one, 100) == [("'grang'", 3_000)]


def test_large_memories_select_by_their_rarest_words() -> None:
    from memory.recall_query import collapse_alternatives, plan_query

    words, dfs = ["'a'", "'b'", "'c'", "'d'"], [4_000, 90, 7_000, 300]
    plan = plan_query(words, dfs, 1_000_000, select_words=2)
    assert plan is not None
    assert plan.strict == "'b' & 'd'" and plan.loose == "'b' | 'd'"
    assert [t for t, _ in plan.weights] == words  # every word still scores
    unlimited = plan_query(words, dfs, 1_000_000)
    assert unlimited is not None
    assert unlimited.strict == "'a' & 'b' & 'c' & 'd'"
    assert collapse_alternatives("'visit' | 'visit'") == "'visit'"
    assert collapse_alternatives("'été' | 'ete'") == "'été' | 'ete'"
    assert collapse_alternatives("'roqu' <-> 'roqu'") == "'roqu' <-> 'roqu'"


def test_in_a_large_memory_a_frequent_word_never_selects() -> None:
    from memory.recall_query import plan_query

    plan = plan_query(["'maison'", "'vergt'", "'pigeonni'"], [90_000, 30_000, 40], 1_000_000)
    assert plan is not None
    assert plan.strict == "'pigeonni'" and plan.informative
    assert len(plan.weights) == 3  # the frequent words still score
    chat = plan_query(["'maison'", "'vergt'"], [90_000, 30_000], 1_000_000)
    assert chat is not None
    assert not chat.informative  # nothing specific to recall
    small = plan_query(["'caroline'", "'support'"], [60, 3], 600)
    assert small is not None
    assert small.strict == "'caroline' & 'support'"  # 10 % of a small memory selects
