"""The backups' rules, with no I/O (issue 13): what a snapshot holds and where, the
retention policy of each repository, the share of the remote repository read each week,
the manifest a backup records and how a restored copy is compared with it, when an
operation alerts, the French texts of the alerts, and how a database URL becomes libpq's
environment. jobs/backup.py applies them; jobs/restic.py and jobs/pg_tools.py do the I/O.

Why a manifest, and why it is exact although the live database keeps changing: the
backup opens a REPEATABLE READ transaction, exports its snapshot (`pg_export_snapshot()`)
and hands it to `pg_dump --snapshot`, then counts each table's rows and checksums its
newest rows *inside that same transaction*. So the counts describe exactly the rows the
dump holds — the live database as it was at the dump's instant — whatever was written
since. The manifest travels inside the restic snapshot (next to the dump, so a copy of
the repository on another machine can still be verified) and in `operations.details`.
The verification restores the dump into a scratch database and computes the same figures
there: any difference (a missing row, a changed newest row) is a failed verification.
Comparing with the live database *now* could not be exact: rows are added, updated (a
message's state) and deleted (forgetting, visitor purge) between the backup and the
verification.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

TAG = "axi"
"""Every snapshot Axi makes carries this tag; retention and listing only see these."""
HOST = "axi"
"""Fixed snapshot host name: a container's changing host name must not split the
retention groups."""
FOLDER = "axi"
DUMP_FILE = "axi.dump"
MANIFEST_FILE = "manifeste.json"
DUMP_IN_SNAPSHOT = f"/{FOLDER}/{DUMP_FILE}"
MANIFEST_IN_SNAPSHOT = f"/{FOLDER}/{MANIFEST_FILE}"
SCRATCH_PREFIX = "axi_verif_"
"""Scratch databases of the verification: a unique name with this prefix, always dropped."""
NEWEST_ROWS = 1000
"""Rows per table whose text is checksummed (the newest by primary key)."""
RETENTION = {"local": ("--keep-daily", "30"), "distant": ("--keep-weekly", "13")}
REMOTE_SUBSET_PARTS = 8
"""The remote repository is read one eighth a week, each eighth in turn (8 weeks for all
of it): bandwidth and egress fees stay small."""
MANIFEST_FORMAT = 1
STATS_SETTINGS = (
    "SET LOCAL TimeZone = 'UTC'", "SET LOCAL DateStyle = 'ISO, YMD'",
    "SET LOCAL IntervalStyle = 'postgres'", "SET LOCAL extra_float_digits = 1",
    "SET LOCAL bytea_output = 'hex'",
)
"""A row's text depends on these session settings: both sides of a comparison use them."""
REPOSITORY_ENV_PREFIXES = ("RESTIC_", "AWS_", "B2_", "AZURE_", "GOOGLE_", "OS_", "ST_",
                           "RCLONE_")
"""restic's own variables and its backends' (S3, B2, Azure, GCS, Swift, rclone)."""
PASSWORD_VARIABLES = ("RESTIC_PASSWORD", "RESTIC_PASSWORD_FILE", "RESTIC_PASSWORD_COMMAND")


class BackupError(Exception):
    """A backup, verification or restore that cannot go on: `en` for the command line
    (one line), `fr` for the people Axi alerts and the `operations` table."""

    def __init__(self, en: str, fr: str | None = None, *, kind: str = "autre"):
        super().__init__(en)
        self.en = en
        self.fr = fr or en
        self.kind = kind


# ------------------------------------------------------------------ restic's arguments
def retention_args(depot: str) -> list[str]:
    """`restic forget` options: 30 daily snapshots locally, 13 weekly remotely."""
    return [*RETENTION[depot], "--tag", TAG, "--host", HOST, "--group-by", "host"]


def read_data_args(depot: str, today: date) -> list[str]:
    """`restic check` options: every byte locally; one eighth of the remote, in turn."""
    if depot == "local":
        return ["--read-data"]
    part = today.isocalendar().week % REMOTE_SUBSET_PARTS + 1
    return [f"--read-data-subset={part}/{REMOTE_SUBSET_PARTS}"]


def password_configured(env: Mapping[str, str]) -> bool:
    return any(env.get(name, "").strip() for name in PASSWORD_VARIABLES)


_BACKENDS = re.compile(r"(local|sftp|rest|s3|b2|azure|gs|swift|rclone):", re.IGNORECASE)


def absolute_location(location: str, cwd: Path) -> str:
    """A repository given as a plain path, made absolute: restic does not expand `~`, and
    it runs some commands in the work directory, where a relative path points elsewhere
    (the repository was created in one directory and looked for in another)."""
    location = location.strip()
    if _BACKENDS.match(location):
        return location
    return str(cwd / Path(location).expanduser())


def redact_location(location: str) -> str:
    """A repository location fit for logs and messages: a password in it is hidden
    (rest:https://user:secret@host/ → rest:https://user:***@host/)."""
    return re.sub(r"(://[^/:@\s]+):[^@/\s]*@", r"\1:***@", location)


# ------------------------------------------------------------------ the manifest
@dataclass(frozen=True)
class TableStats:
    rows: int
    newest: str
    """md5 of the text of the table's newest NEWEST_ROWS rows (by primary key)."""


@dataclass
class Manifest:
    tables: dict[str, TableStats]
    server_version: str = ""
    taken_at: str = ""
    dump_bytes: int = 0
    dump_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "format": MANIFEST_FORMAT, "pris_le": self.taken_at,
            "version_serveur": self.server_version, "taille_dump": self.dump_bytes,
            "sha256_dump": self.dump_sha256,
            "tables": {name: {"lignes": s.rows, "recentes": s.newest}
                       for name, s in sorted(self.tables.items())},
            **self.extra}, ensure_ascii=False, indent=1)

    @classmethod
    def from_json(cls, data: str | bytes) -> Manifest:
        try:
            raw = json.loads(data)
            tables = {str(name): TableStats(int(t["lignes"]), str(t["recentes"]))
                      for name, t in raw["tables"].items()}
            return cls(tables=tables, server_version=str(raw.get("version_serveur", "")),
                       taken_at=str(raw.get("pris_le", "")),
                       dump_bytes=int(raw.get("taille_dump", 0)),
                       dump_sha256=str(raw.get("sha256_dump", "")))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BackupError(f"the snapshot's manifest is unreadable ({exc})",
                              f"le manifeste de l'instantané est illisible ({exc})",
                              kind="corrompu") from None

    def summary(self) -> dict[str, Any]:
        """What `operations.details` keeps of it."""
        return {"tables": {n: s.rows for n, s in sorted(self.tables.items())},
                "lignes": sum(s.rows for s in self.tables.values()),
                "sha256_dump": self.dump_sha256, "version_serveur": self.server_version}


def compare(expected: Mapping[str, TableStats], restored: Mapping[str, TableStats]
            ) -> list[str]:
    """The differences between the manifest and a restored copy, in French (empty: the
    copy holds exactly the rows the backup recorded)."""
    problems = []
    for name in sorted(set(expected) | set(restored)):
        want, got = expected.get(name), restored.get(name)
        if got is None:
            problems.append(f"table {name} absente de la copie restaurée")
        elif want is None:
            problems.append(f"table {name} inattendue dans la copie restaurée")
        elif want.rows != got.rows:
            problems.append(f"{name} : {got.rows} lignes restaurées, {want.rows} sauvegardées")
        elif want.newest != got.newest:
            problems.append(f"{name} : les lignes les plus récentes diffèrent")
    return problems


# ------------------------------------------------------------------ alerts
def transition(previous: str | None, current: str) -> str | None:
    """'echec' when an operation fails after a success (or as the first of its kind),
    'retour' when it succeeds after a failure, None otherwise: people hear of a failure
    once and of the recovery once, never at every run."""
    if current == "echec" and previous != "echec":
        return "echec"
    if current == "ok" and previous == "echec":
        return "retour"
    return None


WHAT = {"sauvegarde": "La sauvegarde", "verification": "La vérification des sauvegardes",
        "restauration": "La restauration"}
WHERE = {"local": "dépôt local", "distant": "dépôt distant"}


def alert_subject(type_: str, depot: str, change: str) -> str:
    what = WHAT[type_].removeprefix("La ")
    if change == "echec":
        return f"Alerte Axi : échec de la {what} ({WHERE[depot]})"
    return f"Axi : la {what} refonctionne ({WHERE[depot]})"


def alert_text(type_: str, depot: str, change: str, *, error: str | None,
               when: datetime, last_good: datetime | None) -> str:
    """The message Ludo and Anthony read (tutoiement)."""
    at = f"{when:%d/%m/%Y à %H:%M}"
    if change == "retour":
        return (f"✅ {WHAT[type_]} ({WHERE[depot]}) refonctionne : réussie le {at}. "
                "Rien à faire.")
    since = (f" La dernière réussie date du {last_good:%d/%m/%Y à %H:%M}."
             if last_good is not None else " Aucune n'a encore réussi.")
    return (f"⚠️ {WHAT[type_]} ({WHERE[depot]}) a échoué le {at} : {error or 'erreur inconnue'}."
            f"{since} Je ne le redirai pas à chaque essai ; je te préviendrai quand elle "
            "refonctionnera. Le guide d'exploitation (docs/exploitation.md, « Sauvegardes ») "
            "explique quoi faire.")


def alert_key(type_: str, depot: str, change: str, operation_id: int) -> str:
    return f"sauvegardes:{type_}:{depot}:{change}:{operation_id}"


# ------------------------------------------------------------------ libpq
@dataclass(frozen=True)
class Target:
    """A database as libpq's tools reach it: environment variables (the password never
    on a command line), and where it is in words, without the password."""

    env: dict[str, str]
    server: str
    database: str

    @property
    def display(self) -> str:
        return f"database {self.database!r} on {self.server}"

    def with_database(self, name: str) -> Target:
        return Target({**self.env, "PGDATABASE": name}, self.server, name)


def libpq_target(url: str) -> Target:
    """postgresql://user:pw@host:port/db?sslmode=… (or the embedded server's
    ?host=/socket/dir&port=…) as PG* variables."""
    try:
        parsed = make_url(url.strip())
        port = parsed.port
    except (ArgumentError, ValueError):
        raise BackupError("the database URL is not valid; expected e.g. "
                          "postgresql://user:password@host:5432/axi",
                          "l'URL de la base n'est pas valide", kind="config") from None
    if parsed.get_backend_name() not in {"postgresql", "postgres"}:
        raise BackupError(f"not a PostgreSQL URL: {parsed.get_backend_name()!r}",
                          "ce n'est pas l'URL d'une base PostgreSQL", kind="config")
    if not parsed.database:
        raise BackupError("the database URL names no database (…/axi at the end)",
                          "l'URL ne nomme aucune base", kind="config")
    query = {k: (v[0] if isinstance(v, tuple) else v) for k, v in parsed.query.items()}
    env = {"PGDATABASE": parsed.database, "PGCONNECT_TIMEOUT": "10",
           "PGAPPNAME": "axi-sauvegarde"}
    host = parsed.host or query.get("host")
    port_text = str(port if port is not None else query.get("port") or "")
    if port_text and not (port_text.isascii() and port_text.isdigit()
                          and 1 <= int(port_text) <= 65535):
        raise BackupError(f"the database URL's port must be a number from 1 to 65535, not "
                          f"{port_text!r}", "le port de l'URL de la base n'est pas valide",
                          kind="config")
    if host:
        env["PGHOST"] = str(host)
    if port_text:
        env["PGPORT"] = port_text
    if parsed.username:
        env["PGUSER"] = parsed.username
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    sslmode = query.get("sslmode") or query.get("ssl")
    if sslmode:
        env["PGSSLMODE"] = "require" if sslmode in {"true", "True", "1"} else str(sslmode)
    user = f"{parsed.username}@" if parsed.username else ""
    if host and str(host).startswith("/"):
        server = f"the server at socket {host}" + (f" port {port_text}" if port_text else "")
    else:
        server = (f"postgresql://{user}{host}" + (f":{port_text}" if port_text else "")
                  if host else "the default local server")
    return Target(env, server, parsed.database)


def scratch_name(token: str) -> str:
    return f"{SCRATCH_PREFIX}{token}"
