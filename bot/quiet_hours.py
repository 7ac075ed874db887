"""Quiet hours: pushes Axi sends on its own wait for the morning (AXI_QUIET_HOURS,
default 21:00–07:30 Europe/Paris), except urgent alerts. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time

    @classmethod
    def parse(cls, value: str) -> QuietHours | None:
        """'21:00-07:30' → QuietHours; 'off' or '' → None. ValueError when malformed."""
        value = value.strip().lower()
        if value in {"", "off", "none", "aucune"}:
            return None
        try:
            a, b = (part.strip() for part in value.replace("–", "-").split("-"))
            start, end = time.fromisoformat(a), time.fromisoformat(b)
        except ValueError:
            raise ValueError(f"quiet hours must look like 21:00-07:30 or off, not {value!r}"
                             ) from None
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError("quiet hours are local times (AXI_TIMEZONE), without a UTC offset")
        if start == end:
            raise ValueError("quiet hours must not start and end at the same time")
        return cls(start, end)

    def hold_until(self, now: datetime) -> datetime | None:
        """When a push made at `now` (aware, local) may go; None when it may go now."""
        t = now.timetz().replace(tzinfo=None)
        if self.start < self.end:
            inside = self.start <= t < self.end
        else:  # across midnight
            inside = t >= self.start or t < self.end
        if not inside:
            return None
        end_day = now.date() if t < self.end else now.date() + timedelta(days=1)
        return datetime.combine(end_day, self.end, tzinfo=now.tzinfo)
