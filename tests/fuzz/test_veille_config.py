"""The veille configuration typed by hand: the concurrence config
(jobs/concurrence_config.py) and cron lines (jobs/cron.py), on anything a person (or a
typo) can put there.

What this proves:

- the concurrence config: every agency typed is either usable or reported with its
  reason (never silently dropped), or the whole config is refused with a French reason;
- a cron line (any string) is normalised (idempotently) or refused with a one-line reason.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from jobs.concurrence_config import ConfigError, parse_config
from jobs.cron import ScheduleError, check_schedule
from tests.fuzz.support import fuzz, hostile_text, json_values

Draw = Callable[[st.SearchStrategy[Any]], Any]


# ------------------------------------------------------------------ the concurrence config
names = st.sampled_from(["A", "A (n°2)", "agence n°2", "B", " ", ""])


@st.composite
def agencies(draw: Draw) -> Any:
    if draw(st.integers(0, 5)) == 0:
        return draw(json_values(["nom", "type", "url", "lien"], max_leaves=3))
    entry: dict[str, Any] = {"nom": draw(st.one_of(names, hostile_text(15))),
                             "type": draw(st.sampled_from(["html", "json", "xml"])),
                             "url": draw(st.sampled_from(["https://a.fr/x", "https://b.fr/y",
                                                          "http://[::1]/x", "ftp://c.fr", "",
                                                          "http://[::1", "https://[",
                                                          "https://", "https://A.FR/x/"]))}
    for key, values in (("lien", ["a", "a.x", "[", ":has(", ""]), ("motif", ["/x/", "(", "a+"]),
                        ("conteneur", ["article", "!!"]), ("chemin", ["data", 5]),
                        ("suivant", ["a[rel=next]", "{"]), ("inconnu", [1])):
        if draw(st.integers(0, 3)) == 0:
            entry[key] = draw(st.sampled_from(values))
    if draw(st.integers(0, 4)) == 0:
        entry["champs"] = draw(st.dictionaries(st.sampled_from(["titre", "prix", "url", "x"]),
                                               st.sampled_from(["h2", "", "[", 3])))
    if draw(st.integers(0, 4)) == 0:
        entry["pages"] = draw(st.one_of(st.fixed_dictionaries(
            {"parametre": st.sampled_from(["page", ""]), "max": st.integers(-2, 50)}),
            json_values(max_leaves=1)))
    return entry


def every_agency_is_accounted_for(raw: Any) -> None:
    try:
        config = parse_config(raw)
    except ConfigError as exc:
        assert str(exc)
        return
    typed = raw.get("agences", [])
    assert len(config.agences) + len(config.invalid) == len(typed), (config.agences,
                                                                     config.invalid)
    for why in config.invalid.values():
        assert why


configs = st.one_of(
    st.fixed_dictionaries({"agences": st.lists(agencies(), max_size=5)},
                          optional={"delai_s": st.one_of(st.floats(), json_values(max_leaves=1)),
                                    "ras": json_values(max_leaves=1)}),
    json_values(["agences", "delai_s", "ras"]))


@fuzz(150)
@given(configs)
def test_every_agency_typed_is_usable_or_reported_with_its_reason(raw: Any) -> None:
    every_agency_is_accounted_for(raw)


LABEL_LIKE = st.sampled_from(["A", "A (n°2)", "A (n°3)", "A (n°2) (2)", "agence n°1",
                              "agence n°2", "agence n°2 (2)", " A ", ""])
"""Names that are, or look like, the labels parse_config makes for duplicates and
unnamed agencies."""


@fuzz(100)
@example({"agences": [{"nom": "A", "url": "https://a.fr/x", "lien": "a"}, {"nom": "A"},
                      {"nom": "A (n°2)"}]})
@given(st.lists(st.one_of(agencies(), st.fixed_dictionaries({"nom": LABEL_LIKE})),
                max_size=6).map(lambda agences: {"agences": agences}))
def test_an_agency_named_like_another_ones_label_is_still_reported(raw: Any) -> None:
    """Formerly a DEFECT: `invalid` is keyed by label, and the label of a duplicate name
    ('A (n°2)') could be another agency's name: one report overwrote the other, an agency
    vanished without a reason. Every label is distinct from every name typed."""
    every_agency_is_accounted_for(raw)
    config = parse_config(raw)
    assert not {a.nom for a in config.agences} & set(config.invalid)


BAD_URLS = st.sampled_from(["http://[::1", "https://[", "http://[::1/x", "https://[a]b/",
                            "http://a]/", "https://[::1]:x/", "http://[v1.x"])


@fuzz(100)
@example({"agences": [{"nom": "A", "url": "http://[::1", "lien": "a"}]})
@given(st.lists(st.tuples(agencies(), BAD_URLS), min_size=1, max_size=4).map(
    lambda pairs: {"agences": [{**a, "url": url} if isinstance(a, dict) else a
                               for a, url in pairs]}))
def test_an_unreadable_url_is_that_agency_s_reason(raw: Any) -> None:
    """Formerly a DEFECT: _agency let urlsplit's ValueError out ('http://[::1', an
    unclosed IPv6 bracket): parse_config raised it, and the whole concurrence run failed
    for one typo."""
    every_agency_is_accounted_for(raw)


# ------------------------------------------------------------------ cron lines
cron_fields = st.one_of(st.sampled_from(["*", "0", "8", "*/2", "*/3", "1-5", "mon", "mon-fri", "7",
                                         "0-7", "*/0", "99", "1,2", "?", "L", "5-1", "0,30",
                                         "31", "29", "2", "sun", "1/7", "-1", "*/99999999999999"]),
                     hostile_text(6))


@fuzz(200)
@given(st.one_of(st.lists(cron_fields, min_size=5, max_size=5).map(" ".join),
                 st.lists(cron_fields, max_size=7).map("\t ".join), hostile_text(30)))
def test_a_cron_line_is_normalised_or_refused_in_one_line(line: str) -> None:
    try:
        normal = check_schedule(line)
    except ScheduleError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert normal == " ".join(normal.split()) and len(normal.split(" ")) == 5
    assert check_schedule(normal) == normal
