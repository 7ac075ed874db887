"""A TCP proxy a test can cut and restore: Axi talks to PostgreSQL through it, and the
test takes "the database" away without touching the server itself (the suite's second
pass runs on a shared PostgreSQL that must never be stopped).

`cut()` closes the listening socket and every connection passing through (clients see
their connections drop, new ones refused); `restore()` listens again on the same port.
Upstream is a TCP address or a Unix socket path (the embedded PostgreSQL listens on a
Unix socket only). Runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from sqlalchemy.engine import URL, make_url

CHUNK = 65536


class TcpProxy:
    def __init__(self, upstream: tuple[str, int] | Path):
        self.upstream = upstream
        self.port = 0
        self._server: asyncio.Server | None = None
        self._streams: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.connections = 0

    @classmethod
    def for_database(cls, url: URL | str) -> TcpProxy:
        """A proxy to the server of a SQLAlchemy URL (TCP host, or `?host=/socket/dir`)."""
        parsed = make_url(url) if isinstance(url, str) else url
        host = parsed.host or parsed.query.get("host")
        port = parsed.port or int(parsed.query.get("port") or 5432)  # type: ignore[arg-type]
        assert isinstance(host, str), "no host in the database URL"
        if host.startswith("/"):
            return cls(Path(host) / f".s.PGSQL.{port}")
        return cls((host, port))

    def url_for(self, url: URL | str) -> str:
        """The same database URL, through this proxy (TCP on 127.0.0.1)."""
        parsed = make_url(url) if isinstance(url, str) else url
        query = {k: v for k, v in parsed.query.items() if k not in {"host", "port"}}
        proxied = parsed.set(host="127.0.0.1", port=self.port, query=query,
                             drivername="postgresql")
        return proxied.render_as_string(hide_password=False)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # no new connection from now on
        for writer in list(self._streams):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        for task in list(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        self._streams.clear()
        if server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 5)

    async def restore(self) -> None:
        if self._server is None:
            await self.start()

    async def close(self) -> None:
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if isinstance(self.upstream, Path):
                up_reader, up_writer = await asyncio.open_unix_connection(str(self.upstream))
            else:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._streams |= {writer, up_writer}
        pumps = {asyncio.ensure_future(self._pump(reader, up_writer)),
                 asyncio.ensure_future(self._pump(up_reader, writer))}
        self._pumps |= pumps
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self._pumps -= pumps
            self._streams -= {writer, up_writer}

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ConnectionError):
            while data := await reader.read(CHUNK):
                writer.write(data)
                await writer.drain()
