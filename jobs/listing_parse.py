"""Competitor listings out of fetched pages, pure (no I/O): the veille concurrence
(issue 12, item 3) fetches agency pages and APIs, and this turns their bodies into
listings it can key and report.

Why a module of its own: the extraction is where a site's quirks land (relative links,
tracking parameters, "185 000 € FAI", "120 m²"), so it is tested without any server.
A listing's key is its normalized URL: the same listing on every run, whatever tracking
parameters or fragment the page adds. Text taken from pages is data: cleaned of control
and bidirectional-override characters and truncated here, escaped when rendered, and
never read as instructions.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

from bs4 import BeautifulSoup
from bs4.element import Tag

MAX_TEXT = 200
MAX_URL = 2000
MAX_DEPTH = 400
"""Element nesting refused beyond this (real listing pages stay far below 100)."""
TRACKING_PARAMS = frozenset({"fbclid", "gclid", "dclid", "msclkid", "mc_cid", "mc_eid",
                             "_ga", "_gl", "yclid", "igshid"})
FIELDS = ("titre", "prix", "surface", "commune")
_BIDI_AND_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
"""Lone surrogates (a JSON "\\ud800" escape): not UTF-8, so PostgreSQL refuses them."""
_URL_CONTROLS = re.compile("[\x00-\x1f\x7f]")
_URL_ENDS = "".join(map(chr, range(0x21)))
"""Stripped from both ends of a link, as browsers do (C0 controls and space)."""
_NUMBER_RE = (r"(?P<n>\d{1,3}(?P<sep>[ \u00a0\u202f.,'’])\d{3}(?:(?P=sep)\d{3})*"
              r"(?:[.,]\d{1,2})?(?!\d)|\d{1,12}(?:[.,]\d{1,4})?)")
"""A figure as sites write it: grouped thousands (space, no-break space, dot, comma or
apostrophe: "1 250 000", "98.500", "1,250,000", "1'250'000") with an optional decimal
part, or plain digits with one ("85,5", "250000")."""
_NUMBER = re.compile(_NUMBER_RE)
_PRICE = re.compile(_NUMBER_RE +
                    r"\s*(?P<mult>[kKM])?\s*(?:€|eur\b|euros?\b)", re.IGNORECASE)
_SURFACE = re.compile(_NUMBER_RE + r"\s*m(?:²|2|\b)", re.IGNORECASE)
_MULTIPLIER = {"k": 1_000, "m": 1_000_000}


class ListingParseError(ValueError):
    """A body the configuration cannot read (the message is French, for the digest)."""


@dataclass(frozen=True)
class Listing:
    url: str
    """The normalized URL: the listing's key."""
    titre: str | None = None
    prix: int | None = None
    surface: float | None = None
    commune: str | None = None

    def data(self) -> dict[str, Any]:
        """What is stored and shown: only the fields that could be extracted."""
        out: dict[str, Any] = {"url": self.url}
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


@dataclass(frozen=True)
class Page:
    listings: list[Listing]
    next_url: str | None = None


# ----------------------------------------------------------------------------- URLs
def normalize_url(href: str, base: str | None = None) -> str | None:
    """An absolute http(s) URL with a lower-case scheme and host, no default port, no
    fragment, no tracking parameters (utm_*, fbclid, gclid…), sorted query parameters and
    no trailing slash; None for anything else (mailto:, javascript:, garbage, a control
    character in the host). It is a listing's key, stored: as browsers do, a lone
    surrogate becomes U+FFFD and a control character in the path is percent-encoded (a
    NUL never reaches PostgreSQL)."""
    href = _SURROGATES.sub("\ufffd", href or "").strip().strip(_URL_ENDS).strip()
    if not href or len(href) > MAX_URL:
        return None
    try:
        absolute = urljoin(base, href) if base else href
        parts = urlsplit(absolute)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower().rstrip(".")
    if scheme not in ("http", "https") or not host or _URL_CONTROLS.search(host):
        return None
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        netloc = f"{netloc}:{port}"
    query = sorted(
        (key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if not key.lower().startswith("utm_") and key.lower() not in TRACKING_PARAMS
    )
    path = _URL_CONTROLS.sub(lambda c: f"%{ord(c[0]):02X}", re.sub(r"/{2,}", "/", parts.path))
    path = path.rstrip("/")
    return urlunsplit((scheme, netloc, path, urlencode(query), ""))


def with_query_param(url: str, name: str, value: str) -> str:
    """`url` with `name=value` set (replacing any earlier value): a paginated page."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name]
    query.append((name, value))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


# ----------------------------------------------------------------------------- fields
def clean_text(value: Any, limit: int = MAX_TEXT) -> str | None:
    """One line of displayable text: no control, invisible or bidi-override characters,
    whitespace collapsed, at most `limit` characters; None when nothing is left."""
    if value is None or isinstance(value, (dict, list, bool)):
        return None
    text = unicodedata.normalize("NFC", str(value))
    text = _BIDI_AND_INVISIBLE.sub("", text)
    text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    text = " ".join(text.split())
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _to_number(match: re.Match[str]) -> float:
    """The figure `_NUMBER_RE` matched: its thousands separator dropped, its decimal
    separator (whatever is left of "." or ",") read as a point."""
    token = match.group("n")
    sep = match.group("sep")
    if sep:
        token = token.replace(sep, "")
    token = re.sub(r"[^\d.,]", "", token).replace(",", ".")
    return float(token)


def _number(value: Any) -> float | None:
    """A JSON number as a float; None for booleans, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        return None
    return number if number == number and abs(number) != float("inf") else None


def parse_price(value: Any) -> int | None:
    """"185 000 €", "185.000 € FAI", "Prix : 1 250 000,00 €", "1,5 M€", "3 pièces -
    185 000 €", 185000 → an integer in euros (the figure before "€" when there is one,
    else the first figure); None for "Nous consulter", zero or an absurd figure."""
    if not isinstance(value, str):  # a number, or nothing usable (null, a list, an object)
        number = _number(value)
    else:
        text = value[:MAX_TEXT * 5]
        priced = _PRICE.search(text)
        match = priced or _NUMBER.search(text)
        if match is None:
            return None
        number = _to_number(match)
        if priced is not None and priced.group("mult"):
            number *= _MULTIPLIER[priced.group("mult").lower()]
    if number is None:
        return None
    price = round(number)  # checked once rounded: "0,4 €" is no price of 0 €
    return price if 0 < price < 1_000_000_000 else None


def parse_surface(value: Any) -> float | None:
    """"120 m²", "85,5 m2", "Surface : 95m²", "1 200 m²", 120 → square metres; a figure
    followed by another unit (ha, pièces) is not a surface."""
    if not isinstance(value, str):
        number = _number(value)
    else:
        text = value[:MAX_TEXT * 5]
        match = _SURFACE.search(text)
        if match is None:
            match = re.fullmatch(r"\s*" + _NUMBER_RE + r"\s*", text)
        if match is None:
            return None
        number = _to_number(match)
    if number is None:
        return None
    surface = int(number) if number == int(number) else round(number, 2)
    return surface if 0 < surface < 1_000_000 else None  # checked once rounded: 0.001 is no 0 m²


def make_listing(url: str, raw: Mapping[str, Any]) -> Listing:
    return Listing(url=url, titre=clean_text(raw.get("titre")), prix=parse_price(raw.get("prix")),
                   surface=parse_surface(raw.get("surface")),
                   commune=clean_text(raw.get("commune"), 100))


# ----------------------------------------------------------------------------- HTML
def _href_of(element: Tag, motif: re.Pattern[str] | None, base: str) -> str | None:
    candidates = [element] if element.name == "a" else []
    candidates += element.select("a[href]")
    for candidate in candidates:
        href = candidate.get("href")
        if not isinstance(href, str):
            continue
        url = normalize_url(href, base)
        if url is not None and (motif is None or motif.search(url)):
            return url
    return None


def _text_of(element: Tag | None) -> str | None:
    return None if element is None else element.get_text(" ", strip=True)


def check_content_type(content_type: str, kind: str) -> None:
    """A ListingParseError when the body is plainly not what the source should give (an
    image, a PDF, an archive instead of a page or an API's answer); a missing or textual
    type passes (sites label their HTML and JSON loosely)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if not media or media.startswith("text/") or any(
            word in media for word in ("html", "xml", "json", "javascript")):
        return
    expected = "une réponse JSON" if kind == "json" else "une page HTML"
    raise ListingParseError(f"le site a répondu « {clean_text(media, 60)} » au lieu d'{expected}")


def parse_html(body: str, base: str, *, lien: str | None = None, motif: str | None = None,
               conteneur: str | None = None, champs: Mapping[str, str] | None = None,
               suivant: str | None = None, limit: int | None = None) -> Page:
    """The listings of one HTML page: links by a CSS selector (`lien`) or a regular
    expression on their absolute URLs (`motif`), each with its fields read inside its
    container (`conteneur` + `champs` selectors) when configured, else its link text as
    title; and the next page's URL (`suivant`). Duplicate links are kept once; at most
    `limit` listings are read (a page of a hundred thousand links costs no more)."""
    body = _SURROGATES.sub("\ufffd", body)  # bs4 raises UnicodeEncodeError on them
    try:
        return _parse_html(body, base, lien, motif, conteneur, champs, suivant, limit)
    except RecursionError:  # a hostile page nesting elements thousands deep
        raise ListingParseError("page HTML illisible (imbrication trop profonde)") from None


def _parse_html(body: str, base: str, lien: str | None, motif: str | None, conteneur: str | None,
                champs: Mapping[str, str] | None, suivant: str | None,
                limit: int | None) -> Page:
    soup = BeautifulSoup(body, "html.parser")
    if _depth(soup) > MAX_DEPTH:
        raise ListingParseError(f"page HTML illisible (plus de {MAX_DEPTH} niveaux d'imbrication)")
    pattern = re.compile(motif) if motif else None
    found: dict[str, Listing] = {}
    if conteneur:
        for box in soup.css.iselect(conteneur):
            if limit is not None and len(found) >= limit:
                break
            link = box.select_one(lien) if lien else box
            url = _href_of(link, pattern, base) if link is not None else None
            if url is None or url in found:
                continue
            raw: dict[str, Any] = {name: _text_of(box.select_one(sel))
                                   for name, sel in (champs or {}).items()}
            if not raw.get("titre") and link is not None:
                raw["titre"] = _text_of(link) or link.get("title")
            found[url] = make_listing(url, raw)
    else:
        for element in soup.css.iselect(lien or "a[href]"):
            if limit is not None and len(found) >= limit:
                break
            url = _href_of(element, pattern, base)
            if url is None or url in found:
                continue
            title = _text_of(element) or element.get("title")
            found[url] = make_listing(url, {"titre": title})
    next_url = None
    if suivant:
        target = soup.select_one(suivant)
        href = target.get("href") if target is not None else None
        if isinstance(href, str) and href.strip() and not href.strip().startswith("#") \
                and len(href) <= MAX_URL:
            try:
                candidate = urljoin(base, href.strip())
                scheme = urlsplit(candidate).scheme
            except ValueError:  # "http://[unclosed" and urllib's other refusals
                candidate, scheme = "", ""
            if scheme in ("http", "https"):
                next_url = candidate
    return Page(list(found.values()), next_url)


def _depth(soup: BeautifulSoup) -> int:
    """How deep the elements nest, counted without recursion: a hostile page nesting
    thousands of containers would otherwise cost a quadratic time to read."""
    deepest, stack = 0, [(cast(Tag, soup), 0)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth <= MAX_DEPTH:
            stack.extend((child, depth + 1) for child in node.children if isinstance(child, Tag))
    return deepest


# ----------------------------------------------------------------------------- JSON
def json_path(data: Any, path: str) -> Any:
    """`data` at a dotted path ("data.items", "results.0.biens"; "" is the root)."""
    current = data
    for step in [s for s in path.split(".") if s] if path else []:
        if isinstance(current, Mapping) and step in current:
            current = current[step]
        elif isinstance(current, Sequence) and not isinstance(current, str) and step.isdigit() \
                and int(step) < len(current):
            current = current[int(step)]
        else:
            raise KeyError(step)
    return current


def parse_json(body: str, base: str, *, chemin: str = "",
               champs: Mapping[str, str] | None = None, limit: int | None = None) -> Page:
    """The listings of a JSON API answer: the list at `chemin`, each item's fields read
    at the paths of `champs` (`url` by default at "url"), at most `limit` of them. Items
    without a usable URL are skipped; a body that is not JSON or has no list there is a
    ListingParseError."""
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise ListingParseError(f"réponse JSON illisible ({exc.msg}, ligne {exc.lineno})") from exc
    except RecursionError:
        raise ListingParseError("réponse JSON illisible (imbrication trop profonde)") from None
    except ValueError:  # a number of more than 4,300 digits (Python refuses to read it)
        raise ListingParseError("réponse JSON illisible (nombre démesuré)") from None
    try:
        items = json_path(data, chemin)
    except KeyError as exc:
        raise ListingParseError(f"chemin « {chemin} » introuvable dans la réponse JSON "
                                f"(« {exc.args[0]} » manque)") from exc
    if not isinstance(items, list):
        raise ListingParseError(f"le chemin « {chemin or '(racine)'} » ne mène pas à une liste")
    fields = {"url": "url", **(champs or {})}
    found: dict[str, Listing] = {}
    for item in items:
        if limit is not None and len(found) >= limit:
            break
        if not isinstance(item, Mapping):
            continue
        raw: dict[str, Any] = {}
        for name, path in fields.items():
            try:
                raw[name] = json_path(item, path)
            except KeyError:
                raw[name] = None
        href = raw.get("url")
        url = normalize_url(href, base) if isinstance(href, str) else None
        if url is not None and url not in found:
            found[url] = make_listing(url, raw)
    return Page(list(found.values()))
