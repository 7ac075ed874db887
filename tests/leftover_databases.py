"""Test databases a killed run left behind, dropped by the next run.

Why: each run on AXI_TEST_DATABASE_URL's server creates `axi_test_<pid>_<hex>` and drops it
at the end; a run killed (SIGKILL, a CI timeout) never reaches the end, and its database
stays on the server for ever. The next run drops those whose process is gone. Only on a
server of this machine (a loopback address or a Unix socket), where a pid means a process
here, and never a database someone is connected to (no FORCE: a live run's database is
left alone even if its pid was misjudged).
"""

from __future__ import annotations

import os
import re

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

NAME = re.compile(r"^axi_test_([0-9]+)_[0-9a-f]+$")
LOCAL_HOSTS = frozenset({None, "", "localhost", "127.0.0.1", "::1"})


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def is_local(url: URL) -> bool:
    host = url.host or url.query.get("host")
    return host in LOCAL_HOSTS or (isinstance(host, str) and host.startswith("/"))


async def drop_leftovers(admin: AsyncConnection, url: URL) -> list[str]:
    """Drop the test databases of runs whose process is gone (AUTOCOMMIT connection).
    Returns the names dropped."""
    if not is_local(url):
        return []
    names = (await admin.execute(text(
        "SELECT datname FROM pg_database WHERE datname LIKE 'axi\\_test\\_%'"))).scalars()
    dropped = []
    for name in names:
        match = NAME.match(name)
        if match is None or process_alive(int(match.group(1))):
            continue
        try:
            await admin.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        except Exception:  # in use after all, or dropped by another run meanwhile
            continue
        dropped.append(name)
    return dropped
