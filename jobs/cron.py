"""Cron lines as Axi reads them: crontab's fields (weekday 0 or 7 = Sunday), in
Europe/Paris wall-clock time, never more often than once an hour.

Why here: APScheduler 3 numbers weekdays from Monday = 0 (so its `from_crontab` would
fire '0 9 * * 1' on Tuesdays), and a schedule like '* * * * *' would hammer public APIs
and Ludo's inbox. Every schedule Axi accepts (a veille's, the backups') goes through
`check_schedule`; the scheduler builds its triggers with `crontab_fields`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

MIN_INTERVAL = timedelta(hours=1)
"""The shortest gap allowed between two runs of one schedule."""
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_PROBE_RUNS = 400
"""Fire times examined for the minimum interval (over a year for an hourly schedule)."""


class ScheduleError(ValueError):
    """A schedule Axi refuses; the message says why and gives an example."""


def _weekday(token: str) -> int:
    token = token.strip().lower()
    if token in _WEEKDAYS:
        return _WEEKDAYS.index(token)
    day = int(token)
    if not 0 <= day <= 7:
        raise ValueError(f"weekday {day} is not 0-7")
    return day


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field (0 or 7 = Sunday, 1 = Monday…) as APScheduler 3 reads
    it: by names."""
    if field in {"*", "?"}:
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = int(step_text) if slash else 1
        if step < 1:
            raise ValueError(f"step {step} in {part!r}")
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            low, high = (_weekday(t) for t in base.split("-", 1))
            if high < low:
                raise ValueError(f"range {base!r} goes backwards")
        else:
            low = _weekday(base)
            high = 6 if slash else low
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def crontab_fields(horaire: str) -> dict[str, str]:
    """A 5-field crontab line as APScheduler's CronTrigger keyword arguments."""
    fields = str(horaire).split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields: {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return {"minute": minute, "hour": hour, "day": day, "month": month,
            "day_of_week": crontab_weekdays(weekday)}


def _wall(when: datetime, tz: str) -> datetime:
    return when.astimezone(ZoneInfo(tz)).replace(tzinfo=None)


def check_schedule(horaire: str, *, tz: str = "Europe/Paris",
                   min_interval: timedelta = MIN_INTERVAL) -> str:
    """A valid cron line, normalised; ScheduleError (one line) otherwise: wrong fields,
    a date that never comes (31 February), or two runs closer than `min_interval`."""
    horaire = " ".join(str(horaire).split())
    example = "e.g. '0 8 * * *' (every day at 08:00) or '0 7 * * 1-5' (weekdays at 07:00)"
    if len(horaire.split(" ")) != 5:
        raise ScheduleError(f"a schedule is a cron line of 5 fields (minute hour day month "
                            f"weekday), {example}, not {horaire!r}")
    fields = horaire.split(" ")
    if fields[2] not in {"*", "?"} and fields[4] not in {"*", "?"}:
        raise ScheduleError(
            f"the schedule {horaire!r} restricts both the day of the month and the weekday: "
            "crontab runs it when either matches, Axi's scheduler only when both do; keep "
            f"one of them (e.g. '{' '.join([*fields[:2], '*', fields[3], fields[4]])}')")
    try:
        trigger = CronTrigger(**crontab_fields(horaire), timezone=ZoneInfo(tz))
    except (ValueError, TypeError) as exc:
        raise ScheduleError(f"invalid schedule {horaire!r}: {exc}; {example}") from None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    previous = trigger.get_next_fire_time(None, now)
    if previous is None:
        raise ScheduleError(f"the schedule {horaire!r} never runs; {example}")
    for _ in range(_PROBE_RUNS):
        # in UTC: arithmetic on an aware Europe/Paris time is wall-clock arithmetic, which
        # the autumn night's repeated hour (02:00-02:59) turns into a zero gap
        nxt = trigger.get_next_fire_time(previous,
                                         previous.astimezone(UTC) + timedelta(seconds=1))
        if nxt is None:
            break
        repeated = _wall(nxt, tz) == _wall(previous, tz)  # fired once (scheduler.DstSafeCron)
        if not repeated and nxt.astimezone(UTC) - previous.astimezone(UTC) < min_interval:
            raise ScheduleError(
                f"the schedule {horaire!r} runs more often than once every "
                f"{int(min_interval.total_seconds() // 60)} minutes; {example}")
        previous = nxt
    return horaire
