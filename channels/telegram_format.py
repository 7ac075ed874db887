"""What Axi's replies look like on Telegram: the model's Markdown made safe to send.

The model writes Markdown; Telegram renders neither CommonMark nor anything forgiving. Its
MarkdownV2 demands a backslash before 18 punctuation characters, and one miss ("R&D",
"2*3*4", "<3", "180 000 €.") turns the whole reply into a 400 "can't parse entities". Its
HTML mode needs only `& < >` escaped, so every reply goes out as Telegram HTML built here,
and when Telegram still refuses it the channel sends `plain_text` instead. Replies longer
than a message are cut by channels/telegram_split.py.

Everything here is pure (standard library only, no I/O, no Telegram import), so the channel
(`channels/telegram.py`) and its property-based tests share one definition of "safe".

Not supported, left as readable text: tables, images, setext headings (`Title` over
`===`), `~~~` fences, autolinks (`<https://…>`; Telegram links bare URLs itself), link
titles and reference links, nested blockquotes (Telegram cannot nest them: flattened).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html import escape

__all__ = ["plain_text", "to_html"]


# --- inline Markdown ---------------------------------------------------------------------

@dataclass
class _Delim:
    """A run of `*`, `_` or `~~` that may open or close emphasis; what is left of it when
    nothing matched is literal text."""

    char: str
    count: int
    can_open: bool
    can_close: bool


@dataclass
class _Elem:
    tag: str  # b, i, s, code, a
    children: list[_Node] = field(default_factory=list)
    href: str = ""


_Node = str | _Delim | _Elem

_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_SAFE_SCHEME = re.compile(r"https?://[^\s/?#]", re.IGNORECASE)


def _match_link(s: str, i: int) -> tuple[str, str, int] | None:
    """`[text](url)` starting at s[i] == '[': (text, url, end) or None."""
    depth = 0
    j = i
    n = len(s)
    while j < n:
        c = s[j]
        if c == "\\" and j + 1 < n:
            j += 2
            continue
        if c == "[":
            depth += 1
        elif c == "]":
            depth -= 1
            if depth == 0:
                break
        j += 1
    else:
        return None
    if j + 1 >= n or s[j + 1] != "(":
        return None
    k = j + 2
    parens = 0
    while k < n:
        c = s[k]
        if c.isspace():
            return None
        if c == "(":
            parens += 1
        elif c == ")":
            if parens == 0:
                break
            parens -= 1
        k += 1
    else:
        return None
    url = s[j + 2:k]
    if not url:
        return None
    return s[i + 1:j], url, k + 1


def _flanking(s: str, i: int, run: int) -> tuple[bool, bool]:
    """(can open, can close) for a delimiter run s[i:i+run]. Never inside a word, so
    snake_case_words and 2*3*4 stay as written."""
    before = s[i - 1] if i > 0 else " "
    after = s[i + run] if i + run < len(s) else " "
    can_open = not after.isspace() and not before.isalnum()
    can_close = not before.isspace() and not after.isalnum()
    return can_open, can_close


def _inline(s: str, links: bool = True) -> list[_Node]:
    nodes: list[_Node] = []
    buf: list[str] = []

    def flush() -> None:
        if buf:
            nodes.append("".join(buf))
            buf.clear()

    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in _ASCII_PUNCT:
            buf.append(s[i + 1])
            i += 2
            continue
        if c == "`":
            run = 1
            while i + run < n and s[i + run] == "`":
                run += 1
            close = re.compile(r"(?<!`)" + "`" * run + r"(?!`)").search(s, i + run)
            if close is None:
                buf.append("`" * run)
                i += run
                continue
            content = s[i + run:close.start()]
            if len(content) >= 2 and content[0] == " " and content[-1] == " " and content.strip():
                content = content[1:-1]
            flush()
            nodes.append(_Elem("code", [content]))
            i = close.end()
            continue
        if c == "[" and links:
            link = _match_link(s, i)
            if link is not None and link[0] and _SAFE_SCHEME.match(link[1]):
                text, url, end = link
                flush()
                nodes.append(_Elem("a", _inline(text, links=False), href=url))
                i = end
                continue
        if c in "*_~":
            run = 1
            while i + run < n and s[i + run] == c:
                run += 1
            if c == "~" and run != 2:
                buf.append(c * run)
                i += run
                continue
            can_open, can_close = _flanking(s, i, run)
            if can_open or can_close:
                flush()
                nodes.append(_Delim(c, run, can_open, can_close))
            else:
                buf.append(c * run)
            i += run
            continue
        buf.append(c)
        i += 1
    flush()
    return _emphasis(nodes)


def _emphasis(nodes: list[_Node]) -> list[_Node]:
    """Pair delimiter runs, innermost first (CommonMark's algorithm without its rule of
    three): what lies between a pair becomes one element, so the tags are balanced by
    construction; a run nothing pairs with stays literal."""
    i = 0
    while i < len(nodes):
        closer = nodes[i]
        if not (isinstance(closer, _Delim) and closer.can_close and closer.count > 0):
            i += 1
            continue
        found = -1
        for j in range(i - 1, -1, -1):
            opener = nodes[j]
            if (isinstance(opener, _Delim) and opener.char == closer.char and opener.can_open
                    and opener.count > 0):
                found = j
                break
        if found < 0:
            i += 1
            continue
        opener = nodes[found]
        assert isinstance(opener, _Delim)
        use = 2 if opener.count >= 2 and closer.count >= 2 else 1
        tag = "s" if closer.char == "~" else ("b" if use == 2 else "i")
        element = _Elem(tag, nodes[found + 1:i])
        opener.count -= use
        closer.count -= use
        nodes = [*nodes[:found + 1], element, *nodes[i:]]
        i = found + 2
        if opener.count == 0:
            del nodes[found]
            i -= 1
        if closer.count == 0:
            del nodes[i]
    return nodes


def _render(nodes: list[_Node], as_html: bool, in_link: bool = False) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, str):
            out.append(_esc(node) if as_html else node)
        elif isinstance(node, _Delim):
            literal = node.char * node.count
            out.append(_esc(literal) if as_html else literal)
        elif node.tag == "a":
            text = _render(node.children, as_html, in_link=True)
            if as_html:
                out.append(f'<a href="{escape(node.href, quote=True)}">{text}</a>')
            else:
                out.append(node.href if text == node.href else f"{text} ({node.href})")
        else:
            inner = _render(node.children, as_html, in_link)
            # Telegram's code entities cannot sit inside a link: plain text there
            if as_html and not (in_link and node.tag == "code"):
                out.append(f"<{node.tag}>{inner}</{node.tag}>")
            else:
                out.append(inner)
    return "".join(out)


def _esc(text: str) -> str:
    return escape(text, quote=False)


# --- blocks ------------------------------------------------------------------------------

_FENCE = re.compile(r"^ {0,3}(`{3,})[ \t]*([\w.+#-]*)[ \t]*$")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_BULLET = re.compile(r"^([ \t]*)[-*+][ \t]+(.*)$")
_ORDERED = re.compile(r"^([ \t]*\d{1,9}[.)][ \t]+)(.*)$")
_QUOTE = re.compile(r"^ {0,3}>[ \t]?(.*)$")


def _line(line: str, as_html: bool) -> str:
    """One line outside code blocks: heading, rule, list item or plain inline text."""
    if _RULE.match(line):
        return ""
    heading = _HEADING.match(line)
    if heading:
        text = _render(_inline(heading.group(1) or ""), as_html)
        return f"<b>{text}</b>" if as_html and text else text
    bullet = _BULLET.match(line)
    if bullet:
        return f"{bullet.group(1)}• {_render(_inline(bullet.group(2)), as_html)}"
    ordered = _ORDERED.match(line)
    if ordered:
        return ordered.group(1) + _render(_inline(ordered.group(2)), as_html)
    return _render(_inline(line), as_html)


def _convert(markdown: str, as_html: bool) -> str:
    lines = markdown.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            run, lang = len(fence.group(1)), fence.group(2)
            closing = re.compile(r"^ {0,3}" + "`" * run + r"`*[ \t]*$")
            j = i + 1
            while j < len(lines) and not closing.match(lines[j]):
                j += 1
            code = "\n".join(lines[i + 1:j])  # an unclosed fence runs to the end (CommonMark)
            if not as_html:
                out.append(code)
            elif lang:
                out.append(f'<pre><code class="language-{escape(lang, quote=True)}">'
                           f"{_esc(code)}</code></pre>")
            else:
                out.append(f"<pre>{_esc(code)}</pre>")
            i = j + 1
            continue
        if _QUOTE.match(line):
            quoted: list[str] = []
            while i < len(lines) and (quote := _QUOTE.match(lines[i])):
                inner = quote.group(1)
                while nested := _QUOTE.match(inner):  # Telegram cannot nest blockquotes
                    inner = nested.group(1)
                quoted.append(_line(inner, as_html))
                i += 1
            body = "\n".join(quoted)
            out.append(f"<blockquote>{body}</blockquote>" if as_html else body)
            continue
        out.append(_line(line, as_html))
        i += 1
    return "\n".join(out)


def to_html(markdown: str) -> str:
    """The model's Markdown as Telegram HTML (parse_mode=HTML). Escapes & < > everywhere
    outside the tags it emits; **bold**/__bold__ → <b>, *italic*/_italic_ → <i> (not inside
    words like snake_case or 2*3*4), `code` → <code>, ```lang\\n…``` → <pre><code
    class="language-lang">…</code></pre> (content escaped, no formatting inside),
    [text](http(s)://url) → <a href="url"> (url attribute-escaped; other schemes such as
    javascript: left as plain text), headings (#, ##…) → <b>line</b>, "- item"/"* item"/
    "1. item" lists → "• item" / "1. item" lines, > quote → <blockquote>, ~~strike~~ → <s>.
    Never emits MarkdownV2. Unbalanced markers stay as literal text. The output always has
    balanced tags (only b, i, s, code, pre, a, blockquote).

    Emphasis, links and code spans do not span lines; a fence left open runs to the end
    (a streamed draft shows its code as code before the closing fence arrives); a line of
    `---`/`***` becomes an empty line."""
    return _convert(markdown, as_html=True)


def plain_text(markdown: str) -> str:
    """The same text without markup, for when Telegram still refuses the HTML (400 can't
    parse entities): markers removed, links as "text (url)"."""
    return _convert(markdown, as_html=False)
