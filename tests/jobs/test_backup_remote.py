"""The remote backup repository (AXI_BACKUP_REMOTE_REPOSITORY) with the real things, as in
test_backup.py: restic repositories in a temp directory, the database under test."""

from __future__ import annotations

import subprocess

from jobs.restic import repository_env
from tests.jobs.test_backup import Kit, kit

__all__ = ["kit"]  # the fixture


async def test_a_remote_repository_gets_its_own_copy_check_and_failure(kit: Kit) -> None:
    remote = kit.tmp / "depot-distant"
    both = kit.backups(AXI_BACKUP_REMOTE_REPOSITORY=str(remote))
    report = await both.backup()
    assert report.ok and [o.depot for o in report.outcomes] == ["local", "distant"]
    assert len(await kit.restic("distant", remote).snapshots()) == 1
    checked = await both.verify()
    assert checked.ok and [o.depot for o in checked.outcomes] == ["local", "distant"]
    assert checked.outcomes[1].notes == []  # the remote is read (a share), not restored

    broken = kit.backups(AXI_BACKUP_REMOTE_REPOSITORY="/proc/axi-impossible/depot")
    report = await broken.backup()
    local, distant = report.outcomes
    assert local.ok and not distant.ok and not report.ok
    assert distant.error is not None and "/proc/axi-impossible/depot" in distant.error.en
    alerts = await kit.notifications()
    assert alerts and all(":sauvegarde:distant:echec:" in key for key, _ in alerts)


async def test_a_sound_remote_repository_with_no_axi_snapshot_fails_its_verification(
        kit: Kit) -> None:
    """restic opens the remote repository and finds it sound, but it holds nothing of Axi's
    (a wrong path, a repository emptied, someone else's): the weekly verification fails,
    Ludo and Anthony hear of it once, and of the recovery once."""
    good = kit.tmp / "depot-distant"
    assert (await kit.backups(AXI_BACKUP_REMOTE_REPOSITORY=str(good)).backup()).ok
    other = kit.tmp / "depot-d-un-autre"
    await kit.restic("distant", other).init()
    theirs = kit.tmp / "leurs-fichiers"
    theirs.mkdir()
    (theirs / "compta.txt").write_text("pas à Axi")
    foreign = subprocess.run(["restic", "backup", "--tag", "autre", "--host", "ailleurs",
                              str(theirs)], env=repository_env(str(other), kit.env, dotenv=None),
                             capture_output=True, text=True)
    assert foreign.returncode == 0, foreign.stderr
    wrong = kit.backups(AXI_BACKUP_REMOTE_REPOSITORY=str(other))

    report = await wrong.verify()
    local, distant = report.outcomes
    assert local.ok and not distant.ok and not report.ok
    assert distant.error is not None and distant.error.kind == "vide"
    assert str(other) in distant.error.en and "aucun instantané d'Axi" in distant.error.fr
    assert distant.operation is not None and distant.operation.etat == "echec"
    alerts = await kit.notifications()
    assert sorted(who for _, who in alerts) == ["Anthony", "Ludo"]
    assert all(":verification:distant:echec:" in key for key, _ in alerts)
    assert not (await wrong.verify()).ok
    assert await kit.notifications() == alerts  # once, not at every run

    fixed = await kit.backups(AXI_BACKUP_REMOTE_REPOSITORY=str(good)).verify()
    assert fixed.ok and fixed.outcomes[1].snapshot is not None
    news = (await kit.notifications())[len(alerts):]
    assert sorted(who for _, who in news) == ["Anthony", "Ludo"]
    assert all(":verification:distant:retour:" in key for key, _ in news)
