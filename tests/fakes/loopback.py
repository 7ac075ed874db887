"""Run a Starlette app on a real 127.0.0.1 socket in a background thread, so the real
client libraries (ollama, anthropic, httpx) talk real HTTP to it.

The server has its own event loop: a handler that sleeps (the "slow" failure mode) never
blocks the test's loop. `stop()` closes the port (connections are then refused) and
`start()` reopens the same port, so a test can take a server down and bring it back.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette


class LoopbackServer:
    def __init__(self, app: Starlette):
        self.app = app
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        if self._server is not None:
            return
        # proto=IPPROTO_TCP, so that asyncio sets TCP_NODELAY on accepted connections (it
        # checks the socket's proto, which an accepted socket copies from this one): with
        # proto 0, a response written in two parts waited for the client's delayed ACK
        # (40 ms per request, unlike a real Ollama or Anthropic server)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, log_level="warning", lifespan="off", access_log=False,
            timeout_graceful_shutdown=1, timeout_keep_alive=5,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True,
            name=f"loopback-{self.port}",
        )
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"loopback server on port {self.port} did not start")
            time.sleep(0.005)
        self._server, self._thread, self._sock = server, thread, sock

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=10)
        if self._sock is not None:
            self._sock.close()  # asyncio closed it already; this is for a failed start
        self._server = self._thread = self._sock = None

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback_fixtures(factory: Callable[[], Any], name: str) -> tuple[Any, Any]:
    """The two fixtures of a loopback fake: `<name>_session` (started once per session)
    and `<name>` (the same server, reset and running, for one test)."""

    @pytest.fixture(scope="session", name=f"{name}_session")
    def session_fixture() -> Iterator[Any]:
        fake = factory()
        fake.start()
        try:
            yield fake
        finally:
            fake.stop()

    @pytest.fixture(name=name)
    def fixture(request: pytest.FixtureRequest) -> Iterator[Any]:
        fake = request.getfixturevalue(f"{name}_session")
        fake.reset()
        fake.start()
        yield fake
        fake.reset()
        fake.start()

    return session_fixture, fixture
