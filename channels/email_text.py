"""The readable words of a mail body, and which of them are new.

A mail body is bytes in a declared charset that is often wrong (French mail clients still
send windows-1252 labelled utf-8, or 8-bit text labelled us-ascii), sometimes only HTML,
and mostly made of what others wrote before: the quoted conversation, the sender's
signature, a forwarded message. Axi must answer the new words, must not take a quoted
"Le 3 nov. 2026 à 10:02, Ludo a écrit :" for something Ludo says now, and must know when
the words are someone else's (a forward). This module holds that logic, kept apart from the
MIME walk of `channels/email_parse.py` so it is tested on plain strings.

Pure: standard library and `inscriptis` (HTML to text) only, no I/O; nothing here raises on
any input.
"""

from __future__ import annotations

import codecs
import functools
import re
from dataclasses import dataclass
from html import unescape

from inscriptis import get_text

__all__ = [
    "MAX_HTML_CHARS",
    "MAX_TEXT_CHARS",
    "ReplySplit",
    "decode_bytes",
    "fix_8bit",
    "html_to_text",
    "normalise_text",
    "split_reply",
    "unflow",
]

MAX_TEXT_CHARS = 200_000  # readable text kept per mail
MAX_HTML_CHARS = 1_000_000  # HTML given to inscriptis (about 0.25 s on one core)

# --- charsets --------------------------------------------------------------------------

_FALLBACK_ERRORS = "axi-email-cp1252"
_LATIN = frozenset({"iso8859-1", "iso8859-15", "cp1252"})
_ASCII_COMPATIBLE = _LATIN | {"ascii", "utf-8"}
# Text codecs that are no mail charset: slow (punycode is quadratic) or meaningless here.
_REFUSED_CODECS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape", "undefined"})


def _cp1252_for_invalid_utf8(error: UnicodeError) -> tuple[str, int]:
    """Decode error handler: bytes that are not UTF-8 are read as windows-1252 (undefined
    windows-1252 bytes become U+FFFD), so a mostly-UTF-8 text with a few Latin bytes stays
    readable."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return bytes(bad).decode("cp1252", errors="replace"), error.end


@functools.cache
def _fallback_errors() -> str:
    codecs.register_error(_FALLBACK_ERRORS, _cp1252_for_invalid_utf8)
    return _FALLBACK_ERRORS


def _codec(label: str) -> str | None:
    """The Python codec for a charset label, or None when unknown or refused."""
    try:
        info = codecs.lookup(label)
    except Exception:  # LookupError, but also odd labels (NUL, surrogates...)
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REFUSED_CODECS:
        return None
    return info.name


def _utf8_or_cp1252(data: bytes) -> str:
    return data.decode("utf-8", errors=_fallback_errors())


def decode_bytes(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Best-effort text of `data` in the declared `charset` (None: undeclared) and a
    problem in English when the label was wrong or unknown. Tries the declared charset,
    then UTF-8, then windows-1252, replacement characters last; never raises."""
    label = (charset or "").strip().strip("\"'").lower()[:64]
    codec = _codec(label) if label else None
    problem = f"unknown charset {label!r}" if label and codec is None else None
    if data.isascii() and (codec is None or codec in _ASCII_COMPATIBLE):
        return data.decode("ascii"), problem
    if codec in _LATIN:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:  # valid multi-byte UTF-8 is no accident in Latin-1 text
            return text, f"declared {label} but the text is utf-8"
        if codec == "iso8859-1":  # as browsers do: iso-8859-1 means windows-1252
            try:
                return data.decode("cp1252"), problem
            except UnicodeDecodeError:
                return data.decode("iso8859-1"), problem
        return data.decode(codec, errors="replace"), problem
    if codec is not None and codec not in ("ascii", "utf-8"):
        try:
            return data.decode(codec), problem
        except Exception:
            problem = f"text not valid {label}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        mislabelled = f"declared {label} but the text is utf-8" if codec != "utf-8" and label else None
        return text, problem or mislabelled
    if problem is None:
        problem = f"declared {label} but" if label else "undeclared charset and"
        problem += " the text is not utf-8: read as windows-1252"
    return _utf8_or_cp1252(data), problem


_SURROGATES = re.compile("[\udc80-\udcff]")


def fix_8bit(value: str) -> str:
    """A header value read by `email` as ASCII with surrogate escapes (raw 8-bit bytes in a
    header, allowed as UTF-8 by RFC 6532, often Latin-1 in practice) turned back into
    text: UTF-8 when it is, windows-1252 otherwise."""
    if not _SURROGATES.search(value):
        return value
    try:
        raw = value.encode("utf-8", errors="surrogateescape")
    except UnicodeError:
        return _SURROGATES.sub("\ufffd", value)
    return _utf8_or_cp1252(raw)


# --- text ------------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufeff\ud800-\udfff]")
_LINE_BREAKS = re.compile("\r\n|[\r\u2028\u2029\x85]")
_BLANK_RUNS = re.compile(r"\n{3,}")
_SPACE_RUNS = re.compile(r"[ \t\u00a0]{2,}")


def normalise_text(text: str, *, collapse_spaces: bool = False) -> str:
    """One kind of line break, no NUL or control characters, no trailing spaces, at most one
    blank line in a row, trimmed. `collapse_spaces` (for text made from HTML) also collapses
    runs of spaces and removes indentation."""
    text = _CONTROL.sub("", _LINE_BREAKS.sub("\n", text))
    if collapse_spaces:
        lines = (_SPACE_RUNS.sub(" ", line).strip() for line in text.split("\n"))
    else:
        lines = (line.rstrip() for line in text.split("\n"))
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> tuple[str, str | None]:
    """Readable text of an HTML body (no tags, styles or scripts) and a problem, if any."""
    problem = None
    if len(html) > MAX_HTML_CHARS:
        html, problem = html[:MAX_HTML_CHARS], f"HTML body cut to {MAX_HTML_CHARS} characters"
    html = _CONTROL.sub("", html)
    html = re.sub(r"^\s*<\?xml[^>]*>", "", html)  # lxml refuses an encoding declaration in str
    try:
        text = get_text(html)
    except Exception as error:  # lxml's limits; fall back on a crude tag strip
        problem = f"HTML not readable ({type(error).__name__}): tags stripped"
        text = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", html)
        text = unescape(re.sub(r"(?s)<[^>]*>", " ", text))
    return normalise_text(text, collapse_spaces=True), problem


def unflow(text: str, *, delsp: bool = False) -> str:
    """Undo RFC 3676 format=flowed: a line ending with a space continues on the next one
    (same quote depth); space-stuffing removed. `text` has `\\n` line breaks."""
    out: list[str] = []
    buffer: str | None = None
    depth_of_buffer = 0

    def flush() -> None:
        nonlocal buffer
        if buffer is not None:
            out.append((">" * depth_of_buffer + " " if depth_of_buffer else "") + buffer)
            buffer = None

    for line in text.split("\n"):
        depth = len(line) - len(line.lstrip(">"))
        content = line[depth:]
        if content.startswith(" "):
            content = content[1:]
        flowed = content.endswith(" ") and content != "-- "
        if flowed and delsp:
            content = content[:-1]
        if buffer is not None and depth != depth_of_buffer:
            flush()
        if buffer is None:
            buffer, depth_of_buffer = content, depth
        else:
            buffer += content
        if not flowed:
            flush()
    flush()
    return "\n".join(out)


# --- quotes, signatures, forwards --------------------------------------------------------

_FORWARD_SUBJECT = re.compile(r"^\s*(?:\[\s*)?(?:fwd?|tr|trans|wg|fwd?\s*\[\d+\])\s*:", re.I)
_FORWARD_MARKER = re.compile(
    r"^\s*(?:-{2,}\s*(?:forwarded message|message transf[ée]r[ée]|mensaje reenviado|"
    r"weitergeleitete nachricht|doorgestuurd bericht)\s*-{2,}|"
    r"(?:d[ée]but du message r[ée]exp[ée]di[ée]|begin forwarded message)\s*:)\s*$",
    re.I,
)
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*(?:original message|message d['’]origine|ursprüngliche nachricht|"
    r"oorspronkelijk bericht)\s*-{2,}\s*$",
    re.I,
)
_UNDERSCORES = re.compile(r"^\s*_{10,}\s*$")
_HEADER_FROM = re.compile(r"^\s*\**\s*(?:de|from|von|van)\s*\**\s*:\s*\**\s*(\S.*?)\s*$", re.I)
_HEADER_SENT = re.compile(r"^\s*\**\s*(?:envoy[ée]|sent|date|gesendet|verzonden)\s*\**\s*:", re.I)
_HEADER_TO_OR_SUBJECT = re.compile(
    r"^\s*\**\s*(?:objet|sujet|subject|[àa]|to|pour|cc|betreff|onderwerp|aan)\s*\**\s*:", re.I
)
_ATTRIBUTION = re.compile(
    r"^\s*(?:le\s.*\sa\s+[ée]crit|on\s.*\swrote|am\s.*\sschrieb|op\s.*\sschreef)\s*:\s*$", re.I
)
_ATTRIBUTION_START = re.compile(r"^\s*(?:le|on|am|op)\s", re.I)
_DATE_EVIDENCE = re.compile(r"\d{4}|\d{1,2}\s*[:h]\s*\d{2}|@")
_SIGNATURE = re.compile(r"^--\s*$")
_MOBILE = re.compile(
    r"^\s*(?:(?:envoy[ée]|sent|exp[ée]di[ée])\s+(?:de|depuis|from|[àa] partir d['’e]|avec|with|via)\s"
    r".{0,50}\b(?:iphone|ipad|mobile|smartphone|android|samsung|galaxy|outlook|yahoo|gmail|"
    r"appareil|device|tablette|huawei|xiaomi|phone|portable|orange|sfr|free)\b.{0,30}|"
    r"(?:obtenir|t[ée]l[ée]charger|get)\s+outlook\s+(?:pour|for)\s+(?:ios|android)\b.{0,60})$",
    re.I,
)


@dataclass(frozen=True)
class ReplySplit:
    own: str  # the sender's new words: quotes, attribution lines and signature removed
    forwarded: str  # a forwarded block (from its marker on), "" if none
    forwarded_from: str | None  # its author as written ("" if not found); None if no forward


def _is_quoted(line: str) -> bool:
    return line.lstrip().startswith(">")


def _attribution_end(lines: list[str], i: int) -> int | None:
    """The last line of a "Le … a écrit :" / "On … wrote:" attribution starting at line
    `i` (it may be wrapped over up to three lines), or None."""
    if not _ATTRIBUTION_START.match(lines[i]):
        return None
    joined = ""
    for j in range(i, min(i + 3, len(lines))):
        if j > i and (not lines[j].strip() or _is_quoted(lines[j])):
            return None
        joined = f"{joined} {lines[j].strip()}" if joined else lines[j].strip()
        if len(joined) > 400:
            return None
        if _ATTRIBUTION.match(joined):
            return j if _DATE_EVIDENCE.search(joined) else None
    return None


def _next_lines(lines: list[str], i: int, count: int) -> list[str]:
    found: list[str] = []
    for line in lines[i + 1 :]:
        if line.strip():
            found.append(line)
            if len(found) == count:
                break
    return found


def _is_header_block(lines: list[str], i: int) -> bool:
    """An Outlook-style "De : … Envoyé : … À : … Objet :" block, an "Original Message"
    line, or Outlook's line of underscores, starting at line `i`."""
    line = lines[i]
    if _UNDERSCORES.match(line) or _ORIGINAL_MESSAGE.match(line):
        return True
    if not _HEADER_FROM.match(line):
        return False
    following = _next_lines(lines, i, 6)
    return any(_HEADER_SENT.match(x) for x in following) and any(
        _HEADER_TO_OR_SUBJECT.match(x) for x in following
    )


def _forward_author(lines: list[str]) -> str:
    for line in lines[1:16]:
        match = _HEADER_FROM.match(line)
        if match:
            author = re.sub(r"\s*\[mailto:([^\]]*)\]", r" <\1>", match.group(1).strip("* "))
            return re.sub(r"<\s*([^<>\s]+)\s*>", r"<\1>", author)  # "< a@b >" from HTML
    return ""


def split_reply(full_text: str, subject: str = "") -> ReplySplit:
    """Split a normalised body into the sender's new words and a forwarded block.

    Removed from the new words: quoted lines (">"), a "Le … a écrit :" / "On … wrote:"
    attribution with everything after it (or only the attribution when ">" lines follow,
    so inline and bottom-posted answers stay), Outlook header blocks, "Original Message"
    and underscore separators with everything after them, and the signature ("-- " and
    the usual mobile lines). A forwarded-message marker (or, when the subject says
    Fwd/TR, the first Outlook block) starts the forwarded block, kept whole."""
    lines = full_text.split("\n")
    forward_subject = bool(_FORWARD_SUBJECT.match(subject))
    own_end: int | None = None  # where the signature starts
    cut: int | None = None  # where quoted history starts
    forward_at: int | None = None
    removed: set[int] = set()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or _is_quoted(line):
            i += 1
            continue
        if _FORWARD_MARKER.match(line) or (forward_subject and _is_header_block(lines, i)):
            forward_at = i
            break
        if own_end is None and (_SIGNATURE.match(line) or _MOBILE.match(line)):
            own_end = i
            i += 1
            continue
        end = _attribution_end(lines, i)
        if end is not None:
            following = _next_lines(lines, end, 1)
            if following and _is_quoted(following[0]) and own_end is None:
                removed.update(range(i, end + 1))
                i = end + 1
                continue
            cut = i
            break
        if _is_header_block(lines, i):
            cut = i
            break
        i += 1
    stops = [x for x in (own_end, cut, forward_at) if x is not None]
    stop = min(stops) if stops else len(lines)
    own = "\n".join(
        line for k, line in enumerate(lines[:stop]) if k not in removed and not _is_quoted(line)
    )
    if forward_at is None:
        return ReplySplit(normalise_text(own), "", None)
    block = lines[forward_at:]
    return ReplySplit(normalise_text(own), normalise_text("\n".join(block)), _forward_author(block))
