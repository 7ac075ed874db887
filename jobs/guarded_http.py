"""An httpx client that connects only to public addresses (or explicitly allowed
networks): the veille concurrence's way out to other people's sites.

Why at the socket: checking a host name's addresses and then letting httpx resolve the
name again to connect leaves a window (DNS rebinding: a first answer public, the second
127.0.0.1). Here the resolution IS the connection's: `GuardedBackend.connect_tcp` resolves
the name once, refuses the whole name if any of its addresses is refused
(jobs/fetch_guard.py says which), then connects to those very addresses. TLS still
verifies the certificate against the host name (httpcore passes the origin's name as SNI
and for the hostname check), and the connection pool keys connections by host name.

Every connection the client opens goes through this, whatever code asked for it; no proxy
from the environment is used (a proxy would resolve the name itself). A refused address
raises `AddressRefused`, which httpx lets through unchanged.

httpx (0.28) does not take a network backend, so `guarded_client` replaces its
transport's connection pool; if a newer httpx changes that attribute, building the client
fails loudly instead of silently losing the guard (and the tests refusing 127.0.0.1 fail).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx

from jobs.fetch_guard import IPNetwork, address_refusal, shown

Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
"""(host, port) → the IP addresses to connect to, in order."""


class AddressRefused(Exception):
    """A connection refused before it was opened; str() is the French reason."""


async def resolve_system(host: str, port: int) -> list[str]:
    """The system resolver's addresses for `host` (an IP literal resolves to itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, allowed: Iterable[IPNetwork] = (), resolve: Resolve | None = None):
        self.allowed = tuple(allowed)
        self.resolve = resolve or resolve_system
        self._inner = httpcore.AnyIOBackend()

    # the signatures are httpcore's (hence `timeout` parameters)
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = list(await self.resolve(host, port))
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"DNS resolution of {host} timed out") from None
        except OSError as exc:  # socket.gaierror: no such name (perhaps for now: retried)
            raise httpcore.ConnectError(f"DNS resolution of {host} failed: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError(f"DNS resolution of {host} gave no address")
        for address in addresses:
            refusal = address_refusal(address, self.allowed)
            if refusal is not None:
                where = refusal if address == host else f"{shown(host, 80)} → {refusal}"
                raise AddressRefused(f"connexion refusée : {where} ; la veille ne lit que des "
                                     "sites publics (AXI_VEILLE_ALLOWED_NETWORKS)")
        last: Exception | None = None
        for address in addresses:  # the checked addresses themselves: no second lookup
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address,
                                                     socket_options)
            except httpcore.ConnectError as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("connexion par socket Unix refusée")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_client(allowed: Iterable[IPNetwork] = (), *, resolve: Resolve | None = None,
                   timeout_s: float = 20.0) -> httpx.AsyncClient:
    """A client whose every connection passes `GuardedBackend`; redirects are not
    followed (the caller checks each hop, jobs/polite_fetch.py)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("httpx's transport no longer has the connection pool the address "
                           "guard replaces: update jobs/guarded_http.py")
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=False),
        network_backend=GuardedBackend(allowed, resolve),
        max_connections=10, max_keepalive_connections=5, keepalive_expiry=5.0)
    return httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=False,
                             timeout=httpx.Timeout(timeout_s))
