"""The Telegram formatter (channels/telegram_format.py) and splitter (telegram_split.py):
the model's Markdown as Telegram HTML that Telegram never refuses, its plain-text fallback,
and replies cut to the message limit. Examples from Axi's real work first, then
properties over arbitrary text."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from channels.telegram_format import plain_text, to_html
from channels.telegram_split import MAX_MESSAGE, split_html, split_message, visible_length

ALLOWED = frozenset({"b", "i", "s", "code", "pre", "a", "blockquote"})
ENTITIES = frozenset({"lt", "gt", "amp", "quot"})


class TelegramHTML(HTMLParser):
    """Checks HTML the way Telegram's parser would refuse it: only the allowed tags, with
    only their attributes, balanced, and no raw `<`, `>` or `&` in the text. Collects the
    visible text, and the same text with each link's URL after its text and each code
    block's language before its content (where they stood in the Markdown)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.links: list[str] = []
        self.errors: list[str] = []
        self.visible: list[str] = []
        self.with_urls: list[str] = []

    def text(self, value: str) -> None:
        self.visible.append(value)
        self.with_urls.append(value)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED:
            self.errors.append(f"tag <{tag}>")
        if tag == "a":
            if len(attrs) != 1 or attrs[0][0] != "href" or not (attrs[0][1] or "").lower().startswith(
                    ("http://", "https://")):
                self.errors.append(f"<a> attributes {attrs}")
            self.links.append((attrs[0][1] or "") if attrs else "")
        elif tag == "code" and attrs:
            name, value = attrs[0]
            if (len(attrs) != 1 or name != "class" or not (value or "").startswith("language-")
                    or self.stack[-1:] != ["pre"]):
                self.errors.append(f"<code> attributes {attrs}")
            else:
                self.with_urls.append((value or "").removeprefix("language-"))
        elif attrs:
            self.errors.append(f"<{tag}> attributes {attrs}")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
            return
        self.stack.pop()
        if tag == "a":
            self.with_urls.append(self.links.pop())

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.errors.append(f"self-closing <{tag}/>")

    def handle_data(self, data: str) -> None:
        for raw in "<>&":
            if raw in data:
                self.errors.append(f"raw {raw!r} in {data!r}")
        self.text(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ENTITIES:
            self.errors.append(f"entity &{name};")
        self.text({"lt": "<", "gt": ">", "amp": "&", "quot": '"'}.get(name, ""))

    def handle_charref(self, name: str) -> None:
        self.text(chr(int(name[1:], 16) if name[:1] in "xX" else int(name)))

    def handle_comment(self, data: str) -> None:
        self.errors.append(f"comment {data!r}")

    def handle_decl(self, decl: str) -> None:
        self.errors.append(f"declaration {decl!r}")

    def unknown_decl(self, data: str) -> None:
        self.errors.append(f"declaration {data!r}")

    def handle_pi(self, data: str) -> None:
        self.errors.append(f"processing instruction {data!r}")


def parsed(markup: str) -> TelegramHTML:
    checker = TelegramHTML()
    checker.feed(markup)
    checker.close()
    if checker.stack:
        checker.errors.append(f"left open: {checker.stack}")
    return checker


def valid(markup: str) -> str:
    """The visible text of HTML Telegram accepts (fails the test otherwise)."""
    checker = parsed(markup)
    assert not checker.errors, (markup, checker.errors)
    return "".join(checker.visible)


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def squeeze(text: str) -> str:
    return "".join(text.split())


# --- examples ------------------------------------------------------------------------------

def test_a_listing_reply_escapes_what_html_would_swallow() -> None:
    reply = ("**Maison de 120 m² à Périgueux** : 180 000 € FAI, frais d'agence 5 % < 6 %.\n"
             "Le service R&D de la mairie ❤️ <3 ; le client dit « ça me plaît » 😀")
    assert to_html(reply) == (
        "<b>Maison de 120 m² à Périgueux</b> : 180 000 € FAI, frais d'agence 5 % &lt; 6 %.\n"
        "Le service R&amp;D de la mairie ❤️ &lt;3 ; le client dit « ça me plaît » 😀")
    assert plain_text(reply) == reply.replace("**", "")


def test_words_and_arithmetic_keep_their_underscores_and_stars() -> None:
    text = "Le champ prix_net_vendeur vaut 2*3*4 = 24, et a * b * c aussi."
    assert to_html(text) == text
    assert to_html("Voir _dpe_classe_ et *surface*.") == "Voir <i>dpe_classe</i> et <i>surface</i>."


def test_nested_and_combined_emphasis() -> None:
    assert to_html("**gras avec *italique* dedans**") == "<b>gras avec <i>italique</i> dedans</b>"
    assert to_html("*italique avec **gras** dedans*") == "<i>italique avec <b>gras</b> dedans</i>"
    assert to_html("***les deux***") == "<i><b>les deux</b></i>"
    assert to_html("__gras__ et _penché_ et ~~barré~~") == "<b>gras</b> et <i>penché</i> et <s>barré</s>"


def test_unbalanced_markers_stay_literal() -> None:
    assert to_html("**pas fermé et _ni ça") == "**pas fermé et _ni ça"
    assert to_html("un ` seul et ~tilde~") == "un ` seul et ~tilde~"
    assert to_html("**gras** puis **") == "<b>gras</b> puis **"


def test_code_spans_and_blocks_are_escaped_and_never_formatted() -> None:
    assert to_html("Tapez `axi run --port 8080 && echo <ok>`") == (
        "Tapez <code>axi run --port 8080 &amp;&amp; echo &lt;ok&gt;</code>")
    assert to_html("``a `b` c``") == "<code>a `b` c</code>"
    block = "Voici :\n```python\nif prix < 200_000 and **x**:\n    print('R&D')\n```\nVoilà."
    assert to_html(block) == (
        'Voici :\n<pre><code class="language-python">if prix &lt; 200_000 and **x**:\n'
        "    print('R&amp;D')</code></pre>\nVoilà.")
    assert to_html("```\nbrut *x*\n```") == "<pre>brut *x*</pre>"
    assert plain_text(block) == "Voici :\nif prix < 200_000 and **x**:\n    print('R&D')\nVoilà."


def test_an_unclosed_fence_runs_to_the_end_as_code() -> None:
    assert to_html("Début\n```sql\nSELECT * FROM biens WHERE prix < 1") == (
        'Début\n<pre><code class="language-sql">SELECT * FROM biens WHERE prix &lt; 1</code></pre>')


def test_links_only_for_web_addresses() -> None:
    assert to_html("[l'annonce](https://ici-dordogne.fr/bien?id=12&ref=\"a\")") == (
        '<a href="https://ici-dordogne.fr/bien?id=12&amp;ref=&quot;a&quot;">l\'annonce</a>')
    assert to_html("[**Wiki**](https://fr.wikipedia.org/wiki/P%C3%A9rigueux_(ville))") == (
        '<a href="https://fr.wikipedia.org/wiki/P%C3%A9rigueux_(ville)"><b>Wiki</b></a>')
    assert to_html("[clic](javascript:alert('x'))") == "[clic](javascript:alert('x'))"
    assert to_html("[moi](mailto:a@b.fr) [vide]() [](https://x.fr)") == (
        "[moi](mailto:a@b.fr) [vide]() [](https://x.fr)")
    # code cannot sit inside a Telegram link: its text stays, its formatting goes
    assert to_html("[`axi`](https://x.fr)") == '<a href="https://x.fr">axi</a>'
    assert plain_text("Voir [l'annonce](https://x.fr/1) ou [https://x.fr](https://x.fr).") == (
        "Voir l'annonce (https://x.fr/1) ou https://x.fr.")


def test_headings_lists_quotes_and_rules() -> None:
    md = ("# Biens à Bergerac\n"
          "## Sous 200 000 € ##\n"
          "- Maison *rénovée*\n"
          "* Grange à restaurer\n"
          "  + dépendance\n"
          "1. Visite samedi\n"
          "2. Offre lundi\n"
          "---\n"
          "> Le vendeur : « **pas** en dessous de 180 000 € »\n"
          "> > réponse citée\n"
          "#hashtag n'est pas un titre")
    assert to_html(md) == ("<b>Biens à Bergerac</b>\n"
                           "<b>Sous 200 000 €</b>\n"
                           "• Maison <i>rénovée</i>\n"
                           "• Grange à restaurer\n"
                           "  • dépendance\n"
                           "1. Visite samedi\n"
                           "2. Offre lundi\n"
                           "\n"
                           "<blockquote>Le vendeur : « <b>pas</b> en dessous de 180 000 € »\n"
                           "réponse citée</blockquote>\n"
                           "#hashtag n'est pas un titre")
    assert plain_text(md).splitlines()[:3] == ["Biens à Bergerac", "Sous 200 000 €", "• Maison rénovée"]


def test_backslash_escapes() -> None:
    assert to_html(r"\*pas italique\* mais C:\Users reste") == r"*pas italique* mais C:\Users reste"


def test_split_message_prefers_paragraphs_then_sentences() -> None:
    first = "Bonjour Ludo, voici les trois biens du jour à Sarlat."
    second = "La maison de 120 m² est à 180 000 €. Le vendeur est pressé ! Visite demain ?"
    parts = split_message(f"{first}\n\n\n{second}", limit=80)
    assert parts == [first, second]
    parts = split_message(second, limit=60)
    assert parts == ["La maison de 120 m² est à 180 000 €. Le vendeur est pressé !", "Visite demain ?"]


def test_split_message_counts_utf16_units_and_keeps_emoji_whole() -> None:
    text = "😀" * 10  # 20 UTF-16 units, no boundary at all
    parts = split_message(text, limit=7)
    assert parts == ["😀😀😀", "😀😀😀", "😀😀😀", "😀"]
    assert all(units(part) <= 7 for part in parts)
    # an accent typed as a combining mark stays with its letter
    assert split_message("ae\u0301e\u0301", limit=2) == ["a", "e\u0301", "e\u0301"]
    assert split_message("👍🏽👍🏽👍🏽", limit=5) == ["👍🏽", "👍🏽", "👍🏽"]


def test_split_message_edge_cases() -> None:
    assert split_message("") == []
    assert split_message("\n\n   \n") == []
    assert split_message("\n\nCourt.\n\n") == ["Court."]
    assert split_message("x" * MAX_MESSAGE) == ["x" * MAX_MESSAGE]
    assert split_message("x" * (MAX_MESSAGE + 1)) == ["x" * MAX_MESSAGE, "x"]
    with pytest.raises(ValueError):
        split_message("abc", limit=1)


def test_split_message_keeps_code_indentation() -> None:
    text = "def f():\n    return 1\n" * 3
    parts = split_message(text, limit=25)
    assert parts == ["def f():\n    return 1"] * 3


def test_visible_length() -> None:
    assert visible_length("<b>R&amp;D</b> &lt;3 😀") == len("R&D <3 ") + 2
    assert visible_length('<a href="https://x.fr/?a=1&amp;b=2">lien</a>') == 4
    assert visible_length("&#128512;&#x41;") == 3


def test_split_html_closes_and_reopens_tags() -> None:
    markup = to_html("**" + "mot " * 30 + "fin**")
    parts = split_html(markup, limit=50)
    assert len(parts) == 3
    for part in parts:
        assert part.startswith("<b>") and part.endswith("</b>")
        valid(part)
        assert visible_length(part) <= 50


def test_split_html_repeats_a_code_block_and_a_link() -> None:
    code = "\n".join(f"ligne_{i} = {i} < {i + 1}" for i in range(10))
    markup = to_html(f"Le script :\n\n```python\n{code}\n```\n\n[la doc](https://x.fr/?a=1&b=2)")
    parts = split_html(markup, limit=60)
    for part in parts:
        valid(part)
        assert visible_length(part) <= 60
    # "Le script :" alone would be a scrap of a message: the cut falls between code lines
    pre = '<pre><code class="language-python">'
    assert parts == [
        f"Le script :\n\n{pre}ligne_0 = 0 &lt; 1\nligne_1 = 1 &lt; 2\nligne_2 = 2 &lt; 3</code></pre>",
        f"{pre}ligne_3 = 3 &lt; 4\nligne_4 = 4 &lt; 5\nligne_5 = 5 &lt; 6</code></pre>",
        f"{pre}ligne_6 = 6 &lt; 7\nligne_7 = 7 &lt; 8\nligne_8 = 8 &lt; 9</code></pre>",
        f'{pre}ligne_9 = 9 &lt; 10</code></pre>\n\n<a href="https://x.fr/?a=1&amp;b=2">la doc</a>',
    ]

    link = to_html("[" + "très long texte de lien " * 5 + "](https://x.fr)")
    link_parts = split_html(link, limit=40)
    assert len(link_parts) > 1
    assert all(part.startswith('<a href="https://x.fr">') and part.endswith("</a>") for part in link_parts)


def test_split_html_drops_empty_elements_and_whitespace_at_cuts() -> None:
    markup = "<b>un deux trois</b><i></i>\n\n<pre></pre><s>quatre cinq six</s>"
    assert split_html(markup, limit=16) == ["<b>un deux trois</b>", "<s>quatre cinq six</s>"]


def test_split_html_short_is_unchanged() -> None:
    assert split_html("<b>R&amp;D</b>") == ["<b>R&amp;D</b>"]
    assert split_html("<b> </b>\n") == []


# --- properties ----------------------------------------------------------------------------

MARKDOWN_BITS = ["**", "*", "__", "_", "~~", "`", "```", "```py\n", "\n```\n", "[", "]", "(", ")",
                 "](https://ex.fr/a_b?x=1&y=2)", "](javascript:alert(1))", "\\", "# ", "## ", "\n",
                 "\n\n", "- ", "* ", "1. ", "> ", "> > ", "---\n", "<", ">", "&", "&amp;", "<b>",
                 " ", "R&D", "<3", "180 000 €", "é", "😀", "👍🏽", "e\u0301", "snake_case", "2*3*4",
                 ". ", "! ", "? ", "… "]

any_text = st.text(st.characters(codec="utf-8"), max_size=200)
markdown = st.one_of(
    any_text,
    st.lists(st.one_of(st.sampled_from(MARKDOWN_BITS),
                       st.text(st.characters(codec="utf-8"), max_size=8)),
             max_size=60).map("".join),
)
limits = st.integers(min_value=2, max_value=60)

MARKERS = set("*_`~#>[]()\\-+•")


def essence(text: str) -> str:
    """What no conversion may lose or add: everything but markers and whitespace."""
    return "".join(c for c in text if c not in MARKERS and not c.isspace())


FAST = settings(max_examples=200, deadline=None)


@FAST
@given(markdown)
def test_to_html_is_always_accepted_and_loses_nothing_but_markers(md: str) -> None:
    markup = to_html(md)
    checker = parsed(markup)
    assert not checker.errors, (markup, checker.errors)
    assert essence("".join(checker.with_urls)) == essence(md)


@FAST
@given(st.text(st.characters(codec="utf-8", exclude_characters=MARKERS), max_size=200))
def test_text_without_markers_is_only_escaped(text: str) -> None:
    assert valid(to_html(text)) == text.replace("\r\n", "\n").replace("\r", "\n")


@FAST
@given(markdown)
def test_plain_text_keeps_the_words_in_order(md: str) -> None:
    plain, source = essence(plain_text(md)), iter(essence(md))
    assert all(c in source for c in plain)  # a subsequence: nothing added, order kept


def assert_pieces_in_order(pieces: list[str], whole: str) -> None:
    position = 0
    for piece in pieces:
        found = whole.find(piece, position)
        assert found >= 0, (piece, whole[position:])
        position = found + len(piece)
    assert squeeze("".join(pieces)) == squeeze(whole)


@FAST
@given(markdown, limits)
def test_split_message_parts_fit_and_keep_everything(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    for part in parts:
        assert 0 < units(part) <= limit
        assert part.strip()
        assert not part.startswith("\n") and part == part.rstrip()
    assert_pieces_in_order(parts, text)


@FAST
@given(markdown, limits)
def test_split_html_parts_are_valid_fit_and_keep_everything(md: str, limit: int) -> None:
    markup = to_html(md)
    whole = valid(markup)
    parts = split_html(markup, limit)
    visible = []
    for part in parts:
        text = valid(part)
        assert visible_length(part) == units(text) <= limit
        assert text.strip()
        visible.append(text)
    assert_pieces_in_order(visible, whole)


@FAST
@given(markdown)
def test_visible_length_counts_what_telegram_shows(md: str) -> None:
    markup = to_html(md)
    assert visible_length(markup) == units(valid(markup))
