"""Every retry schedule of the core, in one place.

Each is "base × 2^(attempt-1), capped": a failed send, a message waiting for a model, an
unexpected error while answering, a failed fact extraction, a channel loop that died.
Keeping them together makes the delays Axi applies readable at a glance and changeable
once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    base_s: float
    cap_s: float

    def delay(self, attempt: int) -> float:
        """Seconds before attempt `attempt + 1` (attempt counts failures so far, ≥ 1)."""
        return min(self.cap_s, self.base_s * (2 ** max(attempt - 1, 0)))


SEND = Backoff(base_s=2.0, cap_s=600.0)
"""The outbox: a channel could not send (2 s, 4 s, 8 s… up to 10 min)."""
MAX_SEND_ATTEMPTS = 8

WAIT_FOR_MODEL = Backoff(base_s=15.0, cap_s=300.0)
"""A message no model may answer now: 15 s, 30 s, 60 s… up to 5 minutes."""

UNEXPECTED = Backoff(base_s=30.0, cap_s=600.0)
"""An unexpected error while answering a message (given up after MAX_UNEXPECTED)."""
MAX_UNEXPECTED_FAILURES = 5

EXTRACTION = Backoff(base_s=60.0, cap_s=3600.0)
"""Fact extraction of a souvenir that failed."""

CHANNEL_RESTART = Backoff(base_s=1.0, cap_s=300.0)
"""A channel's receiving loop that died is restarted after this."""
