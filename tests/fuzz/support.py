"""What the fuzz modules share: their settings (scaled by AXI_FUZZ_EXAMPLES), hostile text
and JSON strategies, and the checks on text a parser hands on."""

from __future__ import annotations

import os
import re
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

SCALE_ENV = "AXI_FUZZ_EXAMPLES"


def scale() -> float:
    """The multiplier of every test's examples (AXI_FUZZ_EXAMPLES, default 1)."""
    try:
        value = float(os.environ.get(SCALE_ENV, "1"))
    except ValueError:
        return 1.0
    return value if value > 0 else 1.0


def fuzz(examples: int, **extra: Any) -> settings:
    """Settings of a property: `examples` at the default scale, no deadline (two shared
    cores), no example database (nothing written in the tree), the blob to replay a
    failure printed."""
    return settings(max_examples=max(1, round(examples * scale())), deadline=None,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture,
                                           HealthCheck.large_base_example],
                    **extra)


EXPLICIT_ONLY = settings(phases=[Phase.explicit], deadline=None, database=None,
                         suppress_health_check=list(HealthCheck))
"""A DEFECT test's settings: only its `@example`s run (deterministic xfail)."""

# ------------------------------------------------------------------ strategies
ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
"""Every code point: controls, NUL, bidi overrides, lone surrogates, private use."""
HOSTILE_PIECES = ["\x00", "\r\n", "\r", "\x1b[31m", "\u202e", "\u200b", "\ufeff", "\ud800",
                  "\udcff", "\x85", "\u2028", "é", "€", "𝔸", "'", '"', "\\", "<", ">", "&",
                  "%", "\t", " ", "#memo", "{", "}", "[", "]"]


def hostile_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Any text, leaning on what breaks parsers (controls, surrogates, quotes, markup)."""
    piece = st.one_of(st.text(ANY_CHARACTER, max_size=8), st.sampled_from(HOSTILE_PIECES))
    return st.lists(piece, max_size=max(1, max_size // 4)).map("".join).map(
        lambda s: s[:max_size])


def json_leaves(text: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.booleans(),
                     st.integers(min_value=-(2**70), max_value=2**70),
                     st.floats(allow_nan=False, allow_infinity=False),
                     text if text is not None else hostile_text())


def json_values(keys: list[str] | None = None, max_leaves: int = 12,
                text: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value (nested lists and objects), objects keyed by `keys` mostly."""
    key = st.one_of(st.sampled_from(keys), hostile_text(12)) if keys else hostile_text(12)
    return st.recursive(
        json_leaves(text),
        lambda inner: st.one_of(st.lists(inner, max_size=4),
                                st.dictionaries(key, inner, max_size=5)),
        max_leaves=max_leaves)


# ------------------------------------------------------------------ checks
_C0_C1 = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def storable(value: str) -> None:
    """Text PostgreSQL takes: no NUL, no lone surrogate (encodable as UTF-8)."""
    assert isinstance(value, str), type(value)
    assert "\x00" not in value, value[:80]
    value.encode("utf-8")


def one_clean_line(value: str, limit: int) -> None:
    """Inert display text: storable, no control character at all (no line break), bounded."""
    storable(value)
    assert not _C0_C1.search(value) and "\n" not in value, repr(value[:80])
    assert len(value) <= limit, len(value)


async def scalar(app: Any, sql: str, **params: Any) -> Any:
    """One value read from the database of a running Axi (`app.store`)."""
    from sqlalchemy import text

    async with app.store.db.engine.connect() as conn:
        return await conn.scalar(text(sql), params)


async def execute(app: Any, sql: str, **params: Any) -> None:
    """One statement run and committed on the database of a running Axi."""
    from sqlalchemy import text

    async with app.store.db.engine.begin() as conn:
        await conn.execute(text(sql), params)
