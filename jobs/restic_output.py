"""What restic 0.14 prints, read with no I/O: its JSON (snapshots, backup status and
summary, forget), the progress lines of `check`, and its errors turned into one clear
English line for the command line and one French line for the alerts.

Why by text: restic 0.14 (Debian 12) exits 1 for every fatal error (the distinct exit
codes for a missing repository, a lock or a wrong password came with 0.17), so the
cause is read from its stderr. The patterns below are its own messages.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobs.backup_rules import BackupError, redact_location

_LOCKED = re.compile(r"repository is already locked(?P<excl> exclusively)? by PID (?P<pid>\d+) "
                     r"on (?P<host>\S+)")
_LOCK_AT = re.compile(r"lock was created at (?P<at>[0-9-]+ [0-9:]+)")
_CHECK_PROGRESS = re.compile(r"\]\s+[0-9.]+%\s+(?P<done>\d+) / (?P<total>\d+) (?P<what>\w+)")
_NO_REPOSITORY = ("Is there a repository at the following location?",
                  "unable to open config file", "repository does not exist",
                  "does not exist", "no such file or directory")
_CORRUPT = ("repository contains errors", "ciphertext verification failed",
            "Pack ID does not match", "pack file cannot be listed", "invalid data returned",
            "not found in index", "failed: unexpected EOF", "checksum mismatch",
            "wrong data returned", "is damaged")


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: datetime
    host: str
    tags: tuple[str, ...]
    paths: tuple[str, ...]


def _time(value: str) -> datetime:
    # restic writes nanoseconds and "Z"; Python reads microseconds and "+00:00"
    match = re.fullmatch(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", value)
    if match is None:
        raise ValueError(f"not a restic time: {value!r}")
    fraction = (match.group(2) or ".0")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(match.group(1) + fraction + zone)


def parse_snapshots(stdout: str) -> list[Snapshot]:
    """`restic snapshots --json`, oldest first."""
    try:
        raw = json.loads(stdout or "[]")
        snaps = [Snapshot(id=s["id"], short_id=s.get("short_id") or s["id"][:8],
                          time=_time(s["time"]), host=s.get("hostname", ""),
                          tags=tuple(s.get("tags") or ()), paths=tuple(s.get("paths") or ()))
                 for s in raw or []]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"restic's snapshot list is unreadable ({exc})",
                          f"la liste des instantanés de restic est illisible ({exc})") from None
    return sorted(snaps, key=lambda s: s.time)


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects among restic's output lines (it mixes in plain text)."""
    found = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def backup_status(line: str) -> tuple[int, int | None] | None:
    """(bytes done, total bytes) from one `restic backup --json` status line."""
    values = json_lines(line)
    if not values or values[0].get("message_type") != "status":
        return None
    status = values[0]
    total = status.get("total_bytes")
    return int(status.get("bytes_done") or 0), int(total) if total else None


def backup_summary(stdout: str) -> dict[str, Any]:
    """The summary of `restic backup --json`: snapshot id, bytes added…"""
    for value in reversed(json_lines(stdout)):
        if value.get("message_type") == "summary" and value.get("snapshot_id"):
            return value
    raise BackupError("restic reported no snapshot for the backup",
                      "restic n'a signalé aucun instantané pour la sauvegarde")


def parse_forget(stdout: str) -> tuple[int, int]:
    """(snapshots kept, snapshots removed) from `restic forget --json`."""
    kept = removed = 0
    try:
        for group in json.loads(stdout or "[]") or []:
            kept += len(group.get("keep") or [])
            removed += len(group.get("remove") or [])
    except (ValueError, TypeError, AttributeError):
        return 0, 0
    return kept, removed


def check_progress(line: str) -> tuple[int, int, str] | None:
    """(done, total, 'packs'|'snapshots') from a `restic check` progress line."""
    match = _CHECK_PROGRESS.search(line)
    if match is None:
        return None
    return int(match["done"]), int(match["total"]), match["what"]


def last_lines(stderr: str, count: int = 3) -> str:
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith(("using temporary cache", "create exclusive",
                                                      "load indexes", "check ", "["))]
    return " — ".join(lines[-count:])[:600]


def classify(stderr: str, *, repository: str, command: str) -> BackupError:
    """restic's failure as one clear message (English and French) saying what to do."""
    where = redact_location(repository)
    locked = _LOCKED.search(stderr)
    if locked is not None:
        at = _LOCK_AT.search(stderr)
        since = f" since {at['at']}" if at else ""
        depuis = f" depuis {at['at']}" if at else ""
        return BackupError(
            f"the restic repository {where} is locked by restic process {locked['pid']} on "
            f"{locked['host']}{since}. If no backup is running, remove the stale lock with "
            f"`axi backup unlock` (restic unlock), then retry",
            f"le dépôt restic {where} est verrouillé par le processus restic {locked['pid']} "
            f"sur {locked['host']}{depuis}. Si aucune sauvegarde ne tourne, retirer le verrou "
            "périmé avec `axi backup unlock`, puis relancer", kind="verrou")
    if "wrong password" in stderr or "no key found" in stderr:
        return BackupError(
            f"wrong restic password for {where}: RESTIC_PASSWORD (or RESTIC_PASSWORD_FILE) "
            "is not the one this repository was created with",
            f"mauvais mot de passe restic pour {where} : RESTIC_PASSWORD (ou "
            "RESTIC_PASSWORD_FILE) n'est pas celui du dépôt", kind="mot_de_passe")
    if "Resolving password failed" in stderr or "empty password" in stderr:
        return BackupError(
            f"restic cannot read its password ({last_lines(stderr, 1)}): check "
            "RESTIC_PASSWORD_FILE or RESTIC_PASSWORD",
            f"restic ne peut pas lire son mot de passe ({last_lines(stderr, 1)}) : vérifier "
            "RESTIC_PASSWORD_FILE ou RESTIC_PASSWORD", kind="mot_de_passe")
    if "no space left on device" in stderr.lower():
        return BackupError(
            f"disk full while restic wrote to {where} ({command}): free some space (or "
            "check the disk), then retry; no snapshot was stored",
            f"disque plein pendant l'écriture de restic dans {where} ({command}) : libérer "
            "de la place, puis relancer ; aucun instantané n'a été enregistré",
            kind="disque_plein")
    if any(marker in stderr for marker in _CORRUPT):
        return BackupError(
            f"the restic repository {where} is damaged: {last_lines(stderr)}. Keep the "
            "other repository, and see the runbook (docs/exploitation.md, \"Sauvegardes\")",
            f"le dépôt restic {where} est abîmé : {last_lines(stderr)}. Garder l'autre dépôt "
            "et suivre le guide d'exploitation (« Sauvegardes »)", kind="corrompu")
    if any(marker in stderr for marker in _NO_REPOSITORY[:3]):
        return BackupError(
            f"no restic repository at {where} (is the disk mounted, is the address "
            "right?)",
            f"aucun dépôt restic à {where} (le disque est-il monté, l'adresse est-elle "
            "juste ?)", kind="pas_de_depot")
    detail = last_lines(stderr) or "no message"
    return BackupError(f"restic {command} failed on {where}: {detail}",
                       f"restic {command} a échoué sur {where} : {detail}")


def is_missing_repository(stderr: str) -> bool:
    """`restic cat config` on a location where no repository was ever created."""
    return any(marker in stderr for marker in _NO_REPOSITORY[:3]) and "wrong password" not in stderr


def find_snapshot(snapshots: list[Snapshot], ref: str, where: str) -> Snapshot:
    """'latest' or a (short) snapshot id among Axi's snapshots."""
    ref = ref.strip().lower()
    if not snapshots:
        raise BackupError(f"no Axi snapshot in {where}", f"aucun instantané dans {where}",
                          kind="vide")
    if ref == "latest":
        return snapshots[-1]
    found = [s for s in snapshots if s.id.startswith(ref)] if len(ref) >= 4 else []
    if len(found) != 1:
        why = "matches several snapshots" if found else "is not one of Axi's snapshots"
        raise BackupError(f"{ref!r} {why} in {where} (see `axi backup list`)",
                          kind="introuvable")
    return found[0]
