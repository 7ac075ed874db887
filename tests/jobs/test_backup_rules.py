"""The backups' pure rules (jobs/backup_rules.py) and the reading of restic's output
(jobs/restic_output.py): retention and read-data arguments, the manifest and its
comparison, when an alert is due, libpq's environment from a URL, restic's messages."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from jobs.backup_rules import (
    BackupError,
    Manifest,
    TableStats,
    alert_text,
    compare,
    libpq_target,
    password_configured,
    read_data_args,
    redact_location,
    retention_args,
    transition,
)
from jobs.restic_output import (
    backup_status,
    backup_summary,
    check_progress,
    classify,
    find_snapshot,
    is_missing_repository,
    parse_forget,
    parse_snapshots,
)


def test_retention_is_30_daily_locally_and_13_weekly_remotely_on_axis_snapshots_only() -> None:
    local = retention_args("local")
    assert local[:2] == ["--keep-daily", "30"]
    assert retention_args("distant")[:2] == ["--keep-weekly", "13"]
    for args in (local, retention_args("distant")):
        assert args[args.index("--tag") + 1] == "axi" and args[args.index("--host") + 1] == "axi"


def test_the_remote_is_read_an_eighth_a_week_in_turn() -> None:
    assert read_data_args("local", date(2026, 11, 30)) == ["--read-data"]
    parts = {read_data_args("distant", date(2026, 1, 5) + timedelta(weeks=week))[0]
             for week in range(8)}
    assert parts == {f"--read-data-subset={n}/8" for n in range(1, 9)}


def test_the_manifest_round_trips_and_the_comparison_names_each_difference() -> None:
    tables = {"public.souvenirs": TableStats(3, "a" * 32), "public.faits": TableStats(0, "b")}
    manifest = Manifest(tables, server_version="16.2", taken_at="2026-11-30T02:30:00+00:00",
                        dump_bytes=1234, dump_sha256="f" * 64)
    again = Manifest.from_json(manifest.to_json())
    assert again.tables == tables and again.dump_sha256 == "f" * 64 and again.dump_bytes == 1234
    assert compare(tables, dict(tables)) == []
    restored = {"public.souvenirs": TableStats(2, "a" * 32), "public.autre": TableStats(1, "c")}
    assert compare(tables, restored) == [
        "table public.autre inattendue dans la copie restaurée",
        "table public.faits absente de la copie restaurée",
        "public.souvenirs : 2 lignes restaurées, 3 sauvegardées"]
    assert compare(tables, {**tables, "public.faits": TableStats(0, "x")}) == [
        "public.faits : les lignes les plus récentes diffèrent"]
    with pytest.raises(BackupError, match="manifest is unreadable"):
        Manifest.from_json('{"tables": {"x": {"lignes": "beaucoup"}}}')


def test_people_hear_of_a_failure_once_and_of_the_recovery_once() -> None:
    states = ["ok", "echec", "echec", "echec", "ok", "ok", "echec", "ok"]
    changes = [transition(prev, cur) for prev, cur in zip([None, *states], states, strict=False)]
    assert changes == [None, "echec", None, None, "retour", None, "echec", "retour"]
    assert transition(None, "echec") == "echec"  # the very first one failing
    text = alert_text("verification", "local", "echec", error="dépôt abîmé",
                      when=datetime(2026, 11, 29, 5, 0, tzinfo=UTC),
                      last_good=datetime(2026, 11, 22, 5, 0, tzinfo=UTC))
    assert "a échoué le 29/11/2026" in text and "dépôt abîmé" in text and "22/11/2026" in text


def test_a_database_url_becomes_libpq_variables_without_the_password_on_display() -> None:
    target = libpq_target("postgresql+asyncpg://axi:s3cret@postgres:5433/axi?ssl=require")
    assert target.env["PGHOST"] == "postgres" and target.env["PGPORT"] == "5433"
    assert target.env["PGUSER"] == "axi" and target.env["PGPASSWORD"] == "s3cret"
    assert target.env["PGDATABASE"] == "axi" and target.env["PGSSLMODE"] == "require"
    assert "s3cret" not in target.display
    embedded = libpq_target("postgresql://postgres@/axi?host=/data/pgdata&port=5432")
    assert embedded.env["PGHOST"] == "/data/pgdata" and embedded.env["PGPORT"] == "5432"
    assert embedded.with_database("axi_verif_1").env["PGDATABASE"] == "axi_verif_1"
    for bad in ("mysql://x@y/z", "not a url", "postgresql://x@y"):
        with pytest.raises(BackupError):
            libpq_target(bad)


def test_restic_settings_and_locations() -> None:
    assert not password_configured({"RESTIC_PASSWORD": " "})
    assert password_configured({"RESTIC_PASSWORD_FILE": "/run/secrets/restic"})
    assert redact_location("rest:https://axi:hunter2@backup.example/axi") == \
        "rest:https://axi:***@backup.example/axi"
    assert redact_location("/mnt/disque2/axi") == "/mnt/disque2/axi"


def test_restic_json_is_read() -> None:
    snaps = parse_snapshots(
        '[{"time":"2026-11-30T03:30:00.123456789+01:00","tree":"t","paths":["/axi"],'
        '"hostname":"axi","tags":["axi"],"id":"9b3f98157a44","short_id":"9b3f9815"},'
        '{"time":"2026-11-29T03:30:00Z","paths":["/axi"],"hostname":"axi","id":"c276de70e6"}]')
    assert [s.short_id for s in snaps] == ["c276de70", "9b3f9815"]  # oldest first
    assert snaps[1].time == datetime(2026, 11, 30, 2, 30, 0, 123456, tzinfo=UTC)
    assert backup_status('{"message_type":"status","percent_done":0.5,"total_bytes":200,'
                         '"bytes_done":100}') == (100, 200)
    assert backup_summary('{"message_type":"status"}\n{"message_type":"summary",'
                          '"snapshot_id":"8efe4e19","data_added":290}')["snapshot_id"] == "8efe4e19"
    with pytest.raises(BackupError, match="no snapshot"):
        backup_summary('{"message_type":"status"}')
    assert parse_forget('[{"keep":[{},{}],"remove":[{}]},{"keep":[{}],"remove":null}]') == (3, 1)
    assert check_progress("[0:01] 59.09%  13 / 22 packs") == (13, 22, "packs")


@pytest.mark.parametrize(("stderr", "kind", "says"), [
    ("unable to create lock in backend: repository is already locked by PID 15748 on vm by "
     "root (UID 0, GID 0)\nlock was created at 2026-12-01 01:11:14 (2s ago)\nstorage ID 4783",
     "verrou", "axi backup unlock"),
    ("Fatal: wrong password or no key found\n", "mot_de_passe", "RESTIC_PASSWORD"),
    ("Fatal: Resolving password failed: open /nope: no such file or directory",
     "mot_de_passe", "RESTIC_PASSWORD_FILE"),
    ("Fatal: unable to save snapshot: write /repo/data/x: no space left on device",
     "disque_plein", "disk full"),
    ("error for tree 25f91d10:\n  decrypting blob failed: ciphertext verification failed\n"
     "Pack ID does not match, want 04, got 87\nFatal: repository contains errors",
     "corrompu", "damaged"),
    ("Fatal: unable to open config file: stat /repo/config: no such file or directory\n"
     "Is there a repository at the following location?\n/repo", "pas_de_depot",
     "is the disk mounted"),
    ("Fatal: something new", "autre", "something new"),
])
def test_restic_failures_become_one_clear_message(stderr: str, kind: str, says: str) -> None:
    error = classify(stderr, repository="rest:https://u:pw@h/axi", command="backup")
    assert error.kind == kind and says in error.en and "\n" not in error.en
    assert "pw" not in error.en.replace("password", "").replace("PASSWORD", "")
    assert error.fr and error.fr != error.en


def test_a_missing_repository_is_told_apart() -> None:
    assert is_missing_repository("Fatal: unable to open config file: stat /r/config: no such "
                                 "file or directory\nIs there a repository at the following "
                                 "location?")
    assert not is_missing_repository("Fatal: wrong password or no key found")


def test_a_snapshot_is_found_by_its_id_or_as_the_latest() -> None:
    snaps = parse_snapshots(
        '[{"time":"2026-11-29T03:30:00Z","hostname":"axi","id":"c276de70e6aa"},'
        '{"time":"2026-11-30T03:30:00Z","hostname":"axi","id":"c2f1000000bb"}]')
    assert find_snapshot(snaps, "latest", "/d").id == "c2f1000000bb"
    assert find_snapshot(snaps, "C276", "/d").id == "c276de70e6aa"
    with pytest.raises(BackupError, match="matches several"):
        find_snapshot(snaps * 2, "c276", "/d")
    with pytest.raises(BackupError, match="is not one of Axi's snapshots"):
        find_snapshot(snaps, "c2", "/d")  # too short to be an id
    with pytest.raises(BackupError, match="no Axi snapshot"):
        find_snapshot([], "latest", "/d")
