"""The legacy importer's pure readers (bot/legacy_text.py, bot/legacy_conversations.py,
bot/legacy_formats.py) and its per-file step (bot/legacy_import.read_one) on arbitrary
bytes, encodings and shapes.

The contract is "never dropping a line silently". What this proves:

- decoding: any bytes give text (UTF-8, UTF-16/32 with a BOM, Windows-1252, mixed line by
  line) or Unreadable with a one-line reason; the text has no NUL and no BOM, and keeps
  every line of the file;
- the conversation log: every non-blank line is in exactly one record — a message (its
  header line, then its continuation lines), a raw souvenir with the reason, or a skip
  with the reason — or is a day line (`=== 14/03/2025 ===`) dating the messages after it;
  each line's words are in its record;
- MEMORY.md: every non-blank line is a consigne (with its continuation lines), a raw
  souvenir or a skip with a reason, or a `##` heading (the category of the items below);
- the JSON and CSV formats (site notes, DPE lists and exports, memories of any shape):
  every entry becomes an item, a raw souvenir or a skip with a reason; nothing raises
  but Unreadable;
- a whole file of any name and content is read, skipped or unreadable with a reason.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from bot.legacy_conversations import is_day_line, parse_conversations, read_header
from bot.legacy_formats import (
    KINDS,
    kind_by_content,
    kind_by_name,
    parse,
    parse_consignes,
    parse_dpe_csv,
    parse_dpe_list,
    parse_json_memories,
    parse_site_notes,
)
from bot.legacy_import import read_one
from bot.legacy_text import (
    ConsigneItem,
    DpeItem,
    Parsed,
    Skip,
    SouvenirItem,
    Unreadable,
    decode,
    split_lines,
)
from memory.text import MAX_CONTENT_CHARS
from tests.fuzz.support import fuzz, hostile_text, json_values

PARIS = ZoneInfo("Europe/Paris")
NAME = "journal.txt"
Draw = Callable[[st.SearchStrategy[Any]], Any]


# ------------------------------------------------------------------ bytes → text
def file_text(max_lines: int = 12) -> st.SearchStrategy[str]:
    return st.lists(hostile_text(50), max_size=max_lines).map("\n".join)


ENCODINGS = ["utf-8", "utf-8-sig", "cp1252", "latin-1", "utf-16", "utf-32"]


@st.composite
def encoded_files(draw: Draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=400))
    text = draw(file_text())
    if kind == 1:  # one encoding for the whole file
        return text.encode(draw(st.sampled_from(ENCODINGS)), "replace")
    if kind == 2:  # lines appended by programs with different encodings
        return b"\n".join(line.encode(draw(st.sampled_from(["utf-8", "cp1252"])), "replace")
                          for line in text.split("\n"))
    cut = draw(st.integers(0, 50))  # a half-written file
    data = text.encode("utf-8", "replace")
    return data[: max(0, len(data) - cut)]


@fuzz(200)
@given(encoded_files())
def test_any_bytes_decode_to_text_or_unreadable_with_a_reason(data: bytes) -> None:
    try:
        decoded = decode(data)
    except Unreadable as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert "\x00" not in decoded.text and "\ufeff" not in decoded.text
    assert decoded.encoding
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        body = data.removeprefix(codecs.BOM_UTF8).replace(b"\x00", b"")
        if b"\r" not in body:  # every line of the file is a line of the text
            assert len(decoded.text.split("\n")) == len(body.split(b"\n"))


@fuzz(200)
@given(file_text())
def test_a_utf8_file_is_read_as_it_was_written(text: str) -> None:
    text = text.encode("utf-8", "replace").decode("utf-8")
    if "\x00" in text or "\ufeff" in text or len(re.findall("[\x00-\x08\x0e-\x1f\x7f-\x9f]",
                                                              text)) > 8:
        return
    assert decode(text.encode("utf-8")).text == text


# ------------------------------------------------------------------ accounting
def numbers(where: str, name: str) -> range:
    """The lines an item's or a skip's `where` covers ("journal.txt:4" or ":4-7")."""
    found = re.fullmatch(re.escape(name) + r":(\d+)(?:-(\d+))?", where)
    assert found, where
    start = int(found[1])
    return range(start, int(found[2] or start) + 1)


def covered(parsed: Parsed, name: str) -> dict[int, list[Any]]:
    """Line number → the records that cover it."""
    lines: dict[int, list[Any]] = {}
    for record in [*parsed.items, *parsed.skips]:
        for number in numbers(record.where, name):
            lines.setdefault(number, []).append(record)
    return lines


def reasons(parsed: Parsed) -> None:
    for item in parsed.items:
        if isinstance(item, SouvenirItem) and item.type == "brut":
            assert item.unreadable  # a raw souvenir says why
            assert len(item.contenu) <= MAX_CONTENT_CHARS
    for skip in parsed.skips:
        assert isinstance(skip, Skip) and skip.reason


# ------------------------------------------------------------------ the conversation log
STAMPS = ["[2025-03-14 09:12] ", "2025-03-14 09:12:05 - ", "14/03/2025 09:12 ", "14/03/2025, 09:12 - ",
          "2025-03-14T09:12:05+01:00 ", "[09:12] ", "9h12 ", "[2025-02-30 10:00] ", "31/02/2025 ",
          "[25:99] ", "[2025-03-14 ", "(14.03.25 8:05) ", "2025-03-14abc ", ""]
SPEAKERS = ["Ludo: ", "Axi : ", "<Julie> ", "Mme Durand: ", "assistant: ", "", "http: "]
DAYS = ["=== 14/03/2025 ===", "--- Conversation du 2025-03-15 ---", "## 31/02/2025",
        "Lundi 3/3/2025", "[2025-03-16]"]


@st.composite
def logs(draw: Draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.integers(0, 5))
        if kind <= 2:
            lines.append(draw(st.sampled_from(STAMPS)) + draw(st.sampled_from(SPEAKERS))
                         + draw(hostile_text(40)))
        elif kind == 3:
            lines.append(draw(st.sampled_from(DAYS)))
        elif kind == 4:
            lines.append(draw(st.sampled_from(["", "   ", "\t"])))
        else:  # a continuation, or junk
            lines.append(draw(hostile_text(50)))
    return "\n".join(lines)


def log_text(text: str) -> str:
    """What `decode` hands on: no NUL, no BOM, one kind of line break."""
    return text.replace("\x00", "").replace("\ufeff", "")


@fuzz(150)
@given(logs().map(log_text))
def test_every_line_of_the_log_is_in_one_record_or_dates_the_next(text: str) -> None:
    parsed = parse_conversations(text, NAME, PARIS)
    reasons(parsed)
    cover = covered(parsed, NAME)
    for number, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        records = cover.get(number, [])
        if not records:  # only a day line may be consumed: it dates the next messages
            assert is_day_line(line), (number, line)
            continue
        assert len(records) == 1, (number, line, records)
        [record] = records
        if isinstance(record, SouvenirItem) and record.type == "brut":
            assert record.contenu == line.strip()[:MAX_CONTENT_CHARS]
        elif isinstance(record, SouvenirItem):  # a message: its words are in it
            assert record.timestamp is not None and record.timestamp.tzinfo is not None
            first = numbers(record.where, NAME).start == number
            header = read_header(line) if first else None
            said = header.text if header is not None else line.strip()
            assert said in record.contenu or len(record.contenu) == MAX_CONTENT_CHARS, (
                line, record.contenu)


# ------------------------------------------------------------------ MEMORY.md
@st.composite
def memory_files(draw: Draw) -> str:
    lines = []
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.integers(0, 6))
        text = draw(hostile_text(40))
        lines.append([f"# {text}", f"## {text}", f"### {text} ###", f"- {text}",
                      f"  {text}", f"1. [x] {text}", text][kind])
        if draw(st.integers(0, 6)) == 0:
            lines.append(draw(st.sampled_from(["---", "<!-- note -->", "", "* * *",
                                               "- " + "x" * 4100])))
    return "\n".join(lines)


@fuzz(150)
@given(memory_files().map(log_text))
def test_every_line_of_memory_md_is_a_consigne_a_raw_souvenir_or_a_heading(text: str) -> None:
    parsed = parse_consignes(text, "MEMORY.md")
    reasons(parsed)
    cover = covered(parsed, "MEMORY.md")
    for number, line in enumerate(split_lines(text), 1):
        if not line.strip():
            continue
        records = cover.get(number, [])
        if not records:  # a `##` heading: the category of the items after it
            assert line.lstrip().startswith("##"), (number, line)
            continue
        # one consigne or raw souvenir per line (a skipped rule may sit inside the span of
        # an item continued after it)
        assert len([r for r in records if not isinstance(r, Skip)]) <= 1, (number, line, records)
    for item in parsed.items:
        if isinstance(item, ConsigneItem):
            assert item.texte and len(item.texte) <= 4000 and item.audience == "interne"


# ------------------------------------------------------------------ the JSON and CSV formats
@fuzz(200)
@given(json_values(["1", "site", "icidordogne"], max_leaves=10))
def test_site_notes_each_site_gives_notes_or_a_reason(value: Any) -> None:
    try:
        parsed = parse_site_notes(json.dumps(value), "SITE_MEMOS.json")
    except Unreadable as exc:
        assert str(exc)
        return
    reasons(parsed)
    if not isinstance(value, dict):
        [item] = parsed.items
        assert isinstance(item, SouvenirItem) and item.unreadable
        return
    # the keys as the file gives them (JSON joins two escaped halves of a surrogate pair,
    # "\\ud800\\udc00", into one character)
    for key in json.loads(json.dumps(value)):  # every site: notes, a raw souvenir or "none"
        where = f"SITE_MEMOS.json › {key}"
        assert any(r.where.startswith(where) for r in [*parsed.items, *parsed.skips]), key


dpe_entries = st.one_of(st.from_regex(r"24[0-9]{2}E[0-9]{7}[A-Z]", fullmatch=True),
                        hostile_text(20), json_values(["numero_dpe", "numero", "code_postal",
                                                       "etiquette_dpe", "commune"], max_leaves=5))


@fuzz(150)
@given(st.one_of(st.lists(dpe_entries, max_size=8), json_values(max_leaves=8),
                 st.dictionaries(hostile_text(8), st.lists(dpe_entries, max_size=3), max_size=3)))
def test_every_entry_of_a_dpe_list_is_an_item(value: Any) -> None:
    try:
        parsed = parse_dpe_list(json.dumps(value), "dpe_vus.json")
    except Unreadable as exc:
        assert str(exc)
        return
    reasons(parsed)
    if isinstance(value, list):
        assert len(parsed.items) == len(value)  # one per entry: DPE or raw with its reason
    for item in parsed.items:
        assert isinstance(item, DpeItem | SouvenirItem)


@st.composite
def dpe_csvs(draw: Draw) -> str:
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    header = ["numero_dpe", "date_reception", "code_postal", "commune", "etiquette_dpe"]
    rows = [delimiter.join(header)]
    for _ in range(draw(st.integers(0, 10))):
        fields = [draw(st.one_of(st.from_regex(r"24[0-9]{2}E[0-9]{7}[A-Z]", fullmatch=True),
                                 hostile_text(15)))]
        fields += [draw(hostile_text(12)) for _ in range(draw(st.integers(0, 6)))]
        rows.append(delimiter.join(f.replace("\n", " ").replace("\r", " ") for f in fields))
    return "\n".join(rows) + draw(st.sampled_from(["", "\n"]))


@fuzz(120)
@given(dpe_csvs().map(log_text))
def test_every_line_of_a_dpe_export_is_an_item_or_a_skip(text: str) -> None:
    try:
        parsed = parse_dpe_csv(text, "dpe.csv")
    except Unreadable as exc:
        assert str(exc)
        return
    reasons(parsed)
    cover = covered(parsed, "dpe.csv")
    lines = split_lines(text)
    first = next(i for i, x in enumerate(lines) if x.strip())
    for number, line in enumerate(lines, 1):
        if number > first + 1 and line.strip():
            assert len(cover.get(number, [])) == 1, (number, line)


@fuzz(200)
@given(json_values(["text", "texte", "content", "date", "timestamp", "speaker", "role", "auteur",
                    "category", "notes"], max_leaves=15))
def test_every_memory_of_a_json_file_is_an_item_or_a_skip(value: Any) -> None:
    try:
        parsed = parse_json_memories(json.dumps(value), "memories.json", PARIS)
    except Unreadable as exc:
        assert str(exc)
        return
    reasons(parsed)
    records = [*parsed.items, *parsed.skips]
    if isinstance(value, list):
        assert len(records) == len(value)
    elif isinstance(value, dict) and not any(
            isinstance(value.get(f), str) and value[f].strip() for f in ("text", "texte", "content")):
        for key, entry in value.items():  # every key holding something: a record
            if entry not in ([], {}):
                assert any(r.where.startswith(f"memories.json › {key}") for r in records), key
    else:
        assert records


# ------------------------------------------------------------------ a whole file
def as_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate: invalid UTF-8 bytes


NAMES = ["MEMORY.md", "SITE_MEMOS.json", "dpe_vus.json", "dpe_veille_vus.csv", "conversations.txt",
         "memories.json", "notes.json", "inconnu.bin", "historique", "x.json", "chat.log"]


@fuzz(150)
@given(st.sampled_from(NAMES), st.one_of(encoded_files(), logs().map(as_bytes),
                                         memory_files().map(as_bytes),
                                         json_values(max_leaves=8).map(lambda v: json.dumps(v).encode())),
       st.booleans())
def test_any_file_is_read_skipped_or_unreadable_with_a_reason(
        tmp_path_factory: Any, name: str, data: bytes, explicit: bool) -> None:
    path: Path = tmp_path_factory.mktemp("legacy") / name
    path.write_bytes(data)
    report, parsed = read_one(path, name, explicit, PARIS)
    assert report.status in ("read", "skipped", "unreadable")
    if report.status != "read":
        assert report.reason and parsed is None
        return
    assert parsed is not None and report.kind in KINDS
    reasons(parsed)
    assert kind_by_name(name) == report.kind or (explicit and kind_by_content(
        name, decode(data).text) == report.kind)
    again = parse(report.kind, decode(data).text, name, PARIS)  # deterministic: same keys
    assert [getattr(i, "key", None) for i in again.items] == [
        getattr(i, "key", None) for i in parsed.items]
