"""PostgreSQL's own tools for the backups (issue 13): `pg_dump`, `pg_restore` and `psql`
16 as the `pgserver` package bundles them, the dump taken inside an exported snapshot, the
restore in one transaction, scratch databases, and the per-table figures both compare.

Why the bundled tools: Debian's client tools are another major version (15 on Debian 12),
and a `pg_dump` older than the server refuses to dump it. `pgserver` ships the 16 tools
with their own libpq in every install (pip, Docker): a dump of the embedded server or of
a PostgreSQL 15/16 server, restorable on either.

Why the restore streams `pg_restore`'s SQL into `psql` inside BEGIN … COMMIT, written by
us: COMMIT is sent only after `pg_restore` exited 0, so a restore that fails half-way (or
is killed) leaves the target exactly as it was — and, with `--force`, the old content is
dropped inside that same transaction (its schemas, then the dump's objects).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from jobs.backup_rules import (
    NEWEST_ROWS,
    SCRATCH_PREFIX,
    STATS_SETTINGS,
    BackupError,
    Manifest,
    TableStats,
    Target,
    scratch_name,
)

Progress = Callable[[int, int | None, str], None]
CHUNK = 1 << 20
LOCK_WAIT_S = 120.0
"""How long pg_dump waits for a table another session locked (a migration) before failing."""

_USER_SCHEMAS = ("n.nspname NOT IN ('pg_catalog', 'information_schema') "
                 "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'")
_NOT_EXTENSION = ("NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
                  "AND d.objid = c.oid AND d.deptype = 'e')")
TABLES_SQL = f"""
SELECT n.nspname || '.' || c.relname AS name,
       quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS sql_name,
       (SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord)
          FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE i.indrelid = c.oid AND i.indisprimary) AS pk,
       pg_table_size(c.oid) AS bytes
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND {_USER_SCHEMAS} AND {_NOT_EXTENSION}
 ORDER BY 1
"""
RELATIONS_SQL = f"""
SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {_USER_SCHEMAS} AND {_NOT_EXTENSION}
 ORDER BY 1
"""
ESTIMATE_SQL = f"""
SELECT sum(c.relpages + coalesce(t.relpages, 0))::bigint * current_setting('block_size')::bigint
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class t ON t.oid = c.reltoastrelid
 WHERE c.relkind = 'r' AND {_USER_SCHEMAS}
"""
"""The tables' size from the catalog (no lock taken): what the dump's bar aims at."""
SCHEMAS_SQL = f"SELECT quote_ident(n.nspname) FROM pg_namespace n WHERE {_USER_SCHEMAS} ORDER BY 1"


# ------------------------------------------------------------------ the tools
def bin_dir() -> Path:
    """pgserver's bin directory, found without importing pgserver (its import has side
    effects: a runtime directory, a warning)."""
    spec = importlib.util.find_spec("pgserver")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / "pginstall" / "bin"
        if (path / "pg_dump").is_file():
            return path
    raise BackupError("PostgreSQL 16's pg_dump was not found in the pgserver package "
                      "(reinstall Axi: pip install .)",
                      "pg_dump 16 est introuvable (paquet pgserver)", kind="config")


def tool_env(target: Target) -> dict[str, str]:
    """Our environment without any PG* variable of the caller's, plus the target's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(target.env)
    return env


def _tail(stderr: bytes, lines: int = 3) -> str:
    text = stderr.decode("utf-8", "replace").strip().splitlines()
    return " — ".join(line.strip() for line in text[-lines:])[:600] or "no message"


def _tool_error(tool: str, code: int | None, stderr: bytes, *, what: str, quoi: str
                ) -> BackupError:
    """`what` in English for the command line, `quoi` in French for the alerts and
    `operations`."""
    detail = _tail(stderr)
    if "No space left on device" in detail:
        return BackupError(f"disk full during {tool} ({what}): free some space, then retry",
                           f"disque plein pendant {tool} ({quoi}) : libérer de la place, "
                           "puis relancer", kind="disque_plein")
    if "could not obtain lock" in detail or ("statement timeout" in detail
                                             and "LOCK TABLE" in detail):
        return BackupError(f"{tool} waited more than {LOCK_WAIT_S:.0f} s for a table another "
                           "session locked; retry once that work (a migration?) is done",
                           f"{tool} a attendu trop longtemps une table verrouillée par une "
                           "autre session (une migration ?)", kind="verrou_base")
    return BackupError(f"{tool} failed (exit {code}) {what}: {detail}",
                       f"{tool} a échoué (code {code}) {quoi} : {detail}")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            await asyncio.wait_for(asyncio.shield(proc.wait()), 10)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()


async def tool_version() -> str:
    proc = await asyncio.create_subprocess_exec(str(bin_dir() / "pg_dump"), "--version",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    return out.decode().strip().rsplit(" ", 1)[-1]


# ------------------------------------------------------------------ connections
async def connect(target: Target) -> asyncpg.Connection:
    env = target.env
    ssl: Any = None
    if env.get("PGSSLMODE") in {"require", "verify-ca", "verify-full", "prefer"}:
        ssl = env["PGSSLMODE"]
    try:
        return await asyncpg.connect(
            host=env.get("PGHOST"), port=int(env["PGPORT"]) if env.get("PGPORT") else None,
            user=env.get("PGUSER"), password=env.get("PGPASSWORD"), database=target.database,
            ssl=ssl, timeout=10, server_settings={"application_name": "axi-sauvegarde"})
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackupError(f"cannot connect to the {target.display}: {detail}",
                          f"connexion impossible à la base {target.database!r} : {detail}",
                          kind="base") from None


# ------------------------------------------------------------------ figures
async def table_stats(conn: asyncpg.Connection) -> tuple[dict[str, TableStats], int]:
    """Each table's row count and the md5 of its newest rows' text; and the tables' size
    on disk. Run inside a transaction (the settings are SET LOCAL)."""
    for statement in STATS_SETTINGS:
        await conn.execute(statement)
    stats: dict[str, TableStats] = {}
    size = 0
    for table in await conn.fetch(TABLES_SQL):
        size += int(table["bytes"] or 0)
        pk = list(table["pk"] or [])
        order = ", ".join(f"_r.{col} DESC" for col in pk) or '_r::text COLLATE "C"'
        rows = await conn.fetchval(f"SELECT count(*) FROM {table['sql_name']}")
        newest = await conn.fetchval(
            "SELECT md5(coalesce(string_agg(x, E'\\n' ORDER BY o), '')) FROM ("
            f"SELECT _r::text AS x, row_number() OVER (ORDER BY {order}) AS o "
            f"FROM {table['sql_name']} AS _r ORDER BY {order} LIMIT {NEWEST_ROWS}) s")
        stats[table["name"]] = TableStats(int(rows), str(newest))
    return stats, size


async def stats_of(target: Target) -> dict[str, TableStats]:
    conn = await connect(target)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return (await table_stats(conn))[0]
    except asyncpg.PostgresError as exc:
        raise _database_error(target, exc) from None
    finally:
        await conn.close()


def _database_error(target: Target, exc: Exception) -> BackupError:
    detail = " ".join(str(exc).split())[:300] or type(exc).__name__
    if isinstance(exc, asyncpg.LockNotAvailableError):
        return BackupError(f"a table of the {target.display} stayed locked too long "
                           f"({detail}); retry once the other work (a migration?) is done",
                           f"une table est restée verrouillée trop longtemps ({detail})",
                           kind="verrou_base")
    return BackupError(f"the {target.display} refused a query: {detail}",
                       f"la base {target.database!r} a refusé une requête : {detail}",
                       kind="base")


# ------------------------------------------------------------------ dump
async def dump(target: Target, dest: Path, *, lock_wait_s: float = LOCK_WAIT_S,
               progress: Progress | None = None,
               exported: Callable[[], Awaitable[Any]] | None = None) -> Manifest:
    """`pg_dump` (custom format, uncompressed: restic compresses and deduplicates) of the
    target into `dest`, inside an exported snapshot whose figures become the manifest.
    BackupError, and no file, unless pg_dump exited 0 and its archive reads back.
    `exported` runs once the snapshot is taken: what it writes is not in the dump."""
    conn = await connect(target)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute(f"SET LOCAL lock_timeout = '{int(lock_wait_s * 1000)}ms'")
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            if exported is not None:
                await exported()
            version = await conn.fetchval("SHOW server_version")
            estimate = await conn.fetchval(ESTIMATE_SQL)
            await _run_dump(target, dest, snapshot, lock_wait_s,
                            int(estimate) if estimate else None, progress)
            stats, _ = await table_stats(conn)
    except asyncpg.PostgresError as exc:
        _remove(dest)
        raise _database_error(target, exc) from None
    finally:
        await conn.close()
    try:
        await _check_archive(dest)
        digest = await asyncio.to_thread(sha256_of, dest)
    except BaseException:
        _remove(dest)
        raise
    return Manifest(tables=stats, server_version=str(version), dump_bytes=file_size(dest),
                    dump_sha256=digest)


async def _run_dump(target: Target, dest: Path, snapshot: str, lock_wait_s: float,
                    estimate: int | None, progress: Progress | None) -> None:
    args = ["--format=custom", "--compress=0", f"--snapshot={snapshot}", "--no-password",
            f"--lock-wait-timeout={int(lock_wait_s * 1000)}", f"--file={dest}"]
    proc = await asyncio.create_subprocess_exec(
        str(bin_dir() / "pg_dump"), *args, env=tool_env(target),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())
    try:
        while proc.returncode is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.wait()), 0.5)
            if progress is not None:
                progress(file_size(dest), estimate, "pg_dump")
        stderr = await errors
    except BaseException:
        await _stop(proc)
        errors.cancel()
        _remove(dest)
        raise
    if proc.returncode != 0:
        _remove(dest)
        raise _tool_error("pg_dump", proc.returncode, stderr, what="of the database",
                          quoi="en sauvegardant la base")


async def _check_archive(path: Path) -> None:
    """`pg_restore --list`: the archive's table of contents reads back whole."""
    proc = await asyncio.create_subprocess_exec(
        str(bin_dir() / "pg_restore"), "--list", str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        raise _tool_error("pg_restore --list", proc.returncode, stderr,
                          what="reading the dump back",
                          quoi="en relisant le dump")


def file_size(path: Path) -> int:
    """Size of a file being written (0 while it does not exist yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ restore
async def user_relations(target: Target) -> list[str]:
    """The target's tables, views and sequences (empty: nothing to overwrite)."""
    conn = await connect(target)
    try:
        return [r[0] for r in await conn.fetch(RELATIONS_SQL)]
    finally:
        await conn.close()


async def other_sessions(target: Target) -> int:
    """Sessions connected to the target besides ours (Axi still running?)."""
    conn = await connect(target)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"))
    finally:
        await conn.close()


async def restore(dump_path: Path, target: Target, *, replace: bool,
                  progress: Progress | None = None) -> None:
    """Restore the dump into the target in ONE transaction (see the module docstring);
    with `replace`, the target's schemas are dropped first, in that transaction."""
    prelude = ["SET client_min_messages = warning;", "BEGIN;",
               "SET LOCAL maintenance_work_mem = '256MB';"]
    if replace:
        conn = await connect(target)
        try:
            schemas = [r[0] for r in await conn.fetch(SCHEMAS_SQL)]
        finally:
            await conn.close()
        prelude += [f"DROP SCHEMA {s} CASCADE;" for s in schemas]
        prelude += ["CREATE SCHEMA public;", "GRANT USAGE ON SCHEMA public TO PUBLIC;"]
    bins = bin_dir()
    producer = await asyncio.create_subprocess_exec(
        str(bins / "pg_restore"), "--file=-", "--no-owner", "--no-privileges", str(dump_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    consumer = await asyncio.create_subprocess_exec(
        str(bins / "psql"), "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1",
        "--output=/dev/null", env=tool_env(target), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    assert producer.stdout and producer.stderr and consumer.stdin and consumer.stderr
    producer_err = asyncio.create_task(producer.stderr.read())
    consumer_err = asyncio.create_task(consumer.stderr.read())
    sink = consumer.stdin
    relayed = 0
    broken = False
    try:
        try:
            sink.write(("\n".join(prelude) + "\n").encode())
            while block := await producer.stdout.read(CHUNK):
                sink.write(block)
                await sink.drain()
                relayed += len(block)
                if progress is not None:
                    progress(relayed, None, "restauration (SQL)")
            await producer.wait()
            if producer.returncode == 0:
                sink.write(b"\nCOMMIT;\n")  # only now: everything arrived
                await sink.drain()
        except (BrokenPipeError, ConnectionResetError):
            broken = True  # psql stopped at an error: its stderr says which
        if producer.returncode is None:
            await _stop(producer)
        if broken:
            await consumer.wait()
        elif producer.returncode != 0:
            await _stop(consumer)  # no COMMIT was sent: the server rolls back
            raise _tool_error("pg_restore", producer.returncode, await producer_err,
                              what="reading the dump (nothing was changed)",
                              quoi="en lisant le dump (rien n'a été modifié)")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sink.close()
        await consumer.wait()
        if consumer.returncode != 0 or broken:
            raise _tool_error("psql", consumer.returncode, await consumer_err,
                              what=f"restoring into the {target.display} (nothing was "
                                   "changed)",
                              quoi=f"en restaurant dans la base {target.database!r} (rien "
                                   "n'a été modifié)")
    except BaseException:
        await _stop(producer)
        await _stop(consumer)
        raise
    finally:
        for task in (producer_err, consumer_err):
            task.cancel()


# ------------------------------------------------------------------ scratch databases
async def create_scratch(live: Target) -> Target:
    """A new empty database on the live server, with the live database's encoding and
    collation; the caller drops it (drop_scratch) whatever happens."""
    name = scratch_name(secrets.token_hex(6))
    conn = await connect(live)
    try:
        enc, collate, ctype = await conn.fetchrow(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            "WHERE datname = current_database()")
        try:
            await conn.execute(
                f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING {_literal(enc)} '
                f"LC_COLLATE {_literal(collate)} LC_CTYPE {_literal(ctype)}")
        except asyncpg.PostgresError as exc:
            raise BackupError(
                f"cannot create the scratch database {name} on the live server ({exc}); "
                "the database role needs the CREATEDB right",
                f"impossible de créer la base de travail {name} ({exc}) : le rôle doit "
                "avoir le droit CREATEDB", kind="base") from None
    finally:
        await conn.close()
    return live.with_database(name)


async def drop_scratch(live: Target, name: str) -> None:
    if not name.startswith(SCRATCH_PREFIX):
        raise ValueError(f"not a scratch database: {name!r}")
    conn = await connect(live)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def leftover_scratches(live: Target) -> list[str]:
    """Scratch databases a killed verification left behind."""
    conn = await connect(live)
    try:
        return [r[0] for r in await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1",
            SCRATCH_PREFIX.replace("_", "\\_") + "%")]
    finally:
        await conn.close()


def _literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"
