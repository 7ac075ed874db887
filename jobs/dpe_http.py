"""GET a JSON document politely, for the DPE veille's sources (ADEME, geo.api.gouv.fr,
the annuaire): retry a 429 or a 5xx a bounded number of times, honouring Retry-After
(capped, so that a source asking for an hour does not stall the run), and turn every
failure into `SourceError` with a French reason — what Ludo reads when a source breaks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from jobs.http_body import BodyTooLarge, read_capped

RETRIED = frozenset({429, 500, 502, 503, 504})
MAX_BYTES = 32 * 1024 * 1024
"""An answer larger than this is refused, unread past it: an ADEME page of 10,000 DPEs is
a few megabytes, and a source streaming without end (a broken proxy) must not fill the
memory of the whole assistant."""
TOTAL_S = 120.0
"""One request's whole time, its body included: a source trickling its answer (each read
within the client's timeout) must not hold the run — and the veille's lock, which makes
every later run skip — for ever."""
_sleep = asyncio.sleep
"""Waits between attempts (tests replace it)."""


async def _get(client: httpx.AsyncClient, url: str,
               params: Mapping[str, str | int] | None,
               headers: Mapping[str, str] | None) -> tuple[httpx.Response, bytes]:
    """The answer and, for a 200, its body (at most MAX_BYTES, within TOTAL_S)."""
    async with asyncio.timeout(TOTAL_S):
        # never redirected: a same-origin `next` answered by a redirect to another host
        # would make its rows pass for the source's (a 3xx is refused by the caller)
        async with client.stream("GET", url, params=params, headers=headers,
                                 follow_redirects=False) as response:
            if response.status_code != 200:
                return response, b""
            return response, await read_capped(response, MAX_BYTES)


class SourceError(Exception):
    """A source that did not answer usefully; `str(exc)` is the French reason."""


def retry_after_s(value: str | None, default: float) -> float:
    """Retry-After in seconds (delta-seconds or an HTTP date); `default` if absent."""
    if not value:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


async def get_json(client: httpx.AsyncClient, url: str,
                   params: Mapping[str, str | int] | None = None, *, attempts: int = 3,
                   backoff_s: float = 1.0, max_wait_s: float = 30.0,
                   headers: Mapping[str, str] | None = None) -> Any:
    """The decoded JSON of a 200 answer; SourceError otherwise (after the retries)."""
    last = "aucune réponse"
    wait = 0.0
    for attempt in range(max(1, attempts)):
        if attempt:
            await _sleep(wait)
        wait = backoff_s * (2 ** attempt)
        try:
            response, body = await _get(client, url, params, headers)
        except BodyTooLarge:
            raise SourceError(f"réponse trop volumineuse (plus de {MAX_BYTES // 1024 // 1024} "
                              "Mo) : lecture arrêtée") from None
        except (httpx.TimeoutException, TimeoutError):
            last = "délai dépassé"
            continue
        except httpx.HTTPError as exc:
            last = f"connexion impossible ({type(exc).__name__})"
            continue
        if response.status_code in RETRIED:
            last = ("trop de requêtes (HTTP 429)" if response.status_code == 429
                    else f"erreur du serveur (HTTP {response.status_code})")
            wait = min(max_wait_s, retry_after_s(response.headers.get("retry-after"), wait))
            continue
        if response.status_code != 200:
            raise SourceError(f"réponse inattendue (HTTP {response.status_code})")
        try:
            return json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SourceError("réponse illisible (JSON invalide)") from None
    raise SourceError(f"{last}, après {max(1, attempts)} essais")
