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
