"""A response body read within a size cap: the veilles' one rule against an endless or
oversized answer (a broken proxy, a hostile site) filling the assistant's memory.

Why apart: the DPE sources' client (jobs/dpe_http.py) and the competitors' polite fetcher
(jobs/polite_fetch.py) both stream bodies; the cap is checked on the declared length and
again on every chunk read, in one place.
"""

from __future__ import annotations

import httpx


class BodyTooLarge(Exception):
    """The answer declared, or grew, past the cap."""


async def read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    """The whole body of a streamed response, or BodyTooLarge past `max_bytes`."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
