"""Telegram's pace: the intervals the channel waits on (`Pace`, injectable so tests never
wait for real) and the limiter that keeps Telegram's limits — about one message a second
per chat, twenty a minute in a group, thirty a second overall.

Why apart from channels/telegram_send.py: the sender and the live view (typing, drafts)
both wait on it, and the rule (a chat's gap counted from the previous answer) is one.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Pace:
    """Every interval the channel waits on, injectable so tests never wait for real."""

    per_chat_s: float = 1.1        # ≈ 1 message a second per chat, with a margin (Telegram
                                   # counts arrivals; requests do not all take as long)
    per_group_s: float = 3.1       # a group: at most 20 messages a minute
    overall_per_s: int = 30        # ≈ 30 messages a second overall
    typing_every_s: float = 4.0    # "typing…" lasts ~5 s: renew it before
    typing_max_s: float = 180.0    # never type for ever (a message that got no reply)
    draft_every_s: float = 1.0     # at most one draft update a second
    draft_refresh_s: float = 20.0  # a draft is a ~30 s preview: refresh it while slow
    edit_every_s: float = 1.5      # where drafts fail: edit one message, at this pace


def chat_of(conversation: str) -> int | None:
    """'telegram:1001' → 1001 (a private chat is the user's id)."""
    _, _, rest = conversation.partition(":")
    rest = rest.split(":", 1)[0]
    try:
        return int(rest)
    except ValueError:
        return None


class RateLimiter:
    """Waits so that a chat gets at most one message per `per_chat_s` (`per_group_s` for a
    group: its id is negative) and the bot at most `overall_per_s` a second."""

    def __init__(self, pace: Pace, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.pace = pace
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._sleep = sleep
        self._last: dict[int, float] = {}
        self._recent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    def chat_pause(self, chat_id: int) -> float:
        """How long this chat must still wait before its next message (0: now)."""
        if chat_id not in self._last:
            return 0.0
        return max(0.0, self._last[chat_id] + self._gap(chat_id) - self._clock())

    def _gap(self, chat_id: int) -> float:
        return self.pace.per_group_s if chat_id < 0 else self.pace.per_chat_s

    async def wait(self, chat_id: int) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                while self._recent and now - self._recent[0] >= 1.0:
                    self._recent.popleft()
                pause = 0.0
                if chat_id in self._last:
                    pause = max(pause, self._last[chat_id] + self._gap(chat_id) - now)
                if len(self._recent) >= self.pace.overall_per_s:
                    pause = max(pause, self._recent[0] + 1.0 - now)
                if pause <= 0:
                    break
                await self._sleep(pause)
            self._last[chat_id] = now
            self._recent.append(now)

    def done(self, chat_id: int) -> None:
        """The request let go by `wait` has its answer (or failed): the chat's next one
        waits its gap from now. Telegram counts arrivals, and a request held up on its
        way (a loaded machine, the outbox's write just before it) arrived less than the
        gap before the next one, let go on time: a 429. From the answer, never: it came
        after the request arrived."""
        self._last[chat_id] = max(self._last.get(chat_id, float("-inf")), self._clock())
