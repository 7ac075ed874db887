"""Pure text handling for memory: cleaning what PostgreSQL refuses, folding accents,
and building French full-text queries. No I/O, so it is tested without a database.

PostgreSQL rejects NUL (U+0000) in text and in jsonb, and lone UTF-16 surrogates cannot
be encoded as UTF-8; both are defined away here (`clean`, and `clean_json` for a JSON
value) before anything reaches the database.
The embedded PostgreSQL ships no `unaccent` extension, so accent folding is done by
`axi_pli()`, an IMMUTABLE SQL function built on `translate()` whose Python twin is
`fold()` below (the two share the character table).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

MAX_CONTENT_CHARS = 1_000_000
"""Longest souvenir accepted; longer text must be split by the caller."""

ACCENTED = "ÀÁÂÃÄÅàáâãäåÇçÈÉÊËèéêëÌÍÎÏìíîïÑñÒÓÔÕÖØòóôõöøÙÚÛÜùúûüÝýÿ’"
PLAIN = "AAAAAAaaaaaaCcEEEEeeeeIIIIiiiiNnOOOOOOooooooUUUUuuuuYyy'"
LIGATURES = {"Œ": "OE", "œ": "oe", "Æ": "AE", "æ": "ae"}
assert len(ACCENTED) == len(PLAIN)

_FOLD_TABLE = str.maketrans(ACCENTED, PLAIN)
_SURROGATES = re.compile("[\ud800-\udfff]")
_WORD = re.compile(r"[0-9A-Za-zÀ-ÖØ-öø-ÿŒœÆæ]+(?:['’-][0-9A-Za-zÀ-ÖØ-öø-ÿŒœÆæ]+)*")


class InvalidText(ValueError):
    """Text that cannot be stored (empty after cleaning, or too long)."""


def clean(text: str) -> str:
    """Remove NUL bytes and replace lone surrogates by U+FFFD. Never raises."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def clean_json(value: Any) -> Any:
    """A JSON value with every string (keys too) cleaned as `clean` does: what a jsonb
    column takes. Mappings become dicts, tuples lists; other values are kept. Never raises."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        return {clean(str(k)): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def clean_content(text: str, *, what: str = "text", limit: int = MAX_CONTENT_CHARS) -> str:
    """Clean text that must be stored; raise InvalidText if empty or too long."""
    if not isinstance(text, str):
        raise InvalidText(f"{what} must be a string, not {type(text).__name__}")
    text = clean(text).strip()
    if not text:
        raise InvalidText(f"{what} is empty")
    if len(text) > limit:
        raise InvalidText(
            f"{what} is too long: {len(text):,} characters (limit {limit:,}); split it first"
        )
    return text


def fold(text: str) -> str:
    """Lower-case, accent-free form; the Python twin of SQL `axi_pli()`."""
    text = text.translate(_FOLD_TABLE)
    for lig, rep in LIGATURES.items():
        text = text.replace(lig, rep)
    return text.lower()


def fold_sql_function() -> str:
    """DDL of the IMMUTABLE SQL function `axi_pli(text)` matching `fold()`."""
    accented = ACCENTED.replace("'", "''")
    plain = PLAIN.replace("'", "''")
    expr = f"translate($1, '{accented}', '{plain}')"
    for lig, rep in LIGATURES.items():
        expr = f"replace({expr}, '{lig}', '{rep}')"
    return (
        "CREATE OR REPLACE FUNCTION axi_pli(text) RETURNS text "
        "LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS "
        f"$$ SELECT lower({expr}) $$"
    )


def words(text: str) -> list[str]:
    """The lower-case words of a query, in order, without duplicates. Elisions are split
    ("l'été" → l, été); hyphenated compounds stay whole ("Saint-Cyprien"): to_tsquery
    turns a quoted compound into a phrase of its parts."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(clean(text).lower()):
        for part in re.split(r"['’]", match.group(0)):
            part = part.strip("-")
            if part:
                seen.setdefault(part, None)
    return list(seen)


def tsquery_text(text: str, *, mode: str = "and") -> str | None:
    """A `to_tsquery` input built from free text: words joined by & (and) or | (or).

    A word with accents stands for itself or its accent-free form ('été' | 'ete'),
    matching the two halves of the stored search vector. Each word is quoted so that
    no user character is read as tsquery syntax; the database then stems each word
    and drops stop words. None when no word remains.
    """
    terms = query_terms(text)
    if not terms:
        return None
    op = " & " if mode == "and" else " | "
    return op.join(terms)


def query_terms(text: str) -> list[str]:
    """One quoted `to_tsquery` fragment per word of the query (see tsquery_text)."""
    terms = []
    for word in words(text):
        plain = fold(word)
        terms.append(f"'{word}'" if plain == word else f"( '{word}' | '{plain}' )")
    return terms
