"""Tests wait for the event they mean, never for a fixed time.

`until` polls a condition (a plain or async callable) until it holds and returns its value,
or fails the test with `message` after `within` seconds. The deadline only bounds a broken run: a
passing test waits exactly as long as the event takes. `until_sync` is the same for plain
(non-async) tests.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

POLL_S = 0.02


async def until(predicate: Callable[[], Any], within: float = 30.0, *,
                message: str = "", interval: float = POLL_S) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"still false after {within} s: {_name(predicate)}")
        await asyncio.sleep(interval)


def until_sync(predicate: Callable[[], T], within: float = 30.0, *, message: str = "",
               interval: float = POLL_S) -> T:
    deadline = time.monotonic() + within
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(message or f"still false after {within} s: {_name(predicate)}")
        time.sleep(interval)
    return value


def _name(predicate: Callable[..., object]) -> str:
    return getattr(predicate, "__qualname__", repr(predicate))
