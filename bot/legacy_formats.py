"""The earlier Axi's files other than its conversation log, and how a file's kind is
recognised (pure).

Why here: each format is read into the typed records of bot/legacy_text.py, apart from
I/O, so the importer only decides what is new and writes it. The formats:

- `MEMORY.md`: its consignes. `## Section` headings, `- item` lines: each item a consigne
  for the inner circle, its section kept as its category (in the text, so Axi reads
  « VEILLE DPE — Heure: 8h00 », and in the source `ancien-axi:VEILLE DPE`).
- `SITE_MEMOS.json`: `{site_id: notes}`, notes one per line: each a site note, i.e. a
  consigne for everyone with the source `site:<site_id>` (what a visitor's `#memo`
  becomes once Ludo accepts it, bot/site_access.py).
- `dpe_vus.json` (a JSON list of DPE numbers) and the CSV export of its `dpe_veille_vus`
  table: DPEs already reported, which the DPE veille must never report again.
- JSON memory files of unknown shape: a list of strings, a list of objects with a text
  field (text, content, fact…) and maybe a date and a speaker, an object of key → value.

A file is recognised by its name; a file given by another name, by its content.
Anything a parser does not understand is kept raw with the reason.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping
from datetime import date, tzinfo
from typing import Any

from bot.legacy_conversations import (
    AXI_NAMES,
    conversation_key,
    looks_like_log,
    parse_conversations,
)
from bot.legacy_text import (
    CONSIGNE_LIMIT,
    SOURCE,
    ConsigneItem,
    DpeItem,
    Parsed,
    Skip,
    SouvenirItem,
    Unreadable,
    item_key,
    norm,
    parse_when,
    raw,
    split_lines,
    stamp_key,
)
from memory.text import MAX_CONTENT_CHARS, fold

KINDS = {
    "consignes": "consignes",
    "site_notes": "site notes",
    "dpe_list": "DPE seen (JSON)",
    "dpe_csv": "DPE seen (CSV)",
    "conversations": "conversations",
    "json_memories": "JSON memories",
}
DPE_NUMBER = re.compile(r"(?=(?:.*\d){4})[0-9A-Z]{10,20}")
"""A DPE number as ADEME writes it (e.g. 2424E0000001A); anything shorter is cut."""
SITE_ID_MAX = 95  # consignes.source is varchar(100), with "site:" before
TEXT_FIELDS = ("text", "texte", "content", "contenu", "fact", "fait", "memory", "souvenir",
               "note", "message", "value", "valeur", "summary", "resume")
DATE_FIELDS = ("date", "timestamp", "created_at", "createdAt", "created", "cree_le",
               "datetime", "time", "heure", "when", "quand", "updated_at")
SPEAKER_FIELDS = ("speaker", "author", "auteur", "role", "from", "sender", "user", "qui")
CATEGORY_FIELDS = ("category", "categorie", "catégorie", "type", "tag", "topic", "sujet")
_ITEM = re.compile(r"\s*(?:[-*+•]|\d{1,3}[.)])\s+(?:\[[ xX]\]\s+)?(?P<text>.*\S)\s*")
_HEADING = re.compile(r"\s*(?P<level>#{1,6})\s*(?P<title>.*?)\s*#*\s*")
_RULE = re.compile(r"\s*(?:[-*_=]\s*){3,}")
_COMMENT = re.compile(r"\s*<!--.*-->\s*")


# ------------------------------------------------------------------ recognising a file
def kind_by_name(name: str) -> str | None:
    lower = name.lower()
    stem, dot, ext = lower.rpartition(".")
    stem, ext = (stem, ext) if dot else (lower, "")
    if ext in {"md", "markdown", "txt"} and ("memory" in stem or "consigne" in stem):
        return "consignes"
    if ext == "json" and "site" in stem and "memo" in stem:
        return "site_notes"
    if stem.startswith("dpe") and ext == "json":
        return "dpe_list"
    if stem.startswith("dpe") and ext == "csv":
        return "dpe_csv"
    if ext in {"txt", "log", ""} and any(w in stem for w in ("conversation", "historique",
                                                              "chat")):
        return "conversations"
    if ext == "json" and any(w in stem for w in ("memor", "souvenir", "fact", "fait", "note",
                                                 "conversation", "historique")):
        return "json_memories"
    return None


def kind_by_content(name: str, text: str) -> str | None:
    """The kind of a file given by an unknown name, from what it holds (None: unknown).
    Unreadable when it looks like JSON but is not valid JSON."""
    body = text.strip()
    if body[:1] in {"[", "{"} and not looks_like_log(text):
        value = load_json(text)
        if isinstance(value, list) and value and all(
                isinstance(v, str) and DPE_NUMBER.fullmatch(dpe_number(v)) for v in value):
            return "dpe_list"
        if (isinstance(value, dict) and value and "site" in name.lower()
                and all(isinstance(v, str) for v in value.values())):
            return "site_notes"
        return "json_memories"
    first = body.split("\n", 1)[0].lower()
    if "numero_dpe" in first:
        return "dpe_csv"
    if looks_like_log(text):
        return "conversations"
    lines = split_lines(text)
    if any(_HEADING.fullmatch(x) for x in lines) and any(_ITEM.fullmatch(x) for x in lines):
        return "consignes"
    return None


def parse(kind: str, text: str, name: str, local: tzinfo) -> Parsed:
    if kind == "consignes":
        return parse_consignes(text, name)
    if kind == "site_notes":
        return parse_site_notes(text, name)
    if kind == "dpe_list":
        return parse_dpe_list(text, name)
    if kind == "dpe_csv":
        return parse_dpe_csv(text, name)
    if kind == "conversations":
        return parse_conversations(text, name, local)
    if kind == "json_memories":
        return parse_json_memories(text, name, local)
    raise ValueError(f"unknown kind {kind!r}")


def load_json(text: str) -> Any:
    """The JSON value; Unreadable says where it breaks (a file that ends early: half-written)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated"):
            raise Unreadable(f"not valid JSON: it ends early (line {exc.lineno}, column "
                             f"{exc.colno}): a half-written file?") from None
        raise Unreadable(f"not valid JSON: {exc.msg} at line {exc.lineno}, column "
                         f"{exc.colno}") from None
    except RecursionError:
        raise Unreadable("not readable JSON: nested too deeply") from None


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# ------------------------------------------------------------------ MEMORY.md
def parse_consignes(text: str, name: str) -> Parsed:
    parsed = Parsed()
    sections: list[str] = []
    last: int | None = None  # index in parsed.items of the item a continuation extends
    for number, line in enumerate(split_lines(text), 1):
        where = f"{name}:{number}"
        if not line.strip():
            last = None
            continue
        heading = _HEADING.fullmatch(line)
        if heading and line.lstrip().startswith("#"):
            level, title = len(heading.group("level")), norm(heading.group("title"))
            last = None
            if level == 1:
                parsed.skips.append(Skip(where, "title, not a consigne", title))
                continue
            sections = [*sections[: level - 2], title] if title else sections[: level - 2]
            continue
        if _RULE.fullmatch(line) or _COMMENT.fullmatch(line):
            parsed.skips.append(Skip(where, "separator or comment", line.strip()))
            continue
        item = _ITEM.fullmatch(line)
        if item:
            parsed.items.append(_consigne(where, item.group("text"), " / ".join(sections)))
            last = len(parsed.items) - 1
            continue
        previous = parsed.items[last] if last is not None else None
        if line[:1].isspace() and isinstance(previous, ConsigneItem):
            # an indented line continues the item above it
            start = previous.where.split(":")[-1].split("-")[0]
            parsed.items[last] = _consigne(  # type: ignore[index]
                f"{name}:{start}-{number}", f"{previous.bare} {line.strip()}",
                " / ".join(sections))
            continue
        parsed.items.append(raw(where, line, "not a `- ` item of a section: not taken "
                                             "for a consigne"))
        last = None
    return parsed


def _consigne(where: str, item: str, category: str) -> ConsigneItem | SouvenirItem:
    item = norm(item)
    texte = f"{category} — {item}" if category else item
    if len(texte) > CONSIGNE_LIMIT:
        return raw(where, texte, f"too long for a consigne ({len(texte):,} characters, "
                                 f"at most {CONSIGNE_LIMIT:,})")
    source = f"{SOURCE}:{category}"[:100] if category else SOURCE
    return ConsigneItem(where=where, texte=texte, source=source, audience="interne",
                        bare=item)


# ------------------------------------------------------------------ SITE_MEMOS.json
def parse_site_notes(text: str, name: str) -> Parsed:
    value = load_json(text)
    parsed = Parsed()
    if not isinstance(value, dict):
        parsed.items.append(raw(name, text, "expected an object {site_id: notes}"))
        return parsed
    for key, notes in value.items():
        site = " ".join(str(key).split())[:SITE_ID_MAX]
        where = f"{name} › {key}"
        if not site:
            parsed.items.append(raw(where, _dump({key: notes}), "no site id"))
            continue
        if isinstance(notes, str):
            lines = split_lines(notes)
        elif isinstance(notes, list) and all(isinstance(n, str) for n in notes):
            lines = [x for n in notes for x in split_lines(n)]
        else:
            parsed.items.append(raw(where, _dump({key: notes}),
                                    "the notes are neither text nor a list of texts"))
            continue
        kept = 0
        for number, line in enumerate(lines, 1):
            item = _ITEM.fullmatch(line)
            note = norm(item.group("text") if item else line)
            if not note:
                continue
            kept += 1
            here = f"{where} (note {number})"
            if len(note) > CONSIGNE_LIMIT:
                parsed.items.append(raw(here, note, "too long for a site note"))
                continue
            parsed.items.append(ConsigneItem(where=here, texte=note, source=f"site:{site}",
                                             audience="tous", bare=note, what="site note"))
        if not kept:
            parsed.skips.append(Skip(where, "no notes for this site"))
    return parsed


# ------------------------------------------------------------------ DPE seen
def dpe_number(value: str) -> str:
    return "".join(value.split()).upper()


def _dpe(where: str, numero: Any, data: Mapping[str, Any], as_written: str,
         note: str | None = None) -> DpeItem | SouvenirItem:
    number = dpe_number(str(numero)) if isinstance(numero, str | int) else ""
    if not DPE_NUMBER.fullmatch(number):
        why = "no DPE number" if not number else f"not a DPE number ({number[:30]!r})"
        return raw(where, as_written, f"{why}; {note}" if note else why)
    postcode = str(data.get("code_postal") or "").strip()
    classe = str(data.get("etiquette_dpe") or data.get("classe") or "").strip().upper()
    reception = _iso_day(data.get("date_reception") or data.get("date_reception_dpe"))
    donnees = {"numero_dpe": number, "ancien_axi": True,
               "date_reception": reception,
               "code_postal": postcode or None,
               "commune": norm(str(data.get("commune") or "")) or None,
               "classe": classe if len(classe) == 1 and classe in "ABCDEFG" else None,
               "trello": str(data.get("trello_card_url") or "").strip() or None,
               "traite_le": norm(str(data.get("date_traitement") or "")) or None}
    others = {str(k)[:60]: norm(str(v))[:300] for k, v in data.items()
              if k not in _DPE_COLUMNS and v not in (None, "")}
    if others:  # a column the export had beyond the known ones: kept, not dropped
        donnees["autres_colonnes"] = others
    return DpeItem(where=where, numero=number,
                   source=postcode if re.fullmatch(r"\d{5}", postcode) else None,
                   donnees={k: v for k, v in donnees.items() if v is not None}, note=note)


_DPE_COLUMNS = frozenset({"numero_dpe", "numero", "date_reception", "date_reception_dpe",
                          "code_postal", "commune", "etiquette_dpe", "classe",
                          "trello_card_url", "date_traitement"})


def _iso_day(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return date.fromisoformat(text[:10]).isoformat()
    except ValueError:
        found = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text[:10])
        if found:
            try:
                return date(int(found[3]), int(found[2]), int(found[1])).isoformat()
            except ValueError:
                return None
    return None


def parse_dpe_list(text: str, name: str) -> Parsed:
    value = load_json(text)
    parsed = Parsed()
    entries: list[tuple[str, Any]] = []
    if isinstance(value, list):
        entries = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, dict) and any(isinstance(v, list) for v in value.values()):
        for key, sub in value.items():
            if isinstance(sub, list):
                entries += [(f"{name} › {key}[{i}]", v) for i, v in enumerate(sub)]
            else:
                parsed.items.append(raw(f"{name} › {key}", _dump({key: sub}),
                                        "not a list of DPE numbers"))
    else:
        parsed.items.append(raw(name, text, "expected a JSON list of DPE numbers"))
    for where, entry in entries:
        if isinstance(entry, dict):
            parsed.items.append(_dpe(where, entry.get("numero_dpe") or entry.get("numero"),
                                     entry, _dump(entry)))
        elif isinstance(entry, str):
            parsed.items.append(_dpe(where, entry, {}, entry))
        else:
            parsed.items.append(raw(where, _dump(entry), "not a DPE number"))
    return parsed


def parse_dpe_csv(text: str, name: str) -> Parsed:
    """The CSV export of `dpe_veille_vus` (numero_dpe, date_reception, code_postal,
    commune, etiquette_dpe, trello_card_url, date_traitement), any delimiter among
    `,;\\t`, read line by line so one broken line costs that line only."""
    parsed = Parsed()
    lines = split_lines(text)
    first = next((i for i, x in enumerate(lines) if x.strip()), None)
    if first is None:
        return parsed
    delimiter = max(",;\t", key=lambda d: lines[first].count(d))
    header = [h.strip().strip('"').lower() for h in next(csv.reader([lines[first]],
                                                                     delimiter=delimiter))]
    if "numero_dpe" not in header:
        raise Unreadable("no numero_dpe column in the first line (expected the CSV export "
                         "of dpe_veille_vus)")
    column = header.index("numero_dpe")
    last = max((i for i, x in enumerate(lines) if x.strip()), default=first)
    ends_cut = not text.endswith(("\n", "\r"))
    for index in range(first + 1, len(lines)):
        line = lines[index]
        where = f"{name}:{index + 1}"
        if not line.strip():
            continue
        try:
            fields = next(csv.reader([line], delimiter=delimiter, strict=True))
        except csv.Error as exc:
            parsed.items.append(raw(where, line, f"not a CSV line ({exc})"))
            continue
        if [f.strip().lower() for f in fields] == header:
            parsed.skips.append(Skip(where, "the header again (files put together)"))
            continue
        note = None
        if len(fields) != len(header):
            note = (f"{len(fields)} field{'s' if len(fields) > 1 else ''} where the header "
                    f"has {len(header)}")
            if index == last and ends_cut and len(fields) < len(header):
                note += " (the last line is cut: a half-written file?)"
        if column >= len(fields):
            parsed.items.append(raw(where, line, note or "no numero_dpe"))
            continue
        data = {h: fields[i].strip() for i, h in enumerate(header) if i < len(fields)}
        parsed.items.append(_dpe(where, fields[column], data, line, note))
    return parsed


# ------------------------------------------------------------------ JSON memories
def parse_json_memories(text: str, name: str, local: tzinfo) -> Parsed:
    value = load_json(text)
    parsed = Parsed()
    if isinstance(value, list):
        for i, entry in enumerate(value):
            _memory(parsed, f"{name}[{i}]", entry, None, local)
    elif isinstance(value, dict) and _text_of(value) is not None:
        _memory(parsed, name, value, None, local)
    elif isinstance(value, dict):
        for key, entry in value.items():
            where = f"{name} › {key}"
            if isinstance(entry, str | int | float) and not isinstance(entry, bool):
                _memory(parsed, where, f"{key} : {entry}", None, local)
            elif isinstance(entry, list):
                for i, sub in enumerate(entry):
                    _memory(parsed, f"{where}[{i}]", sub, str(key), local)
            elif isinstance(entry, dict) and _text_of(entry) is None and all(
                    isinstance(v, str | int | float) and not isinstance(v, bool)
                    for v in entry.values()):
                for sub_key, sub in entry.items():
                    _memory(parsed, f"{where} › {sub_key}", f"{sub_key} : {sub}", str(key),
                            local)
            else:
                _memory(parsed, where, entry, str(key), local)
    else:
        parsed.items.append(raw(name, text, "a JSON value that holds no memories"))
    return parsed


def _text_of(entry: Mapping[str, Any]) -> str | None:
    for name in TEXT_FIELDS:
        value = entry.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _field(entry: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str | None, Any]:
    for name in names:
        if name in entry and entry[name] not in (None, ""):
            return name, entry[name]
    return None, None


def _memory(parsed: Parsed, where: str, entry: Any, category: str | None,
            local: tzinfo) -> None:
    if isinstance(entry, str):
        if not entry.strip():
            parsed.skips.append(Skip(where, "empty"))
            return
        parsed.items.append(_note(where, entry, None, None, category, {}))
        return
    if not isinstance(entry, dict):
        parsed.items.append(raw(where, _dump(entry), "neither a text nor an object with a "
                                                     "text field"))
        return
    text = _text_of(entry)
    if text is None:
        parsed.items.append(raw(where, _dump(entry), "no text field (text, content, fact…)"))
        return
    used = {name for name in TEXT_FIELDS if entry.get(name) == text}
    date_field, date_value = _field(entry, DATE_FIELDS)
    when, note = None, None
    if date_field is not None:
        used.add(date_field)
        when = parse_when(date_value, local)
        if when is None:
            note = f"date not understood: {str(date_value)[:40]!r}"
    speaker_field, speaker = _field(entry, SPEAKER_FIELDS)
    if speaker_field is not None:
        used.add(speaker_field)
    cat_field, cat = _field(entry, CATEGORY_FIELDS)
    if cat_field is not None and isinstance(cat, str):
        used.add(cat_field)
        category = cat if category is None else f"{category} / {cat}"
    rest = {k: v for k, v in entry.items() if k not in used}
    if isinstance(speaker, str) and speaker.strip():
        parsed.items.append(_turn(where, text, when, speaker.strip(), note, category, rest))
    else:
        parsed.items.append(_note(where, text, when, note, category, rest))


def _extra(category: str | None, rest: Mapping[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if category:
        extra["categorie"] = category
    if rest:
        dumped = _dump(rest)
        extra["autres_champs"] = rest if len(dumped) <= 4000 else dumped[:4000] + "…"
    return extra


def _note(where: str, text: str, when: Any, note: str | None, category: str | None,
          rest: Mapping[str, Any]) -> SouvenirItem:
    text = text.strip()[:MAX_CONTENT_CHARS]
    return SouvenirItem(where=where, contenu=text, type="note",
                        key=item_key("note", stamp_key(when), norm(text)), timestamp=when,
                        note=note, extra=_extra(category, rest))


def _turn(where: str, text: str, when: Any, speaker: str, note: str | None,
          category: str | None, rest: Mapping[str, Any]) -> SouvenirItem:
    text = text.strip()[:MAX_CONTENT_CHARS]
    sens = "sortant" if fold(speaker) in AXI_NAMES else "entrant"
    speaker = "Axi" if sens == "sortant" else speaker[:100]
    return SouvenirItem(where=where, contenu=text, type="conversation",
                        key=conversation_key(when, speaker, text), timestamp=when,
                        speaker=speaker, sens=sens, note=note, extra=_extra(category, rest))
