"""Fetching other people's web pages politely (the veille concurrence reads competitor
agencies' sites, issue 12 item 3): we are a guest there, and a guest that hammers a site
or ignores its robots.txt gets blocked — or is simply rude.

So every request carries Axi's real User-Agent, waits its turn per host (the configured
delay, or the site's robots.txt Crawl-delay when longer), has a timeout (per operation
and in total), is retried a bounded number of times on 429/5xx and network errors
honouring Retry-After, and is never made when robots.txt disallows it. A body larger
than `max_bytes` (once decompressed) is refused rather than read into memory. Failures
are `FetchError`s whose message is French: it is shown to Ludo as the reason a source is
broken.

And we are a guest who must not be led elsewhere (jobs/fetch_guard.py says why): the
fetcher owns its client (jobs/guarded_http.py: public addresses only, checked at the
connection), follows redirects itself — at most `MAX_REDIRECTS`, each hop on the
configured source's site and allowed by that host's robots.txt — and a refusal is a
`Refused` FetchError with its reason, never a request.
"""

from __future__ import annotations

import asyncio
import codecs
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.robotparser import RobotFileParser

import httpx

from jobs.fetch_guard import IPNetwork, follow, shown, site_refusal
from jobs.guarded_http import AddressRefused, Resolve, guarded_client
from jobs.http_body import BodyTooLarge, read_capped

RETRYABLE = frozenset({429, 500, 502, 503, 504})
REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
ROBOTS_MAX_BYTES = 500_000
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class FetchError(Exception):
    """A page that could not be fetched; str() is the French reason, `status` the final
    HTTP status when there was one."""

    def __init__(self, reason: str, status: int | None = None):
        super().__init__(reason)
        self.status = status


class RobotsDisallowed(FetchError):
    pass


class Refused(FetchError):
    """A URL or an address the veille may not fetch (another site, a private address)."""


@dataclass(frozen=True)
class WebPage:
    url: str
    status: int
    text: str
    content_type: str
    location: str | None = None
    """A redirect's Location header (followed by `PoliteFetcher.get`, hop by hop)."""


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds to wait: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


NOT_PAGE_CHARSETS = frozenset({"idna", "punycode", "undefined", "utf-7", "unicode-escape",
                               "raw-unicode-escape"})
"""Text codecs (as `codecs.lookup` names them) no page is written in: the first three
raise whatever the error handler, the others decode bytes to lone surrogates (text
PostgreSQL refuses, bs4 chokes on)."""
_SURROGATE = re.compile("[\ud800-\udfff]")


def page_codec(charset: str | None) -> str | None:
    """The codec a declared charset names, when it is a real text encoding a page can be
    written in; None for an unknown name, a bytes-to-bytes codec ("rot13", "base64") or
    one of NOT_PAGE_CHARSETS."""
    if not charset:
        return None
    try:
        info = codecs.lookup(charset.strip())
    except (LookupError, ValueError, TypeError):  # unknown, or a NUL in the name
        return None
    if not info._is_text_encoding or info.name in NOT_PAGE_CHARSETS:
        return None
    return info.name


def decode_body(body: bytes, charset: str | None) -> str:
    """The header's charset, else an HTML <meta charset>, else UTF-8; a charset that is
    not a page's text encoding (see `page_codec`) is skipped as if absent. Never raises,
    and never returns a lone surrogate (undecodable bytes become U+FFFD)."""
    codec = page_codec(charset)
    if codec is None:
        match = _META_CHARSET.search(body[:4096])
        codec = page_codec(match.group(1).decode("ascii")) if match else None
    try:
        text = body.decode(codec or "utf-8", errors="replace")
    except (LookupError, UnicodeError, ValueError):  # belt and braces: checked above
        text = body.decode("utf-8", errors="replace")
    return _SURROGATE.sub("\ufffd", text)


_BARE_QUERY = re.compile(r"^(\s*(?:dis)?allow\s*:\s*[^#\s]*\?)(?=\s*(?:#|$))", re.IGNORECASE)


def robots_allows(robots: RobotFileParser, user_agent: str, url: str) -> bool:
    """Whether `robots` lets `user_agent` fetch `url`, as RFC 9309 (and search engines)
    read it: the group for our product token, else `*`; the rule with the longest
    matching path decides, `Allow` on a tie; `*` matches any characters and a final `$`
    the end. (Python's `RobotFileParser.can_fetch` takes the first matching rule in file
    order and reads `*` literally: an `Allow: /` line first, or a wildcard rule, let Axi
    read pages a site forbids — and an `Allow` after `Disallow: /` was ignored.) Its
    parsing is kept: the groups, and each rule's path quoted as `can_fetch` quotes it."""
    groups: Any = robots  # its groups have no public API (nor stubs)
    if getattr(groups, "disallow_all", False):
        return False
    if getattr(groups, "allow_all", False):
        return True
    entry = next((e for e in groups.entries if e.applies_to(user_agent)), groups.default_entry)
    if entry is None:
        return True
    parsed = urllib.parse.urlparse(urllib.parse.unquote(url))
    path = urllib.parse.quote(urllib.parse.urlunparse(
        ("", "", parsed.path, parsed.params, parsed.query, parsed.fragment))) or "/"
    best: tuple[int, bool] | None = None
    for rule in entry.rulelines:
        pattern = str(rule.path)
        anchored = pattern.endswith("%24")  # "$", quoted
        body = pattern[:-3] if anchored else pattern
        regex = ".*".join(re.escape(part) for part in body.split("%2A"))  # "*", quoted
        if re.match(regex + (r"\Z" if anchored else ""), path) is None:
            continue
        if best is None or len(pattern) > best[0] or (len(pattern) == best[0]
                                                       and rule.allowance):
            best = (len(pattern), bool(rule.allowance))
    return True if best is None else best[1]


class PoliteFetcher:
    """One run's fetcher (`async with PoliteFetcher(…) as fetcher`): remembers each
    host's robots.txt and when it may be asked again. `allowed_networks` are non-public
    networks it may reach all the same (AXI_VEILLE_ALLOWED_NETWORKS); `resolve` (the
    system's DNS by default), `sleep` and `clock` are injectable so tests use names of
    their own and measure rather than wait long."""

    def __init__(self, *, user_agent: str, allowed_networks: tuple[IPNetwork, ...] = (),
                 resolve: Resolve | None = None, delay_s: float = 2.0,
                 timeout_s: float = 20.0, retries: int = 2, backoff_s: float = 1.0,
                 max_wait_s: float = 60.0, max_bytes: int = 5_000_000,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.http = guarded_client(allowed_networks, resolve=resolve, timeout_s=timeout_s)
        self.user_agent = user_agent
        self.delay_s = delay_s
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self.max_bytes = max_bytes
        self._sleep = sleep
        self._clock = clock
        self._robots: dict[str, RobotFileParser | None] = {}
        self._host_delay: dict[str, float] = {}
        self._next_at: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.requests = 0

    async def __aenter__(self) -> PoliteFetcher:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    # ------------------------------------------------------------------ public
    async def get(self, url: str, *, site: str | None = None) -> WebPage:
        """The page at `url` (2xx) for the source configured at `site` (default: `url`
        itself), after robots.txt allowed it and each redirect; FetchError otherwise."""
        result = await self._follow(url, site or url, self.max_bytes, robots=True)
        if not 200 <= result.status < 300:
            raise FetchError(f"HTTP {result.status} sur {shown(result.url)}", result.status)
        return result

    async def check_robots(self, url: str) -> None:
        """RobotsDisallowed unless the robots.txt of `url`'s host allows it (the host
        and path as httpx reads them: the ones the request will use)."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise Refused(f"adresse refusée : {shown(url)} est illisible") from None
        origin = f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
        if origin not in self._robots:
            self._robots[origin] = await self._load_robots(origin)
        robots = self._robots[origin]
        target = origin + parsed.raw_path.decode("ascii")
        if robots is not None and not robots_allows(robots, self.user_agent, target):
            raise RobotsDisallowed(f"robots.txt interdit la lecture de {shown(url)}")

    async def _follow(self, url: str, site: str, max_bytes: int, *, robots: bool) -> WebPage:
        """GET `url`, following at most MAX_REDIRECTS redirects by hand: every hop is
        checked (same site, robots.txt when `robots`) before it is requested."""
        start = url
        for _ in range(MAX_REDIRECTS + 1):
            refusal = site_refusal(url, site)
            if refusal is not None:
                raise Refused(f"{'adresse' if url == start else 'redirection'} refusée : {refusal}")
            if robots:
                await self.check_robots(url)
            result = await self._fetch(url, max_bytes)
            if result.status not in REDIRECTS:
                return result
            target = follow(url, result.location or "")
            if not result.location or target is None:
                raise FetchError(f"redirection HTTP {result.status} sans adresse lisible sur "
                                 f"{shown(url)}", result.status)
            url = target
        raise FetchError(f"plus de {MAX_REDIRECTS} redirections à partir de {shown(start)}")

    # ------------------------------------------------------------------ robots.txt
    async def _load_robots(self, origin: str) -> RobotFileParser | None:
        """None (everything allowed) when there is no robots.txt (4xx), as RFC 9309 says;
        an unreachable one (5xx, network) means "do not crawl", so a FetchError. Its
        redirects are followed on the same site only."""
        url = f"{origin}/robots.txt"
        try:
            result = await self._follow(url, url, ROBOTS_MAX_BYTES, robots=False)
        except Refused:
            raise
        except FetchError as exc:
            raise FetchError(f"robots.txt injoignable ({exc}) : par prudence, rien n'est lu") from exc
        if 300 <= result.status < 400:
            raise FetchError(f"robots.txt injoignable (HTTP {result.status}) : par prudence, "
                             "rien n'est lu")
        if result.status >= 500:
            raise FetchError(f"robots.txt injoignable (HTTP {result.status}) : par prudence, "
                             "rien n'est lu")
        if result.status >= 400:
            return None
        parser = RobotFileParser(url)
        # its rule parser drops a path's final "?" ("Disallow: /*?" would forbid every
        # page): "?*" means the same (RFC 9309) and survives
        parser.parse([_BARE_QUERY.sub(r"\1*", line) for line in result.text.splitlines()])
        crawl_delay = parser.crawl_delay(self.user_agent)
        if crawl_delay is not None:
            host = httpx.URL(origin).netloc.decode("ascii")
            self._host_delay[host] = min(float(crawl_delay), self.max_wait_s)
        return parser

    # ------------------------------------------------------------------ one request
    async def _fetch(self, url: str, max_bytes: int) -> WebPage:
        """One GET with its turn, timeout and bounded retries; returns any final status
        (4xx included); raises FetchError once the retries are spent."""
        host = httpx.URL(url).netloc.decode("ascii")
        lock = self._locks.setdefault(host, asyncio.Lock())
        reason = ""
        status: int | None = None
        for attempt in range(self.retries + 1):
            wait = 0.0
            async with lock:
                await self._wait_turn(host)
                try:
                    result, retry_after = await self._request(url, max_bytes)
                except BodyTooLarge:
                    raise FetchError(f"réponse trop grande (plus de {max_bytes // 1000} ko) sur "
                                     f"{shown(url)}") from None
                except AddressRefused as exc:
                    raise Refused(str(exc)) from None
                except (httpx.TimeoutException, TimeoutError):
                    reason = f"délai dépassé ({self.timeout_s:g} s) sur {shown(url)}"
                    result, status = None, None
                except httpx.HTTPError as exc:
                    reason = f"connexion impossible à {shown(host, 80)} ({type(exc).__name__})"
                    result, status = None, None
                finally:
                    self._next_at[host] = self._clock() + self._delay_for(host)
            if result is not None:
                if result.status not in RETRYABLE:
                    return result
                reason, status = f"HTTP {result.status} sur {shown(url)}", result.status
                if retry_after is not None:
                    if retry_after > self.max_wait_s:
                        raise FetchError(f"{reason} : le site demande d'attendre "
                                         f"{retry_after:.0f} s", status)
                    wait = retry_after
            if attempt == self.retries:
                break
            await self._sleep(max(wait, self.backoff_s * 2 ** attempt))
        tries = self.retries + 1
        raise FetchError(f"{reason} (après {tries} essai{'s' if tries > 1 else ''})", status)

    def _delay_for(self, host: str) -> float:
        return max(self.delay_s, self._host_delay.get(host, 0.0))

    async def _wait_turn(self, host: str) -> None:
        wait = self._next_at.get(host, 0.0) - self._clock()
        if wait > 0:
            await self._sleep(wait)

    async def _request(self, url: str, max_bytes: int) -> tuple[WebPage, float | None]:
        self.requests += 1
        async with asyncio.timeout(self.timeout_s * 2):
            async with self.http.stream(
                "GET", url, headers={"User-Agent": self.user_agent, "Accept-Encoding": "gzip"},
                timeout=httpx.Timeout(self.timeout_s), follow_redirects=False,
            ) as response:
                body = await read_capped(response, max_bytes)
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        text = decode_body(body, response.charset_encoding)
        return (WebPage(str(response.url), response.status_code, text,
                        response.headers.get("content-type", ""),
                        response.headers.get("location")), retry_after)
