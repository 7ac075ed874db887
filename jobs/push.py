"""Uptime Kuma push monitors (issue 13 §2): after each success (a veille run, a backup, a
verification) Axi pings a push URL (AXI_PUSH_URL_VEILLES, _BACKUP, _VERIFY), so that a
monitor hosted elsewhere notices when the pings stop — Axi stopped, or the whole server
is down, which no check on the server itself can report.

Uptime Kuma's push API: `GET <push URL>?status=up|down&msg=…&ping=<ms>`, answered
`{"ok": true}`. The URL embeds the monitor's token: it is never logged (failures are
logged by their kind only), and a ping never raises into the run that succeeded — a
monitor that cannot be reached is the monitor's problem, not the veille's.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import SecretStr

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
MAX_MESSAGE_CHARS = 200


def push_url(base: str, *, ok: bool, message: str, duration_s: float | None) -> str:
    """The push URL with Uptime Kuma's parameters (pure). The URL Kuma shows already ends
    with `?status=up&msg=OK&ping=`: those are replaced, any other parameter is kept."""
    parts = urlsplit(base.strip())
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k not in {"status", "msg", "ping"}]
    query += [("status", "up" if ok else "down"),
              ("msg", " ".join(message.split())[:MAX_MESSAGE_CHARS] or ("OK" if ok else "KO")),
              ("ping", "" if duration_s is None else str(max(0, round(duration_s * 1000))))]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


async def ping(url: SecretStr | None, *, ok: bool, message: str,
               duration_s: float | None = None,
               transport: httpx.AsyncBaseTransport | None = None) -> bool:
    """Tell the push monitor at `url` (None or empty: not configured, nothing done) that
    something succeeded (`ok`) or failed, with a short message and how long it took.
    True when the monitor acknowledged it; never raises."""
    if url is None or not url.get_secret_value().strip():
        return False
    try:
        target = push_url(url.get_secret_value(), ok=ok, message=message,
                          duration_s=duration_s)
        async with httpx.AsyncClient(timeout=TIMEOUT_S, transport=transport) as client:
            response = await client.get(target)
        if response.status_code >= 400:
            log.warning("push monitor answered HTTP %s (URL not shown: it holds the "
                        "monitor's token)", response.status_code)
            return False
        try:
            acknowledged = bool(response.json().get("ok", True))
        except (ValueError, AttributeError):
            acknowledged = True  # not Uptime Kuma's JSON, but a 2xx
        if not acknowledged:
            log.warning("push monitor refused the ping (inactive or unknown monitor?)")
        return acknowledged
    except Exception as exc:  # never into the run that succeeded; never the URL
        log.warning("push monitor unreachable (%s)", type(exc).__name__)
        return False
