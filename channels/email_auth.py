"""Is a mail really from its From address? Our own mail server's word, nothing else.

Anyone can write `From: ludo@icidordogne.fr`. Axi identifies an email sender only when our
MX vouches for the From domain: it checked DMARC (SPF or DKIM aligned with the From
domain) and prepended an `Authentication-Results` header (RFC 8601) with its authserv-id.
The rules, kept in this one module so they are read and tested in one place:

- only the topmost `Authentication-Results` header counts (the one our MX prepended; any
  lower one came with the message and says what the sender wants);
- it counts only when its authserv-id is ours, and it must hold `dmarc=pass` with a
  `header.from` equal to the domain of the message's single From address;
- a lower header bearing our authserv-id is a forgery attempt (`forged`), never counted.

Parsing is `authres` with its DMARC extension (so `header.from` is read from the dmarc
result). Pure, no I/O; nothing here raises.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import authres
import authres.dmarc

__all__ = ["MAX_HEADER_CHARS", "AuthVerdict", "authserv_id_of", "verify_authentication"]

# authres rewrites its input string at every token (quadratic): longer is refused.
MAX_HEADER_CHARS = 8192


@dataclass(frozen=True)
class AuthVerdict:
    verified: bool  # True only if OUR server vouches (dmarc=pass aligned with the From domain)
    reason: str  # short English, e.g. "dmarc=pass by mx.icidordogne.fr"
    forged: bool = False  # a lower header carries our authserv-id: someone inserted it


@functools.cache
def _features() -> Any:
    return authres.FeatureContext(authres.dmarc)


def _parse(value: str) -> Any:
    return _features().parse_value(value)


_LEADING_ID = re.compile(r"^\s*(?:\((?:[^()\\]|\\.)*\)\s*)*([^\s;()]+)")


def _normal_domain(domain: str) -> str:
    domain = domain.strip().strip('"').lower().rstrip(".")
    domain = domain.rpartition("@")[2]
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return domain


def authserv_id_of(value: str) -> str | None:
    """The authserv-id of an Authentication-Results value, lower-case: parsed when
    possible, else its first token (a malformed forgery still names whom it claims)."""
    if len(value) <= MAX_HEADER_CHARS:
        try:
            return str(_parse(value).authserv_id).lower()
        except Exception:
            pass
    match = _LEADING_ID.match(value[:MAX_HEADER_CHARS])
    return match.group(1).lower() if match else None


def _header_from_values(result: Any) -> list[str]:
    return [
        _normal_domain(str(prop.value or ""))
        for prop in getattr(result, "properties", None) or ()
        if getattr(prop, "type", "") == "header" and getattr(prop, "name", "") == "from"
    ]


def verify_authentication(
    values: Sequence[str], *, authserv_id: str, from_domain: str | None, from_problem: str | None = None
) -> AuthVerdict:
    """The verdict on a message from its `Authentication-Results` values in header order
    (unfolded), our `authserv_id`, the domain of its From address (None if unusable) and
    why the From is unusable (e.g. "more than one From address")."""
    ours = authserv_id.strip().lower().rstrip(".")
    forged = bool(ours) and any((authserv_id_of(v) or "").rstrip(".") == ours for v in values[1:])

    def verdict(verified: bool, reason: str) -> AuthVerdict:
        return AuthVerdict(verified=verified, reason=reason, forged=forged)

    if not values:
        return verdict(False, "no Authentication-Results")
    topmost = values[0]
    if len(topmost) > MAX_HEADER_CHARS:
        return verdict(False, "topmost Authentication-Results too long to parse")
    try:
        header = _parse(topmost)
    except Exception as error:
        return verdict(False, f"unparsable topmost Authentication-Results ({type(error).__name__})")
    their_id = str(header.authserv_id or "").lower().rstrip(".")
    if not ours or their_id != ours:
        return verdict(False, f"topmost Authentication-Results is from {their_id[:100]}")
    if from_domain is None or from_problem is not None:
        return verdict(False, from_problem or "unparsable From")
    domain = _normal_domain(from_domain)
    dmarc = [r for r in header.results if str(getattr(r, "method", "")).lower() == "dmarc"]
    if not dmarc:
        return verdict(False, "no dmarc result")
    aligned = [r for r in dmarc if _header_from_values(r) == [domain]]
    for result in aligned:
        outcome = str(result.result or "").lower()
        if outcome != "pass":  # a pass next to a fail for the same domain: not vouched for
            return verdict(False, f"dmarc={outcome[:40]}")
    if aligned:
        return verdict(True, f"dmarc=pass by {ours}")
    first = dmarc[0]
    outcome = str(first.result or "").lower()
    if outcome != "pass":
        return verdict(False, f"dmarc={outcome[:40]}")
    found = _header_from_values(first)
    if not found or not any(found):
        return verdict(False, "dmarc=pass without header.from")
    return verdict(False, f"header.from {', '.join(found)[:100]} != From domain {domain}")
