"""The earlier Axi's conversation log (`conversations.txt`), read without knowing its
exact format (pure).

Why a parser of its own: nobody kept a sample, only the fact that its lines were
timestamped and named their speaker. So this reads the shapes such logs take —

    [2025-03-14 09:12] Ludo: …            2025-03-14 09:12:05 - Axi: …
    14/03/2025 09:12 Ludo : …             14/03/2025, 09:12 - Ludo: …   (WhatsApp)
    2025-03-14T09:12:05+01:00 <Ludo> …    === 14/03/2025 ===  then  [09:12] Ludo: …

— with a date ISO or French (day/month), a time with or without seconds (`9h12` too),
an optional offset (else Europe/Paris), the speaker as `Name:` or `<Name>`. A line that
is no header continues the message before it (a message on several lines). What cannot
be placed — lines before the first message, a header whose date is impossible — is kept
as a raw souvenir with the reason, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo

from bot.legacy_text import (
    Parsed,
    Skip,
    SouvenirItem,
    build_when,
    item_key,
    make_day,
    make_time,
    norm,
    raw,
    split_lines,
    stamp_key,
)
from memory.text import MAX_CONTENT_CHARS, fold

AXI_NAMES = frozenset({"axi", "assistant", "bot", "axi bot", "l'assistant"})
"""Speakers that are the earlier Axi itself (its turns are `sortant`, said by Axi)."""

_OPEN = re.compile(r"\s*([\[(])?\s*")
_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})|(\d{1,2})[/.](\d{1,2})[/.](\d{4}|\d{2})")
_DATE_TIME_SEP = re.compile(r"T|,\s*|\s+à\s+|\s+-\s+|\s+")
_TIME = re.compile(r"(\d{1,2})[:h](\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?(?![\d:])")
_OFFSET = re.compile(r"\s?(Z|UTC|GMT|[+-]\d{2}:?\d{2})(?!\w)", re.IGNORECASE)
_AFTER_STAMP = re.compile(r"\s*(?:[-–—|,:>]\s*)?")
_SPEAKER = re.compile(r"<(?P<angle>[^<>\n]{1,40})>\s?"
                      r"|(?P<name>[^\W\d_][\w .'’@+()-]{0,39}?)\s?:(?:\s|$)")
_STAMP_START = re.compile(r"\s*[\[(]\s*\d{1,4}[-/.:h]\d")
"""A line opening a bracket on a date or time: a stamp, even when it cannot be read."""
_DAY_WORDS = ("conversation|session|journal|discussion|échanges?|echanges?|le|du|"
              "lundi|mardi|mercredi|jeudi|vendredi|samedi|dimanche")
_DAY_LINE = re.compile(
    rf"[\s=*#~_\-\[(]*(?:(?:{_DAY_WORDS})[\s,]+){{0,3}}(?P<date>{_DATE.pattern})"
    r"[\s=*#~_\-\]):.]*", re.IGNORECASE)


@dataclass(frozen=True)
class Header:
    """What starts a line of the log: its stamp (parts as written), speaker, text."""

    day: tuple[str, str, str, bool] | None  # year, month, day, French order
    clock: tuple[str, str, str | None, str | None] | None
    offset: str | None
    speaker: str | None
    text: str
    bracketed: bool


def read_header(line: str) -> Header | None:
    """The stamp (and speaker) a line starts with, or None when it starts with none."""
    opened = _OPEN.match(line)
    assert opened is not None  # the pattern matches the empty string
    bracket, pos = opened.group(1), opened.end()
    day = clock = None
    found = _DATE.match(line, pos)
    if found:
        g = found.groups()
        day = (g[0], g[1], g[2], False) if g[0] else (g[5], g[4], g[3], True)
        pos = found.end()
        sep = _DATE_TIME_SEP.match(line, pos)
        timed = _TIME.match(line, sep.end()) if sep else None
    else:
        timed = _TIME.match(line, pos)
    if timed:
        clock = (timed.group(1), timed.group(2), timed.group(3), timed.group(4))
        pos = timed.end()
    if day is None and clock is None:
        return None
    offset = None
    if clock is not None and (off := _OFFSET.match(line, pos)):
        offset, pos = off.group(1), off.end()
    if bracket:
        closing = re.compile(r"\s*" + re.escape("]" if bracket == "[" else ")"))
        closed = closing.match(line, pos)
        if closed is None:
            return None  # "[2025-03-14 was the signing]": no stamp
        pos = closed.end()
    elif pos < len(line) and not (line[pos].isspace() or line[pos] in "-–—|,:>"):
        return None  # "2025-03-14abc"
    after = _AFTER_STAMP.match(line, pos)
    pos = after.end() if after else pos
    rest, speaker = line[pos:], None
    said = _SPEAKER.match(rest)
    if said:
        name = (said.group("angle") or said.group("name") or "").strip()
        if name and len(name.split()) <= 4:
            speaker, rest = name, rest[said.end():]
    return Header(day, clock, offset, speaker, rest.strip(), bracket is not None)


def is_day_line(line: str) -> bool:
    return _DAY_LINE.fullmatch(line) is not None


def looks_like_log(text: str) -> bool:
    """Whether a file of unknown name reads as a conversation log: among its first
    non-blank lines, most that could be are headers with a stamp and a speaker."""
    lines = [line for line in split_lines(text[:20_000]) if line.strip()][:40]
    headers = sum(1 for line in lines
                  if (h := read_header(line)) is not None and h.speaker and h.day)
    return headers >= 2 or (headers == 1 and len(lines) <= 3)


@dataclass
class _Message:
    start: int
    header: Header
    when: datetime
    note: str | None
    lines: list[str]
    end: int = 0
    """The number of its last non-blank line."""


def parse_conversations(text: str, name: str, local: tzinfo) -> Parsed:
    """The log's messages as conversation souvenirs (original date, speaker), and the
    lines it could not place as raw souvenirs."""
    parsed = Parsed()
    current: _Message | None = None
    day: date | None = None
    lines = split_lines(text)

    def flush() -> None:
        nonlocal current
        if current is not None:
            _emit(parsed, current, name)
        current = None

    for number, line in enumerate(lines, 1):
        if not line.strip():
            if current is not None:
                current.lines.append("")
            continue
        found = _DAY_LINE.fullmatch(line)
        stamp = _DATE.fullmatch(found.group("date")) if found else None
        if stamp is not None:
            g = stamp.groups()
            try:
                day = (make_day(g[0], g[1], g[2], french=False)[0] if g[0]
                       else make_day(g[5], g[4], g[3], french=True)[0])
            except ValueError:
                flush()
                parsed.items.append(raw(f"{name}:{number}", line, "not a real date"))
                continue
            flush()
            continue
        header = read_header(line)
        if header is None and _STAMP_START.match(line):
            flush()
            parsed.items.append(raw(f"{name}:{number}", line,
                                    "a date or time that cannot be read (a cut line?)"))
            continue
        kind = _classify(header, day)
        if kind == "text":
            if current is not None:
                current.lines.append(line.rstrip())
                current.end = number
            else:
                parsed.items.append(raw(f"{name}:{number}", line,
                                        "not a message: no date and speaker recognised"))
            continue
        flush()
        assert header is not None
        try:
            when, note = _when(header, day, local)
        except ValueError as exc:
            parsed.items.append(raw(f"{name}:{number}", line, str(exc)))
            continue
        current = _Message(number, header, when, note, [header.text] if header.text else [],
                           end=number)
        if header.day is not None and header.clock is not None:
            day = when.date()
    flush()
    return parsed


def _classify(header: Header | None, day: date | None) -> str:
    """'message' (a header that starts one) or 'text' (a line of the message before)."""
    if header is None:
        return "text"
    if header.day is not None:
        return "message" if header.clock is not None or header.speaker else "text"
    # a time alone starts a message only when bracketed or followed by a speaker
    return "message" if header.speaker or header.bracketed else "text"


def _when(header: Header, day: date | None, local: tzinfo) -> tuple[datetime, str | None]:
    note = None
    if header.day is not None:
        y, mo, d, french = header.day
        try:
            the_day, note = make_day(y, mo, d, french=french)
        except ValueError:
            raise ValueError(f"not a real date ({'/'.join((d, mo, y)) if french else '-'.join((y, mo, d))})"
                             ) from None
    elif day is None:
        raise ValueError("a time without a date before it")
    else:
        the_day = day
    clock: time | None = None
    if header.clock is not None:
        try:
            clock = make_time(*header.clock)
        except ValueError:
            raise ValueError(f"not a real time ({header.clock[0]}:{header.clock[1]})") from None
    return build_when(the_day, clock, header.offset, local), note


def _emit(parsed: Parsed, message: _Message, name: str) -> None:
    where = (f"{name}:{message.start}" if message.end == message.start
             else f"{name}:{message.start}-{message.end}")
    text = "\n".join(message.lines).strip()
    if not text:
        parsed.skips.append(Skip(where, "a date and speaker with no message"))
        return
    note = message.note
    if len(text) > MAX_CONTENT_CHARS:
        text = text[:MAX_CONTENT_CHARS]
        note = f"message cut to its first {MAX_CONTENT_CHARS:,} characters"
    speaker = message.header.speaker
    sens = None
    if speaker is not None:
        sens = "sortant" if fold(speaker) in AXI_NAMES else "entrant"
        speaker = "Axi" if sens == "sortant" else speaker
    else:
        note = "; ".join(n for n in (note, "no speaker recognised") if n)
    parsed.items.append(SouvenirItem(
        where=where, contenu=text, type="conversation",
        key=conversation_key(message.when, speaker, text),
        timestamp=message.when, speaker=speaker, sens=sens, note=note))


def conversation_key(when: datetime | None, speaker: str | None, text: str) -> str:
    """One turn's key: the same turn in the log and in a JSON file is one souvenir."""
    return item_key("conversation", stamp_key(when), fold(norm(speaker or "")), norm(text))
