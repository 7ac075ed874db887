"""Where the veille concurrence may send a request, pure (no I/O).

Why: the pages it reads belong to other people. A competitor's page — or whoever
controls it or its DNS — chooses the redirects and the "next page" links Axi follows, and
could point them at what only Axi's server can reach: the Proxmox admin (8006), Ollama
(11434), Axi's own HTTP port, the LAN, a cloud metadata address (169.254.169.254). So
every URL fetched (the configured one, each redirect hop, each next page, each
robots.txt) passes `site_refusal` — http(s) only, on the configured source's site — and
every address a connection is opened to passes `address_refusal` — a public unicast
address only — after DNS resolution (jobs/guarded_http.py connects to exactly the
address checked here, so a DNS answer that changes between the check and the connection
cannot slip through).

"The same site" is decided here, once: the same host name, or its `www.` / bare variant
(`agence.fr` and `www.agence.fr` are one site; `immo.agence.fr` is another), on the
configured source's port or the default port of the hop's scheme (so `http://x` may
redirect to `https://x`, but not to `x:8006`). URLs are read with httpx's parser, the one
that will open the connection, so no two parsers can disagree about the host.

Non-public networks can be allowed explicitly (`AXI_VEILLE_ALLOWED_NETWORKS`, empty by
default): the tests' fake agencies run on 127.0.0.1, and an operator may have a
competitor mirrored on the LAN. An allowed network lifts only the address rule, never the
same-site rule.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urljoin

import httpx

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
MAX_SHOWN = 120
"""A URL in a reason (read by Ludo) is cut to this length: pages choose their URLs."""


def shown(url: str, limit: int = MAX_SHOWN) -> str:
    """A URL as a reason may show it: printable characters only, at most `limit`."""
    text = "".join(c if c.isprintable() and not c.isspace() else "?" for c in url)
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------- addresses
def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped ::ffff:a.b.c.d, 6to4
    2002::/16, NAT64 64:ff9b::/96): judged as that IPv4 address."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _non_public(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "non spécifiée"
    if ip.is_loopback:
        return "de boucle locale"
    if ip.is_link_local:
        return "de lien local"
    if ip.is_multicast:
        return "de multidiffusion"
    if ip.is_private:
        return "privée"
    if ip.is_reserved:
        return "réservée"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "privée"
    if not ip.is_global:
        return "non publique"
    return None


def address_refusal(address: str, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why a connection to `address` (an IP literal, as DNS answered) is refused, in
    French; None for a public unicast address or one inside an allowed network."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"adresse {shown(address, 60)} illisible"
    effective = _embedded_ipv4(ip) or ip
    for network in allowed:
        for candidate in (ip, effective):
            if candidate.version == network.version and candidate in network:
                return None
    kind = _non_public(effective)
    if kind is None:
        return None
    return f"{shown(address, 60)} (adresse {kind})"


# ----------------------------------------------------------------------------- URLs
def _site_of(host: str) -> str:
    host = host.lower().rstrip(".")
    return host[4:] if host.startswith("www.") else host


def site_refusal(url: str, site: str) -> str | None:
    """Why `url` may not be fetched for the source configured at `site`, in French (the
    caller says what was refused); None when it is http(s) on the same site (see the
    module's docstring)."""
    try:
        target, source = httpx.URL(url), httpx.URL(site)
    except (httpx.InvalidURL, TypeError, ValueError):
        return f"{shown(url)} est illisible"
    if target.scheme not in DEFAULT_PORTS:
        return f"{shown(url)} n'est pas en http(s)"
    if not target.host:
        return f"{shown(url)} n'a pas d'hôte"
    if _site_of(target.host) != _site_of(source.host):
        return (f"{shown(url)} est sur un autre site ({shown(target.host, 60)}) que la source "
                f"({shown(source.host, 60)})")
    port = target.port or DEFAULT_PORTS[target.scheme]
    source_port = source.port or DEFAULT_PORTS.get(source.scheme, 0)
    if port not in (source_port, DEFAULT_PORTS[target.scheme]):
        return f"{shown(url)} vise un autre port ({port}) que la source ({source_port})"
    return None


def follow(base: str, location: str) -> str | None:
    """A redirect's or a link's target as an absolute URL; None when unreadable."""
    try:
        return urljoin(base, location.strip())
    except ValueError:  # "http://[unclosed", and urllib's other refusals
        return None
