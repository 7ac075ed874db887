"""Backups with the real things (issue 13): restic 0.14 with repositories in a temp
directory, pg_dump/pg_restore 16 from pgserver, the database under test (the embedded
PostgreSQL 16, or the PostgreSQL 15 server in the second pass: there, every restore below
is pg_restore 16 into PostgreSQL 15), scratch and fresh databases on the same server.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bot.config import Settings
from jobs import pg_tools
from jobs.backup import Backups
from jobs.backup_rules import FOLDER, BackupError, Manifest, Target, libpq_target
from jobs.restic import Restic, repository_env
from memory.store import MemoryStore
from tests.fakes.kuma_server import FakeKuma
from tests.jobs.conftest import Clock, job_services

OPERATIONS = "public.operations"


@dataclass
class Kit:
    store: MemoryStore
    tmp: Path
    env: dict[str, str]
    clock: Clock

    @property
    def repository(self) -> Path:
        return self.tmp / "depot-local"

    def settings(self, **values: Any) -> Settings:
        base = {"AXI_BACKUP_REPOSITORY": str(self.repository),
                "AXI_DATA_DIR": str(self.tmp / "data")}
        return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]

    def backups(self, *, env: dict[str, str] | None = None, **values: Any) -> Backups:
        services = job_services(self.store, self.clock)
        return Backups(self.store, self.settings(**values), notify=services.notify,
                       clock=self.clock, env=env or self.env, lock_wait_s=2)

    def restic(self, depot: str = "local", location: Path | None = None) -> Restic:
        where = str(location or self.repository)
        return Restic(where, depot, env=repository_env(where, self.env, dotenv=None))

    async def notifications(self) -> list[tuple[str, str]]:
        async with self.store.db.sessions() as session:
            return [(r.cle, r.destinataire) for r in (await session.execute(text(
                "SELECT cle, destinataire FROM notifications ORDER BY id"))).all()]


@pytest.fixture
async def kit(store: MemoryStore, tmp_path: Path) -> Kit:
    await store.add_person("Ludo", relation="créateur", identities=[("telegram", "1001")])
    await store.add_person("Anthony", relation="administrateur",
                           identities=[("telegram", "1002")])
    for i in range(40):
        await store.remember(f"Visite n°{i} d'une longère à Vergt, DPE {'ABCDEFG'[i % 7]} — "
                             f"prix demandé {150_000 + i * 1000} €", type="note",
                             metadata={"rang": i, "accents": "éèàç"})
    await store.add_fact("Ludo", "habite à", "Peyrebrune", relation_id=1)
    env = {**os.environ, "RESTIC_PASSWORD": secrets.token_hex(12),
           "RESTIC_CACHE_DIR": str(tmp_path / "cache")}
    return Kit(store, tmp_path, env, Clock(datetime.now(UTC)))


def live_target(store: MemoryStore) -> Target:
    url = store.db.engine.url.render_as_string(hide_password=False)
    return libpq_target(url.replace("+asyncpg", ""))


@pytest.fixture
async def fresh(store: MemoryStore) -> AsyncIterator[tuple[str, Target]]:
    """A new empty database on the server under test, dropped afterwards."""
    name = f"axi_restore_{secrets.token_hex(4)}"
    live = live_target(store)
    conn = await pg_tools.connect(live)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = store.db.engine.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url.replace("+asyncpg", ""), live.with_database(name)
    finally:
        conn = await pg_tools.connect(live)
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def without_operations(stats: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in stats.items() if name != OPERATIONS}


async def scratch_left(store: MemoryStore) -> list[str]:
    return await pg_tools.leftover_scratches(live_target(store))


# ---------------------------------------------------------------------------- the path
async def test_backup_then_verify_then_restore_into_a_fresh_database_is_identical(
        kit: Kit, fresh: tuple[str, Target]) -> None:
    backups = kit.backups()
    report = await backups.backup()
    assert report.ok, report.outcomes
    [local] = report.outcomes
    assert local.snapshot and local.operation is not None and local.operation.etat == "ok"
    assert any("initialised" in note for note in local.notes)  # first use, said so
    assert local.operation.details["tables"]["public.souvenirs"] == 40
    manifest = report.manifest
    assert manifest is not None and manifest.server_version.split(".")[0] in {"15", "16"}
    assert (await pg_tools.tool_version()).startswith("16.")
    live_now = await pg_tools.stats_of(live_target(kit.store))
    assert without_operations(manifest.tables) == without_operations(live_now)
    assert len(await kit.restic().snapshots()) == 1
    assert not (kit.tmp / "data" / "sauvegardes-travail" / "sauvegarde").exists()

    checked = await backups.verify()
    assert checked.ok, checked.outcomes
    assert "identical to the backup" in checked.outcomes[0].notes[0]
    assert checked.outcomes[0].snapshot == local.snapshot
    assert await scratch_left(kit.store) == []

    url, target = fresh
    plan = await backups.plan_restore("latest", url)
    assert plan.existing == [] and plan.sessions == 0
    counts = await backups.restore(plan)
    restored = await pg_tools.stats_of(target)
    assert without_operations(restored) == without_operations(live_now)  # counts and checksums
    assert counts["public.souvenirs"] == 40
    assert restored[OPERATIONS].rows == manifest.tables[OPERATIONS].rows + 1  # the restore
    assert await kit.notifications() == []  # all went well: nobody alerted


async def test_verify_catches_a_damaged_pack_alerts_once_and_once_on_recovery(
        kit: Kit) -> None:
    fake = FakeKuma(known={"s3cretT0ken"})
    hits = fake.pings
    with fake.server() as kuma:
        backups = kit.backups(AXI_PUSH_URL_VERIFY=f"{kuma.url}/api/push/s3cretT0ken?status=up")
        assert (await backups.backup()).ok
        pack = max((p for p in (kit.repository / "data").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
        original = pack.read_bytes()
        damage(pack)

        failed = await backups.verify()
        assert not failed.ok and failed.outcomes[0].error is not None
        assert failed.outcomes[0].error.kind == "corrompu"
        assert failed.outcomes[0].operation is not None
        assert failed.outcomes[0].operation.etat == "echec"
        assert hits == []  # pinged after success only
        first = await kit.notifications()
        assert sorted(who for _, who in first) == ["Anthony", "Ludo"]
        assert all(":verification:local:echec:" in key for key, _ in first)
        assert not (await backups.verify()).ok
        assert await kit.notifications() == first  # not at every run

        pack.chmod(0o600)
        pack.write_bytes(original)
        recovered = await backups.verify()
        assert recovered.ok, recovered.outcomes
        assert [(h["token"], h["status"]) for h in hits] == [("s3cretT0ken", "up")]
        assert hits[0]["msg"].startswith("verification ok : local ")
        news = (await kit.notifications())[len(first):]
        assert sorted(who for _, who in news) == ["Anthony", "Ludo"]
        assert all(":verification:local:retour:" in key for key, _ in news)
        assert (await backups.verify()).ok
        assert len(await kit.notifications()) == 4 and len(hits) == 2
        assert await scratch_left(kit.store) == []


def damage(pack: Path) -> None:
    pack.chmod(0o600)
    data = bytearray(pack.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    pack.write_bytes(bytes(data))


async def test_a_restored_copy_that_differs_from_its_manifest_fails_and_drops_its_scratch(
        kit: Kit) -> None:
    """A snapshot whose manifest does not match its dump: the verification says which
    table differs, and the scratch database is dropped all the same."""
    backups = kit.backups()
    assert (await backups.backup()).ok
    folder = kit.tmp / "forged" / FOLDER
    folder.mkdir(parents=True)
    manifest = await pg_tools.dump(live_target(kit.store), folder / "axi.dump")
    stats = dict(manifest.tables)
    souvenirs = stats["public.souvenirs"]
    stats["public.souvenirs"] = type(souvenirs)(souvenirs.rows + 1, souvenirs.newest)
    forged = Manifest(stats, manifest.server_version, "", manifest.dump_bytes,
                      manifest.dump_sha256)
    (folder / "manifeste.json").write_text(forged.to_json())
    await kit.restic().backup(folder.parent, FOLDER)

    report = await backups.verify()
    assert not report.ok
    error = report.outcomes[0].error
    assert error is not None and error.kind == "different"
    assert "public.souvenirs : 40 lignes restaurées, 41 sauvegardées" in error.fr
    assert await scratch_left(kit.store) == []


# ---------------------------------------------------------------------------- bad input
async def test_a_wrong_password_stores_nothing_and_alerts_once_then_once_on_recovery(
        kit: Kit, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeKuma(known={"t0pS3cret"})
    hits = fake.pings
    with fake.server() as kuma:
        secret_url = f"{kuma.url}/api/push/t0pS3cret?status=up&msg=OK&ping="
        good = kit.backups(AXI_PUSH_URL_BACKUP=secret_url)
        assert (await good.backup()).ok
        assert [h["token"] for h in hits] == ["t0pS3cret"]
        wrong = kit.backups(env={**kit.env, "RESTIC_PASSWORD": "pas-le-bon"},
                            AXI_PUSH_URL_BACKUP=secret_url)
        for _ in range(2):
            report = await wrong.backup()
            error = report.outcomes[0].error
            assert error is not None and error.kind == "mot_de_passe"
            assert "wrong restic password" in error.en
        assert len(await kit.restic().snapshots()) == 1
        assert len(hits) == 1  # failures never ping
        alerts = await kit.notifications()
        assert len(alerts) == 2 and all(":sauvegarde:local:echec:" in k for k, _ in alerts)
        assert (await good.backup()).ok
        assert len(await kit.notifications()) == 4 and len(hits) == 2
        kuma.stop()
        assert (await good.backup()).ok  # the monitor down: the backup is still good
    assert "push monitor unreachable" in caplog.text
    assert "t0pS3cret" not in caplog.text


async def test_a_pg_dump_that_fails_stores_no_snapshot(kit: Kit) -> None:
    backups = kit.backups()
    assert (await backups.backup()).ok
    async with kit.store.db.engine.connect() as conn, conn.begin():  # a migration, say
        await conn.execute(text("LOCK TABLE souvenirs IN ACCESS EXCLUSIVE MODE"))
        report = await backups.backup()
    assert not report.ok
    error = report.outcomes[0].error
    assert error is not None and error.kind == "verrou_base", error
    assert len(await kit.restic().snapshots()) == 1  # still only the first
    op = report.outcomes[0].operation
    assert op is not None and op.etat == "echec" and op.instantane is None
    assert not (kit.tmp / "data" / "sauvegardes-travail" / "sauvegarde").exists()


async def test_a_missing_password_or_repository_is_said_before_anything(kit: Kit) -> None:
    env = {k: v for k, v in kit.env.items() if not k.startswith("RESTIC_PASSWORD")}
    with pytest.raises(BackupError, match=r"RESTIC_PASSWORD .* is not set"):
        kit.backups(env=env).check_configured()
    with pytest.raises(BackupError, match="AXI_BACKUP_REPOSITORY is not set"):
        await kit.backups(AXI_BACKUP_REPOSITORY="").backup()
    assert await kit.store.list_operations() == []


async def test_a_vanished_repository_that_held_backups_is_not_silently_recreated(
        kit: Kit) -> None:
    backups = kit.backups()
    assert (await backups.backup()).ok
    shutil.move(kit.repository, kit.tmp / "ailleurs")  # the second disk not mounted
    report = await backups.backup()
    error = report.outcomes[0].error
    assert error is not None and error.kind == "pas_de_depot" and "mounted" in error.en
    assert not kit.repository.exists()


async def test_a_stale_lock_is_named_with_how_to_remove_it(kit: Kit) -> None:
    backups = kit.backups()
    assert (await backups.backup()).ok
    pid = stale_lock(kit)
    report = await backups.backup()
    error = report.outcomes[0].error
    assert error is not None and error.kind == "verrou"
    assert f"locked by restic process {pid}" in error.en and "axi backup unlock" in error.en
    assert not (await backups.verify()).ok  # check needs the repository to itself
    unlocked = await backups.unlock()
    assert "removed" in unlocked["local"]
    assert (await backups.backup()).ok and (await backups.verify()).ok


def stale_lock(kit: Kit) -> int:
    """A restic killed while it held the repository's lock (its PID is gone)."""
    env = repository_env(str(kit.repository), kit.env, dotenv=None)
    proc = subprocess.Popen(["restic", "backup", "--stdin", "--stdin-filename", "x"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        from tests.waiting import until_sync

        def written() -> bool:
            """A lock file restic can read back: killed while it is being written, a
            half lock is not one (the next restic ignores it, and the test saw no lock)."""
            return any(subprocess.run(["restic", "cat", "lock", lock.name, "--no-lock"],
                                      env=env, capture_output=True).returncode == 0
                       for lock in (kit.repository / "locks").iterdir())

        until_sync(written)
    finally:
        proc.kill()
        proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------- retention
async def test_retention_keeps_one_a_day_locally_one_a_week_remotely(kit: Kit) -> None:
    """The policy with a few snapshots at fake dates (restic's --time): locally the last
    of each day (30 days: backup_rules), remotely the last of each week (13 weeks); a
    snapshot that is not Axi's is never touched."""
    folder = kit.tmp / "petit" / FOLDER
    folder.mkdir(parents=True)
    local = kit.restic("local")
    remote = kit.restic("distant", kit.tmp / "depot-distant")
    monday = datetime(2026, 6, 1, 3, 30)
    plans = {local: [monday, monday.replace(hour=12), monday + timedelta(days=1),
                     monday + timedelta(days=2), monday + timedelta(days=2, hours=1)],
             remote: [monday, monday + timedelta(days=2), monday + timedelta(weeks=1),
                      monday + timedelta(weeks=2), monday + timedelta(weeks=2, days=4)]}
    for repo, times in plans.items():
        await repo.init()
        for when in times:
            (folder / "axi.dump").write_text(when.isoformat())
            await repo.backup(folder.parent, FOLDER, when=when)
    foreign = subprocess.run(["restic", "backup", "--tag", "autre", "--host", "ailleurs",
                              "--time", "2020-01-01 00:00:00", str(folder)],
                             env=repository_env(local.location, kit.env, dotenv=None),
                             capture_output=True, text=True)
    assert foreign.returncode == 0, foreign.stderr

    assert await local.forget() == (3, 2)
    assert [s.time.replace(tzinfo=None) for s in await local.snapshots()] == [
        monday.replace(hour=12), monday + timedelta(days=1),
        monday + timedelta(days=2, hours=1)]
    assert await remote.forget() == (3, 2)
    assert [s.time.replace(tzinfo=None) for s in await remote.snapshots()] == [
        monday + timedelta(days=2), monday + timedelta(weeks=1),
        monday + timedelta(weeks=2, days=4)]
    listed = subprocess.run(["restic", "snapshots", "--json", "--tag", "autre"],
                            env=repository_env(local.location, kit.env, dotenv=None),
                            capture_output=True, text=True)
    assert '"ailleurs"' in listed.stdout
    assert await local.forget() == (3, 0)  # applied again: nothing more to remove


# ---------------------------------------------------------------------------- restore
async def test_a_restore_that_fails_half_way_changes_nothing(kit: Kit,
                                                            fresh: tuple[str, Target]) -> None:
    _, target = fresh
    conn = await pg_tools.connect(target)
    await conn.execute("CREATE TABLE precieux (id int PRIMARY KEY); INSERT INTO precieux "
                       "VALUES (1), (2)")
    await conn.close()
    dump = kit.tmp / "axi.dump"
    await pg_tools.dump(live_target(kit.store), dump)
    data = dump.read_bytes()
    dump.write_bytes(data[: int(len(data) * 0.8)])  # cut inside the souvenirs' data
    with pytest.raises(BackupError):
        await pg_tools.restore(dump, target, replace=True)
    assert await pg_tools.user_relations(target) == ["public.precieux"]
    assert (await pg_tools.stats_of(target))["public.precieux"].rows == 2


def test_the_pg_tools_are_pgservers_16() -> None:
    assert (pg_tools.bin_dir() / "pg_restore").is_file()
    version = subprocess.run([str(pg_tools.bin_dir() / "pg_dump"), "--version"],
                             capture_output=True, text=True).stdout
    assert " 16." in version


def test_restic_variables_are_also_read_from_the_env_file(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("RESTIC_PASSWORD=depuis-le-fichier\nB2_ACCOUNT_ID=abc\n"
                      "ANTHROPIC_API_KEY=sk-pas-pour-restic\nRESTIC_CACHE_DIR=\n")
    env = repository_env("/mnt/disque2/axi", {"PATH": "/usr/bin"}, dotenv=dotenv)
    assert env["RESTIC_PASSWORD"] == "depuis-le-fichier" and env["B2_ACCOUNT_ID"] == "abc"
    assert "ANTHROPIC_API_KEY" not in env and "RESTIC_CACHE_DIR" not in env
    assert env["RESTIC_REPOSITORY"] == "/mnt/disque2/axi"
    mine = repository_env("/x", {"RESTIC_PASSWORD": "de-l-environnement"}, dotenv=dotenv)
    assert mine["RESTIC_PASSWORD"] == "de-l-environnement"  # the environment wins


async def test_an_operation_cut_by_a_stop_is_closed_without_a_false_recovery_alert(
        kit: Kit) -> None:
    backups = kit.backups()
    assert (await backups.backup()).ok
    dead = await kit.store.start_operation("sauvegarde", "local")  # its process was killed
    assert (await backups.backup()).ok
    closed = next(o for o in await kit.store.list_operations() if o.id == dead)
    assert closed.etat == "echec" and closed.details.get("interrompue") is True
    assert await kit.notifications() == []  # neither "failed" nor "works again"


async def test_the_dump_waits_in_a_directory_only_axis_user_can_enter(kit: Kit) -> None:
    """The dump (the whole database, in clear) was world-readable while restic stored it,
    and stayed so after a crash: the work root was created with the umask's 0755."""
    root = kit.tmp / "data" / "sauvegardes-travail"
    root.mkdir(parents=True)
    root.chmod(0o755)  # as an earlier Axi left it
    seen: list[int] = []

    def progress(done: int, total: int | None, what: str) -> None:
        if what == "pg_dump" and (root / "sauvegarde" / FOLDER).exists():
            seen.append(root.stat().st_mode & 0o777)

    old = os.umask(0o022)
    try:
        assert (await kit.backups().backup(progress=progress)).ok
    finally:
        os.umask(old)
    assert seen and set(seen) == {0o700}


async def test_a_failed_dump_is_told_in_french_to_the_people_alerted(kit: Kit) -> None:
    """The French text (operations, alerts) held the English 'of the database'."""
    import asyncio

    async def cut_the_waiting_dump() -> None:
        for _ in range(200):
            async with kit.store.db.engine.connect() as conn:
                cut = (await conn.execute(text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                    "application_name = 'axi-sauvegarde' AND wait_event_type = 'Lock'"))).all()
            if cut:
                return
            await asyncio.sleep(0.05)

    async with kit.store.db.engine.connect() as conn, conn.begin():
        await conn.execute(text("LOCK TABLE souvenirs IN ACCESS EXCLUSIVE MODE"))
        report, _ = await asyncio.gather(kit.backups().backup(),
                                         cut_the_waiting_dump())
    op = report.outcomes[0].operation
    assert op is not None and op.etat == "echec" and op.erreur is not None
    assert op.erreur.startswith("pg_dump a échoué (code 1) en sauvegardant la base :"), op.erreur
    assert "of the database" not in op.erreur


async def test_two_restores_at_once_one_waits_its_turn(
        kit: Kit, fresh: tuple[str, Target]) -> None:
    """Two restores shared one work directory: the second emptied it under the first,
    which said the backup's checksum was wrong, or stopped with FileNotFoundError."""
    import asyncio

    backups = kit.backups()
    assert (await backups.backup()).ok
    url, target = fresh
    from sqlalchemy.engine import make_url

    other = make_url(url).set(database=f"{target.database}_bis").render_as_string(
        hide_password=False)  # the embedded server's URL keeps its ?host=…&port=…
    conn = await pg_tools.connect(target)
    await conn.execute(f'CREATE DATABASE "{target.database}_bis"')
    await conn.close()
    try:
        plans = [await backups.plan_restore("latest", u) for u in (url, other)]
        results = await asyncio.gather(*(backups.restore(p) for p in plans),
                                       return_exceptions=True)
    finally:
        conn = await pg_tools.connect(target)
        await conn.execute(f'DROP DATABASE "{target.database}_bis" WITH (FORCE)')
        await conn.close()
    done = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, BackupError) and r.kind == "occupe"]
    assert len(done) == 1 and len(refused) == 1, results
    assert done[0]["public.souvenirs"] == 40
