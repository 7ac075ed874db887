"""What the earlier Axi's files become, before anything touches the database (pure).

Why it exists: `axi import legacy` (bot/legacy_import.py) reads files nobody fully
specified, in whatever encoding they were saved. Turning their bytes into text, their
dates into instants and their items into typed records lives here, apart from I/O, so
every odd case (a byte-order mark, Latin-1, NUL bytes, a file cut in the middle of a
character) is tested without a database. The parsers of each format
(bot/legacy_formats.py, bot/legacy_conversations.py) return these records; the importer
writes them through the store.

Each item carries a stable key (its kind, its normalised content, its original date):
the same item imported again — a second run, the same file renamed — is recognised and
skipped. Nothing here ever drops a line silently: what a parser cannot understand becomes
a raw souvenir (`brut`) with the reason, and what it leaves out on purpose is a `Skip`
with the reason.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from typing import Any

from memory.text import MAX_CONTENT_CHARS, fold

SOURCE = "ancien-axi"
"""`souvenirs.source` of every imported souvenir (and the prefix of imported consignes')."""
RAW_TYPE = "brut"
"""The souvenir type of a line kept as it was, because it was not understood."""
MAX_FILE_BYTES = 256 * 1024 * 1024
CONSIGNE_LIMIT = 4000
"""Longest consigne the store takes (memory/consignes.py)."""

_BOMS = (  # UTF-32 before UTF-16: FF FE 00 00 starts with FF FE
    (codecs.BOM_UTF32_LE, "utf-32", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32", "UTF-32"),
    (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"), (codecs.BOM_UTF16_BE, "utf-16", "UTF-16"),
)
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")


class Unreadable(Exception):
    """A whole file that cannot be read (English, one line: the CLI prints it)."""


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class ConsigneItem:
    """A consigne to add: one item of MEMORY.md (inner circle) or one site note (everyone)."""

    where: str
    texte: str
    source: str
    audience: str  # 'interne' | 'tous' (memory/consignes.py)
    bare: str = ""
    """The item without its category: an existing consigne with this text counts too."""
    what: str = "consigne"
    note: str | None = None

    @property
    def key(self) -> str:
        return consigne_key(self.texte)

    @property
    def ledger(self) -> str:
        """Its key in the import ledger (a removed consigne is not brought back)."""
        return item_key("consigne", self.key)


@dataclass(frozen=True)
class DpeItem:
    """A DPE the earlier Axi already reported: the DPE veille must never report it again."""

    where: str
    numero: str
    source: str | None  # the postcode, as the DPE veille keys its sources
    donnees: Mapping[str, Any]
    what: str = "DPE seen"
    note: str | None = None

    @property
    def key(self) -> str:
        return self.numero


@dataclass(frozen=True)
class SouvenirItem:
    """A souvenir: a conversation turn, a note, or a raw line (`unreadable` says why)."""

    where: str
    contenu: str
    type: str
    key: str
    timestamp: datetime | None = None
    speaker: str | None = None
    sens: str | None = None  # 'entrant' (a person spoke) | 'sortant' (the earlier Axi)
    unreadable: str | None = None
    note: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return "raw" if self.unreadable else self.type


Item = ConsigneItem | DpeItem | SouvenirItem


@dataclass(frozen=True)
class Skip:
    """A line or entry left out on purpose (a title, a separator, an empty message)."""

    where: str
    reason: str
    text: str = ""


@dataclass
class Parsed:
    items: list[Item] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------ text and keys
def norm(text: str) -> str:
    """Whitespace collapsed: the form keys are computed on."""
    return " ".join(text.split())


def item_key(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def consigne_key(texte: str) -> str:
    """Two consignes are the same when they differ only by case, accents or spacing."""
    return fold(norm(texte))


def stamp_key(when: datetime | None) -> str:
    """The date part of a key: the instant in UTC, so one message found in two files
    (`09:12` in Paris in one, `08:12Z` in the other) is one souvenir."""
    return "" if when is None else when.astimezone(UTC).isoformat()


def raw(where: str, text: str, reason: str) -> SouvenirItem:
    """A line kept as a raw souvenir because it was not understood."""
    text = text.strip()
    if len(text) > MAX_CONTENT_CHARS:
        reason += f" (cut to its first {MAX_CONTENT_CHARS:,} characters)"
        text = text[:MAX_CONTENT_CHARS]
    return SouvenirItem(where=where, contenu=text, type=RAW_TYPE,
                        key=item_key(RAW_TYPE, norm(text)), unreadable=reason)


def preview(text: str, width: int = 70) -> str:
    text = norm(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def split_lines(text: str) -> list[str]:
    """Lines whatever their ends (LF, CRLF, CR); a final line end adds no empty line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


_SECRETS = (
    ("a password or key", re.compile(
        r"(?i)\b(?:password|passwd|mot de passe|mdp|api[ _-]?key|cl[ée] (?:d'|de l')?api|"
        r"token|secret)\b[^:=\n]{0,30}[:=]\s*\S{6,}")),
    ("an Anthropic or OpenAI key", re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_-]{20,}")),
    ("a Telegram bot token", re.compile(r"\b\d{8,10}:[A-Za-z0-9_-]{30,}")),
    ("a GitHub or Slack token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|xox[abpr]-[\w-]{10,})")),
    ("an AWS key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a Trello key or token", re.compile(r"(?i)trello[^\n]{0,30}?\b[0-9a-f]{32,64}\b")),
)
"""The earlier Axi kept secrets in plain text; none of them must become a consigne (in
every prompt, maybe sent to Claude) or a souvenir. They belong in .env."""


def secret_in(text: str) -> str | None:
    """What kind of secret the text seems to hold, or None."""
    for what, pattern in _SECRETS:
        if pattern.search(text):
            return what
    return None


# ------------------------------------------------------------------ bytes → text
def decode(data: bytes) -> Decoded:
    """The text of a file: UTF-16/32 with a byte-order mark, else UTF-8 (its byte-order
    mark dropped), else Windows-1252 (Latin-1) — line by line, so a log appended to by
    programs with different encodings is read too. NUL bytes are removed (and said);
    a file cut in the middle of a UTF-8 character loses that half character (and says
    so). Unreadable: UTF-16 without a byte-order mark, binary data, bytes that are
    neither UTF-8 nor Windows-1252."""
    notes: list[str] = []
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(codec)
            except UnicodeDecodeError as exc:
                raise Unreadable(f"starts with a {name} byte-order mark but is not valid "
                                 f"{name} (byte {exc.start:,})") from None
            encoding = name
            break
    else:
        marked = data.startswith(codecs.BOM_UTF8)
        data = data[len(codecs.BOM_UTF8):] if marked else data
        nul = data.count(0)
        if nul > max(2, len(data) // 20):
            raise Unreadable(f"not a text file in UTF-8 or Latin-1 ({nul:,} NUL bytes in "
                             f"{len(data):,}): binary, or UTF-16 without a byte-order mark; "
                             "convert it to UTF-8 first (e.g. iconv -f UTF-16 -t UTF-8)")
        if nul:
            data = data.replace(b"\x00", b"")
            notes.append(f"{nul} NUL byte(s) removed")
        text, encoding = _utf8_or_cp1252(data, notes)
        encoding += " with a byte-order mark" if marked else ""
    if "\x00" in text:
        notes.append(f"{text.count(chr(0))} NUL character(s) removed")
        text = text.replace("\x00", "")
    if "\ufeff" in text:  # a byte-order mark inside: files concatenated
        text = text.replace("\ufeff", "")
    controls = len(_CONTROL.findall(text))
    if controls > max(8, len(text) // 100):
        raise Unreadable(f"not a text file ({controls:,} control characters): binary data "
                         "or an unknown encoding; convert it to UTF-8 first")
    return Decoded(text, encoding, tuple(notes))


def _utf8_or_cp1252(data: bytes, notes: list[str]) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "UTF-8"
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.end == len(data):
            try:  # the last character was cut: a half-written file
                text = data[:exc.start].decode("utf-8")
                notes.append("the file ends in the middle of a character (half-written?): "
                             "that half character was dropped")
                return text, "UTF-8"
            except UnicodeDecodeError:
                pass
    lines, latin = [], 0
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            try:
                lines.append(line.decode("cp1252"))
                latin += 1
            except UnicodeDecodeError as exc:
                raise Unreadable(
                    f"line {number}: byte {line[exc.start]:#04x} is neither UTF-8 nor "
                    "Windows-1252/Latin-1; convert the file to UTF-8 first") from None
    utf8 = sum(1 for line in lines if not line.isascii()) - latin
    if utf8 > 0:
        notes.append(f"mixed encodings: {latin} line(s) read as Windows-1252 (Latin-1), "
                     "the others as UTF-8")
        return "\n".join(lines), "mixed UTF-8 and Windows-1252"
    return "\n".join(lines), "Windows-1252 (Latin-1)"


# ------------------------------------------------------------------ dates
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_FR_DATE = re.compile(r"(\d{1,2})[/.](\d{1,2})[/.](\d{4}|\d{2})")
_TIME = re.compile(r"(\d{1,2})[:h](\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?")
_OFFSET = re.compile(r"\s?(Z|UTC|GMT|[+-]\d{2}:?\d{2})", re.IGNORECASE)
_WHEN = re.compile(
    rf"(?:{_ISO_DATE.pattern}|{_FR_DATE.pattern})"
    rf"(?:(?:[T ]|,\s*|\s+à\s+|\s+-\s+|\s+)(?:{_TIME.pattern})(?:{_OFFSET.pattern})?)?",
    re.IGNORECASE)


def build_when(day: date, clock: time | None, offset: str | None,
               local: tzinfo) -> datetime:
    """An instant: an explicit offset kept, else the local time zone (Europe/Paris)."""
    naive = datetime.combine(day, clock or time())
    if offset:
        return naive.replace(tzinfo=parse_offset(offset))
    return naive.replace(tzinfo=local)


def parse_offset(text: str) -> tzinfo:
    text = text.strip().upper()
    if text in {"Z", "UTC", "GMT"}:
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def make_day(y: str, mo: str, d: str, *, french: bool) -> tuple[date, str | None]:
    """A calendar day; a French date that is impossible as day/month but possible as
    month/day is read so (and said). ValueError when it is no date at all."""
    year = int(y) + (2000 if len(y) == 2 else 0)
    try:
        return date(year, int(mo), int(d)), None
    except ValueError:
        if not french:
            raise
        return date(year, int(d), int(mo)), "date read as month/day"


def make_time(h: str, mi: str, s: str | None, frac: str | None) -> time:
    micro = int((frac or "0").ljust(6, "0")[:6])
    return time(int(h), int(mi), int(s or 0), micro)


def parse_when(value: Any, local: tzinfo) -> datetime | None:
    """A date or date-time from a JSON or CSV field: ISO 8601, French `14/03/2025 09:12`,
    or seconds (or milliseconds) since 1970. None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        seconds = value / 1000 if value > 1e11 else value
        if 0 < seconds < 4e9:
            return datetime.fromtimestamp(seconds, UTC)
        return None
    if not isinstance(value, str):
        return None
    match = _WHEN.fullmatch(value.strip())
    if match is None:
        return None
    g = match.groups()
    try:
        if g[0]:
            day, _ = make_day(g[0], g[1], g[2], french=False)
        else:
            day, _ = make_day(g[5], g[4], g[3], french=True)
        clock = make_time(g[6], g[7], g[8], g[9]) if g[6] else None
    except ValueError:
        return None
    return build_when(day, clock, g[10], local)
