"""Replies longer than one Telegram message (4,096 UTF-16 code units after entity
parsing) cut at the most natural boundary — paragraph, then line, then sentence, then
word — either as plain text (`split_message`) or as formatted HTML whose tags are closed
at a cut and reopened in the next part (`split_html`).

Why apart from channels/telegram_format.py (the Markdown → Telegram HTML formatter):
cutting is its own problem (UTF-16 units, grapheme clusters, tags across a cut), and both
stay pure (standard library only, no I/O) for their property-based tests.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from html import unescape
from itertools import accumulate

MAX_MESSAGE = 4096

__all__ = ["MAX_MESSAGE", "split_html", "split_message", "visible_length"]


# --- splitting ---------------------------------------------------------------------------

_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n[ \t\r\f\v\n]*")
_NEWLINE = re.compile(r"\n")
_SENTENCE = re.compile(r"[.!?…][»\"”’)\]]*([ \t\r\f\v\n]+)")
_SPACE = re.compile(r"[ \t\r\f\v\n]+")
_BLANK_LINES = re.compile(r"(?:[ \t\r\f\v]*\n)*")
_ZWJ = "\u200d"


def _skip_blank_lines(text: str, pos: int) -> int:
    match = _BLANK_LINES.match(text, pos)
    return match.end() if match else pos


def _units(text: str) -> list[int]:
    """UTF-16 code units per character: Telegram counts those."""
    return [2 if ord(c) > 0xFFFF else 1 for c in text]


def _joins_previous(c: str) -> bool:
    """A character that belongs to the one before it (accents, emoji modifiers, ZWJ):
    a hard cut must not separate them."""
    cp = ord(c)
    return (unicodedata.category(c) in ("Mn", "Me", "Mc") or c == _ZWJ
            or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F)


def _cut(text: str, start: int, last: int, prefix: list[int], limit: int) -> tuple[int, int]:
    """Where to end a part starting at `start` that may run up to `last` (exclusive):
    (end of the part, start of what follows), the separator in between is dropped."""
    least = prefix[start] + limit // 4  # a natural boundary must not leave a scrap of a part
    for pattern, group in ((_PARAGRAPH, 0), (_NEWLINE, 0), (_SENTENCE, 1), (_SPACE, 0)):
        best: tuple[int, int] | None = None
        for match in pattern.finditer(text, start + 1):
            if match.start(group) > last:
                break
            best = match.start(group), match.end(group)
        if best is not None and prefix[best[0]] >= least:
            return best
    end = last
    while end > start + 1 and last - end < 16 and (
            _joins_previous(text[end]) or text[end - 1] == _ZWJ):
        end -= 1
    if _joins_previous(text[end]) or text[end - 1] == _ZWJ:  # one long cluster: cut it anyway
        end = last
    return end, end


def _spans(text: str, limit: int) -> list[tuple[int, int]]:
    """The parts of `text` as (start, end) index pairs, each at most `limit` UTF-16 units,
    in order, none blank, without leading blank lines or trailing whitespace."""
    if limit < 2:
        raise ValueError("limit must be at least 2 UTF-16 units (one emoji)")
    prefix = list(accumulate(_units(text), initial=0))
    n = len(text)
    spans: list[tuple[int, int]] = []
    start = _skip_blank_lines(text, 0)
    while start < n:
        if prefix[n] - prefix[start] <= limit:
            end = following = n
        else:
            last = bisect_right(prefix, prefix[start] + limit) - 1
            end, following = _cut(text, start, last, prefix, limit)
        stop = end
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        if stop > start:
            spans.append((start, stop))
        start = _skip_blank_lines(text, following)
    return spans


def split_message(text: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Cut a reply into parts of at most `limit` characters (Telegram counts UTF-16 code
    units after entity parsing: count len(text.encode('utf-16-le')) // 2 to be safe), at
    paragraph boundaries first, then line, then sentence (. ! ? … followed by space), then
    word, then hard cut; order kept; no empty part; parts stripped of leading/trailing blank
    lines; joining the parts with the separators removed loses no non-space character.

    A boundary is taken only if the part before it fills at least a quarter of `limit`
    (else the next finer kind is tried), so a short title does not go out alone. A hard cut
    does not separate an accent or an emoji modifier from its letter. `limit` ≥ 2."""
    return [text[start:end] for start, end in _spans(text, limit)]


_TOKEN = re.compile(
    r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)(?:\s[^>]*)?>"
    r"|&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|lt|gt|amp|quot);")

# (kind, raw, visible character): kind is "open", "close" or "char"
_Token = tuple[str, str, str]


def _tokens(markup: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    for match in _TOKEN.finditer(markup):
        tokens.extend(("char", c, c) for c in markup[pos:match.start()])
        raw = match.group(0)
        if match.group(2):
            tokens.append(("close" if match.group(1) else "open", raw, match.group(2).lower()))
        else:
            tokens.append(("char", raw, unescape(raw)[:1] or "\ufffd"))
        pos = match.end()
    tokens.extend(("char", c, c) for c in markup[pos:])
    return tokens


def visible_length(html: str) -> int:
    """UTF-16 units of the text Telegram shows for this HTML."""
    return sum(2 if ord(token[2]) > 0xFFFF else 1 for token in _tokens(html) if token[0] == "char")


def split_html(html: str, limit: int = MAX_MESSAGE) -> list[str]:
    """Split already-formatted Telegram HTML into parts whose VISIBLE length (text after
    entity parsing, entities like &amp; count as one character, UTF-16 units) is ≤ limit and
    whose tags are balanced in each part: a tag open at a cut is closed at the end of the
    part and reopened at the start of the next (a <pre> or <a href> included). Cut
    preferably between paragraphs, then lines, sentences, words (as `split_message`, on the
    visible text; the whitespace at a cut is dropped, an element left empty too)."""
    tokens = _tokens(html)
    visible = "".join(token[2] for token in tokens if token[0] == "char")
    if not visible.strip():
        return []
    if sum(_units(visible)) <= limit:
        return [html]
    spans = _spans(visible, limit)
    parts: list[str] = []
    stack: list[tuple[str, str]] = []  # (name, raw opening tag)
    pending: list[str] = []  # opening tags not yet followed by a character of this part
    current: list[str] = []
    inside = False
    index = 0  # visible position of the next character
    span = 0

    def finish() -> None:
        nonlocal inside
        current.extend(f"</{name}>" for name, _ in reversed(stack[:len(stack) - len(pending)]))
        parts.append("".join(current))
        current.clear()
        pending.clear()
        inside = False

    for kind, raw, value in tokens:
        if kind == "open":
            stack.append((value, raw))
            if inside:
                pending.append(raw)
        elif kind == "close":
            if not any(name == value for name, _ in stack):
                continue  # a stray closing tag: not ours to repeat
            while stack:
                name, _ = stack.pop()
                if inside:
                    if pending:
                        pending.pop()  # an element with nothing in it: dropped
                    else:
                        current.append(f"</{name}>")
                if name == value:
                    break
        else:
            if inside and index >= spans[span][1]:
                finish()
                span += 1
            if not inside and span < len(spans) and index >= spans[span][0]:
                current.extend(opening for _, opening in stack)
                inside = True
            elif inside and pending:
                current.extend(pending)
                pending.clear()
            if inside:
                current.append(raw)
            index += 1
    if inside:
        finish()
    return parts
