"""The veilles' scheduler (jobs/scheduler.py): cron times in Europe/Paris across the DST
days, one catch-up run per missed veille at start (never one per missed day), jobs
rebuilt when a veille changes, a fired schedule recorded as such, a run interrupted by a
stop recorded as failed, and the scheduler supervised and shown in /health by Axi."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import text

from jobs.scheduler import VeilleScheduler, fire_times, last_fire_at_or_before
from tests.bot.conftest import assistant
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.ollama_server import FakeOllama
from tests.jobs.conftest import Env
from tests.waiting import until

PARIS = ZoneInfo("Europe/Paris")


def local_day(y: int, m: int, d: int) -> tuple[datetime, datetime]:
    return (datetime(y, m, d, tzinfo=PARIS),
            datetime(y, m, d, tzinfo=PARIS) + timedelta(days=1) - timedelta(microseconds=1))


def test_a_daily_schedule_fires_once_at_its_local_time_on_both_dst_days() -> None:
    for day, offset in (((2026, 3, 29), 2), ((2026, 10, 25), 1)):
        times = fire_times("0 8 * * *", PARIS, *local_day(*day))
        assert len(times) == 1, times
        assert times[0].astimezone(PARIS).hour == 8
        assert times[0].utcoffset() == timedelta(hours=offset)
    around = fire_times("0 8 * * *", PARIS, datetime(2026, 3, 27, tzinfo=PARIS),
                        datetime(2026, 3, 31, 23, 0, tzinfo=PARIS))
    assert [t.astimezone(PARIS).strftime("%d %H:%M") for t in around] == [
        "27 08:00", "28 08:00", "29 08:00", "30 08:00", "31 08:00"]


def test_a_time_skipped_or_repeated_by_dst_fires_once() -> None:
    march = fire_times("30 2 * * *", PARIS, *local_day(2026, 3, 29))
    assert len(march) == 1  # 02:30 does not exist that night: once, at 03:30 CEST
    assert march[0].astimezone(UTC) == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    october = fire_times("30 2 * * *", PARIS, *local_day(2026, 10, 25))
    assert len(october) == 1  # 02:30 happens twice that night: once
    days = fire_times("30 2 * * *", PARIS, datetime(2026, 10, 24, tzinfo=PARIS),
                      datetime(2026, 10, 27, tzinfo=PARIS))
    assert [t.astimezone(PARIS).day for t in days] == [24, 25, 26]


def test_the_last_schedule_before_now() -> None:
    now = datetime(2026, 11, 30, 9, 0, tzinfo=PARIS)
    assert last_fire_at_or_before("0 8 * * *", PARIS, now) == datetime(2026, 11, 30, 8, 0,
                                                                      tzinfo=PARIS)
    assert last_fire_at_or_before("0 8 * * *", PARIS, now.replace(hour=7)) == datetime(
        2026, 11, 29, 8, 0, tzinfo=PARIS)
    assert last_fire_at_or_before("0 9 * * 1", PARIS, now.replace(hour=8)) == datetime(
        2026, 11, 23, 9, 0, tzinfo=PARIS)  # a Monday schedule, looked for a week back
    assert last_fire_at_or_before("0 0 1 1 *", PARIS, now) == datetime(2026, 1, 1,
                                                                       tzinfo=PARIS)


async def _set(env: Env, sql: str, **params: object) -> None:
    async with env.store.db.sessions.begin() as session:
        await session.execute(text(sql), params)


async def test_a_missed_schedule_runs_once_at_start(env: Env) -> None:
    env.clock.now = datetime.now(UTC)
    env.source.items = [{"key": "a", "titre": "Maison a"}]
    for nom in ("deja", "absente3j", "inactive", "nouvelle"):
        await env.store.add_veille(nom, "essai", "0 8 * * *", config={"url": env.url},
                                   active=nom != "inactive")
    await _set(env, "UPDATE veilles SET cree_le = now() - interval '10 days' "
                    "WHERE nom <> 'nouvelle'")
    due = last_fire_at_or_before("0 8 * * *", PARIS, env.clock.now)
    assert due is not None
    deja = await env.store.get_veille("deja")
    run = await env.store.start_run(deja.id, declenchement="planifie", prevu_pour=due)
    await env.store.finish_run(run, "ok")
    absente = await env.store.get_veille("absente3j")
    old = await env.store.start_run(absente.id, declenchement="planifie",
                                    prevu_pour=due - timedelta(days=3))
    await env.store.finish_run(old, "ok")
    await _set(env, "UPDATE passages_veille SET debut = :d WHERE id = :i",
               d=due - timedelta(days=3), i=old)
    skipped = await env.store.start_run(absente.id, declenchement="planifie", prevu_pour=due,
                                        etat="ignore")  # skipped for the lock: not a run
    assert skipped

    scheduler = VeilleScheduler(poll_s=3600)
    await scheduler.start(env.services)
    try:
        await until(lambda: not scheduler.running, message="catch-up runs still running")
        assert sorted(scheduler.last_results) == ["absente3j", "essai"]
        for nom in ("absente3j", "essai"):
            veille = await env.store.get_veille(nom)
            runs = [r for r in await env.store.run_history(veille.id) if r.etat != "ignore"]
            assert runs[0].declenchement == "rattrapage" and runs[0].prevu_pour == due
            assert len([r for r in runs if r.declenchement == "rattrapage"]) == 1
        assert await scheduler.catch_up() == []  # started again: nothing more to catch up
    finally:
        await scheduler.stop()


async def test_jobs_follow_the_table_and_a_fired_schedule_is_recorded(env: Env) -> None:
    env.clock.now = datetime.now(UTC)
    env.source.items = [{"key": "a", "titre": "Maison a"}]
    scheduler = VeilleScheduler(poll_s=0.05)
    await scheduler.start(env.services)
    aps = scheduler.scheduler
    assert aps is not None
    try:
        loop = asyncio.create_task(scheduler.run())
        job = aps.get_job("veille:essai")
        assert job is not None and job.coalesce and job.max_instances == 1
        assert job.next_run_time.astimezone(PARIS).strftime("%H:%M") == "08:00"
        await env.store.edit_veille("essai", horaire="15 7 * * 1-5")
        await until(lambda: aps.get_job("veille:essai").next_run_time
                    .astimezone(PARIS).strftime("%H:%M") == "07:15")
        await env.store.add_veille("autre", "essai", "0 6 * * *", config={"url": env.url})
        await until(lambda: aps.get_job("veille:autre") is not None)
        await env.store.edit_veille("autre", active=False)
        await until(lambda: aps.get_job("veille:autre") is None)

        aps.modify_job("veille:essai", next_run_time=datetime.now(PARIS))
        await until(lambda: "essai" in scheduler.last_results)
        run = (await env.store.run_history(1))[0]
        assert (run.etat, run.declenchement) == ("ok", "planifie")
        assert run.prevu_pour == last_fire_at_or_before("15 7 * * 1-5", PARIS, env.clock.now)
        assert scheduler.describe()["last"] == {"essai": "ok"}
        loop.cancel()
    finally:
        await scheduler.stop()


async def test_stopping_during_a_run_records_it_as_interrupted(env: Env) -> None:
    env.source.delay_s = 1.0
    scheduler = VeilleScheduler(poll_s=3600)
    await scheduler.start(env.services)
    scheduler._launch("essai", "manuel", None)
    await until(lambda: env.source.user_agents)
    await scheduler.stop()
    run = (await env.store.run_history(1))[0]
    assert run.etat == "echec" and (run.erreur or "").startswith("interrompu")


async def test_axi_starts_supervises_and_shows_the_jobs(
        db: object, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> None:
    async with assistant(db, database_url, test_data_dir, ollama_server,  # type: ignore[arg-type]
                         anthropic_server) as app:
        await app.store.add_veille("dpe", "dpe", "0 8 * * *")
        await app.store.add_veille("dvf", "dvf", "0 9 * * 1")
        scheduler = VeilleScheduler(poll_s=3600)
        app.jobs = [scheduler]
        await app.start_jobs()
        health = await app.health()
        assert health["components"]["scheduler"]["veilles"]["state"] == "ok"
        assert set(health["components"]["scheduler"]["veilles"]["next_runs"]) == {"dpe", "dvf"}
        assert health["status"] == "ok"
    assert scheduler.scheduler is None  # stopped with Axi


def test_weekdays_are_read_as_crontab_numbers_them() -> None:
    from jobs.cron import crontab_weekdays

    assert crontab_weekdays("1") == "mon"
    assert crontab_weekdays("0") == crontab_weekdays("7") == "sun"
    assert crontab_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert crontab_weekdays("5-7") == "sun,fri,sat"
    assert crontab_weekdays("*/2") == "sun,tue,thu,sat"
    assert crontab_weekdays("MON,wed") == "mon,wed"
    monday = fire_times("0 9 * * 1", PARIS, datetime(2026, 11, 23, tzinfo=PARIS),
                        datetime(2026, 11, 30, 23, 0, tzinfo=PARIS))
    assert [t.strftime("%a %d") for t in monday] == ["Mon 23", "Mon 30"]


def test_a_schedule_runs_at_most_hourly_and_must_run_at_all() -> None:
    import pytest

    from jobs.cron import ScheduleError, check_schedule

    assert check_schedule(" 0  8 * * * ") == "0 8 * * *"
    assert check_schedule("0 * * * *") == "0 * * * *"  # hourly: the limit, accepted
    assert check_schedule("0 7 * * 1-5") == "0 7 * * 1-5"
    for too_often in ("* * * * *", "*/30 * * * *", "0,30 8 * * *", "59 7 * * *\t"):
        if too_often.strip() == "59 7 * * *":
            assert check_schedule(too_often) == "59 7 * * *"
            continue
        with pytest.raises(ScheduleError, match="more often than once every 60 minutes"):
            check_schedule(too_often)
    with pytest.raises(ScheduleError, match="never runs"):
        check_schedule("0 8 30 2 *")
    with pytest.raises(ScheduleError, match="5 fields"):
        check_schedule("0 8 * *")
    with pytest.raises(ScheduleError, match="invalid schedule"):
        check_schedule("0 8 * * 9")


def test_a_daily_schedule_in_the_night_s_repeated_hour_is_accepted() -> None:
    """02:00-02:59 happens twice on the autumn DST night; the scheduler fires such a time
    once (DstSafeCron), so '30 2 * * *' (a natural backup time) runs daily, not twice."""
    import pytest

    from jobs.cron import ScheduleError, check_schedule

    for daily in ("30 2 * * *", "0 2 * * *", "59 2 * * 0"):
        assert check_schedule(daily) == daily
    with pytest.raises(ScheduleError, match="more often"):
        check_schedule("*/30 2 * * *")
