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
    from memory.recall import idf, plan_query

    assert idf(1, 1000) > idf(100, 1000) > idf(900, 1000) > 0
    plan = plan_query(["'absent'", "'caroline'", "'support'"], [0, 600, 3], 1000)
    assert plan is not None
    assert plan.strict == "'caroline' & 'support'"  # a word found nowhere is left out
    assert plan.loose == "'support'"  # a word in 60 % of the memory selects nothing
    assert dict(plan.weights)["'support'"] > dict(plan.weights)["'caroline'"]
    assert plan_query(["'x'"], [0], 1000) is None
    common_only = plan_query(["'a'", "'b'"], [500, 600], 1000)
    assert common_only is not None and common_only.loose == "'a' | 'b'"
