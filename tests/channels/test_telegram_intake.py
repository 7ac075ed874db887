"""The poller's own loop in a thread (channels/telegram_intake.py): results and errors come
back to the caller's loop, cancelling the caller cancels the work there, and it stops and
starts again cleanly (the channel is restarted by its supervisor)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from channels.telegram_intake import IntakeLoop


async def test_a_call_runs_on_the_intake_thread_and_returns_its_result_or_error() -> None:
    intake = IntakeLoop("test-intake")
    intake.start()
    try:
        async def where() -> str:
            return threading.current_thread().name

        assert await intake.call(where()) == "test-intake"

        async def fails() -> None:
            raise TimeoutError("silent poll")

        with pytest.raises(TimeoutError, match="silent poll"):
            await intake.call(fails())
    finally:
        await asyncio.to_thread(intake.stop)


async def test_cancelling_the_caller_cancels_the_work_on_the_intake_loop() -> None:
    intake = IntakeLoop("test-intake")
    intake.start()
    started, cancelled = threading.Event(), threading.Event()

    async def long_poll() -> None:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    try:
        caller = asyncio.ensure_future(intake.call(long_poll()))
        assert await asyncio.to_thread(started.wait, 5)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        assert await asyncio.to_thread(cancelled.wait, 5)
    finally:
        await asyncio.to_thread(intake.stop)


async def test_stopped_it_refuses_calls_and_starts_again() -> None:
    intake = IntakeLoop("test-intake")
    intake.start()
    spawned = threading.Event()

    async def placeholder() -> None:
        await asyncio.sleep(30)

    async def spawn() -> None:
        intake.spawn(placeholder())
        spawned.set()

    await intake.call(spawn())
    assert spawned.is_set() and len(intake.tasks) == 1
    await asyncio.to_thread(intake.stop)
    assert not intake.running

    async def nothing() -> int:
        return 1

    with pytest.raises(RuntimeError, match="not running"):
        await intake.call(nothing())
    intake.start()
    try:
        assert intake.running and await intake.call(nothing()) == 1
    finally:
        await asyncio.to_thread(intake.stop)
