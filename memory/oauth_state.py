"""The OAuth 2.1 authorization server's state for Axis's connector (`oauth_etats`).

Why: Claude.ai's custom connectors authenticate with OAuth (dynamic client registration,
an authorization code with PKCE, refresh tokens); that state must survive a restart of
Axi, so it lives in PostgreSQL, one row per (genre, cle) with its JSON and expiry:
registered clients, pending approvals (Ludo has not answered yet), authorization codes and
refresh tokens. A generic key/value store here; what a genre means, and the hashing of
codes and tokens before they become keys, is the core's business (bot/axis_connect.py).
Expired rows are invisible to every read and are purged by `oauth_purge`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput
from memory.text import clean_json

_COLUMNS = "genre, cle, client_id, donnees, cree_le, expire_le"
_LIVE = "(expire_le IS NULL OR expire_le > now())"


@dataclass(frozen=True)
class OAuthState:
    genre: str
    cle: str
    client_id: str | None
    donnees: dict[str, Any]
    cree_le: datetime
    expire_le: datetime | None


def _state(row: Any) -> OAuthState:
    data = row.donnees
    if isinstance(data, str):
        data = json.loads(data)
    return OAuthState(genre=row.genre, cle=row.cle, client_id=row.client_id,
                      donnees=data or {}, cree_le=row.cree_le, expire_le=row.expire_le)


def _has_nul(*values: Any) -> bool:
    """A key, client id or value holding NUL can never be stored (PostgreSQL refuses it):
    no such row exists, and asking for one is answered "not found", never a 500."""
    return any(isinstance(v, str) and "\x00" in v for v in values)


class OAuthStateMixin:
    db: Any

    async def oauth_put(self, genre: str, cle: str, *, client_id: str | None,
                        donnees: dict[str, Any], expire_le: datetime | None) -> None:
        """Store a new row (replacing an expired one with the same key); NULs in its JSON
        are removed, a key or client id holding one is refused."""
        if _has_nul(cle, client_id):
            raise InvalidInput("an OAuth key or client id cannot hold a NUL character")
        donnees = clean_json(donnees)
        async with self.db.sessions.begin() as session:
            await session.execute(text(
                "DELETE FROM oauth_etats WHERE genre = :g AND cle = :k AND NOT " + _LIVE),
                {"g": genre, "k": cle})
            await session.execute(text(
                "INSERT INTO oauth_etats (genre, cle, client_id, donnees, expire_le) "
                "VALUES (:g, :k, :c, CAST(:d AS jsonb), :x)"),
                {"g": genre, "k": cle, "c": client_id, "d": json.dumps(donnees), "x": expire_le})

    async def oauth_get(self, genre: str, cle: str, *,
                        expired_too: bool = False) -> OAuthState | None:
        """The live row (or an expired one too, with `expired_too`), or None."""
        if _has_nul(cle):
            return None
        live = "" if expired_too else f" AND {_LIVE}"
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM oauth_etats WHERE genre = :g AND cle = :k{live}"),
                {"g": genre, "k": cle})).one_or_none()
        return _state(row) if row is not None else None

    async def oauth_take(self, genre: str, cle: str, *,
                         client_id: str | None = None) -> OAuthState | None:
        """Delete and return the live row (of this client when given): whoever takes it
        first gets it, so a code or a refresh token serves once."""
        if _has_nul(cle, client_id):
            return None
        sql = (f"DELETE FROM oauth_etats WHERE genre = :g AND cle = :k AND {_LIVE}"
               " AND (CAST(:c AS text) IS NULL OR client_id = :c)"
               f" RETURNING {_COLUMNS}")
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(sql), {"g": genre, "k": cle, "c": client_id}
                                         )).one_or_none()
        return _state(row) if row is not None else None

    async def oauth_transition(self, genre: str, cle: str, *, field: str, old: str,
                               new: str) -> OAuthState | None:
        """Set `donnees[field]` from `old` to `new` on the live row, atomically: None when
        the row is gone or `field` was not `old` (someone else moved it first)."""
        if _has_nul(cle, field, old, new):
            return None
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "UPDATE oauth_etats SET donnees = donnees || jsonb_build_object("
                "CAST(:f AS text), CAST(:n AS text)) "
                f"WHERE genre = :g AND cle = :k AND {_LIVE} AND donnees->>:f = :o "
                f"RETURNING {_COLUMNS}"),
                {"g": genre, "k": cle, "f": field, "o": old, "n": new})).one_or_none()
        return _state(row) if row is not None else None

    async def oauth_merge(self, genre: str, cle: str, values: dict[str, Any]) -> bool:
        """Add `values` to the live row's JSON; False when there is no such row."""
        if _has_nul(cle):
            return False
        values = clean_json(values)
        async with self.db.sessions.begin() as session:
            found = (await session.execute(text(
                "UPDATE oauth_etats SET donnees = donnees || CAST(:v AS jsonb) "
                f"WHERE genre = :g AND cle = :k AND {_LIVE} RETURNING 1"),
                {"g": genre, "k": cle, "v": json.dumps(values)})).scalar()
        return found is not None

    async def oauth_enqueue(self, genre: str, cle: str, *, client_id: str | None,
                            donnees: dict[str, Any], expire_le: datetime | None, field: str,
                            pending: str, ended: str, group: str, per_group: int,
                            total: int) -> list[OAuthState]:
        """Store a new row whose `donnees[field]` is `pending` (and `donnees["groupe"]`
        is `group`), first ending — `field` set to `ended`, `"remplacee": true` — the
        oldest live pending rows of the genre beyond `per_group - 1` of that group and
        beyond `total - 1` in all: the newest always gets in. One transaction, one at a
        time per genre. Returns the rows it ended."""
        if _has_nul(cle, client_id, field, pending, ended, group):
            raise InvalidInput("an OAuth key or client id cannot hold a NUL character")
        donnees = clean_json(donnees)
        sql = (f"UPDATE oauth_etats SET donnees = donnees || jsonb_build_object("
               "CAST(:f AS text), CAST(:e AS text), 'remplacee', true) "
               "WHERE genre = :g AND cle IN (SELECT cle FROM oauth_etats WHERE genre = :g "
               f"AND {_LIVE} AND donnees->>:f = :p AND (CAST(:grp AS text) IS NULL "
               "OR donnees->>'groupe' = :grp) ORDER BY cree_le DESC, cle OFFSET :n) "
               f"RETURNING {_COLUMNS}")
        ended_rows: list[OAuthState] = []
        async with self.db.sessions.begin() as session:
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                                  {"k": f"oauth_etats:{genre}"})
            for grp, keep in ((group, per_group), (None, total)):
                rows = (await session.execute(text(sql), {
                    "g": genre, "f": field, "e": ended, "p": pending, "grp": grp,
                    "n": max(0, keep - 1)})).all()
                ended_rows.extend(_state(r) for r in rows)
            await session.execute(text(
                "DELETE FROM oauth_etats WHERE genre = :g AND cle = :k AND NOT " + _LIVE),
                {"g": genre, "k": cle})
            await session.execute(text(
                "INSERT INTO oauth_etats (genre, cle, client_id, donnees, expire_le, cree_le) "
                "VALUES (:g, :k, :c, CAST(:d AS jsonb), :x, clock_timestamp())"),
                {"g": genre, "k": cle, "c": client_id, "x": expire_le,
                 "d": json.dumps({**donnees, field: pending, "groupe": group})})
        return ended_rows

    async def oauth_count(self, genre: str, *, field: str | None = None,
                          value: str | None = None) -> int:
        """Live rows of a genre (whose `donnees[field]` is `value`, when given)."""
        async with self.db.sessions() as session:
            return int(await session.scalar(text(
                f"SELECT count(*) FROM oauth_etats WHERE genre = :g AND {_LIVE} "
                "AND (CAST(:f AS text) IS NULL OR donnees->>:f = :v)"),
                {"g": genre, "f": field, "v": value}) or 0)

    async def oauth_take_where(self, genre: str, field: str, value: str) -> list[OAuthState]:
        """Delete and return the rows of a genre whose `donnees[field]` is `value` (e.g.
        the live refresh tokens of a connection that ends)."""
        if _has_nul(field, value):
            return []
        async with self.db.sessions.begin() as session:
            rows = (await session.execute(text(
                f"DELETE FROM oauth_etats WHERE genre = :g AND donnees->>:f = :v "
                f"RETURNING {_COLUMNS}"), {"g": genre, "f": field, "v": value})).all()
        return [_state(r) for r in rows]

    async def oauth_delete_where(self, genre: str, field: str, value: str) -> int:
        """Delete the rows of a genre whose `donnees[field]` is `value` (e.g. the refresh
        tokens of a revoked access token)."""
        if _has_nul(field, value):
            return 0
        async with self.db.sessions.begin() as session:
            rows = (await session.execute(text(
                "DELETE FROM oauth_etats WHERE genre = :g AND donnees->>:f = :v RETURNING 1"),
                {"g": genre, "f": field, "v": value})).all()
        return len(rows)

    async def oauth_purge(self, *, unapproved_clients_after_s: float = 86_400,
                          unapproved_clients_kept: int | None = None,
                          oauth_tokens_kept_s: float = 30 * 86_400) -> int:
        """Forget what expired: rows past their expiry, clients registered but never
        approved after a day (registration is open to anyone) — and beyond the newest
        `unapproved_clients_kept` of them, the oldest, unless an approval of theirs is
        still live —, and the OAuth access tokens (`jetons.client_oauth`) expired for a
        month."""
        async with self.db.sessions.begin() as session:
            gone = len((await session.execute(text(
                "DELETE FROM oauth_etats WHERE expire_le <= now() OR (genre = 'client' "
                "AND donnees->>'approuve_le' IS NULL "
                "AND cree_le < now() - make_interval(secs => :u)) RETURNING 1"),
                {"u": unapproved_clients_after_s})).all())
            if unapproved_clients_kept is not None:
                gone += len((await session.execute(text(
                    "WITH c AS (SELECT c.cle, EXISTS (SELECT 1 FROM oauth_etats a"
                    "  WHERE a.genre = 'approbation' AND a.client_id = c.cle"
                    "  AND (a.expire_le IS NULL OR a.expire_le > now())"
                    "  AND a.donnees->>'etat' IN ('en_attente', 'approuvee')) AS attend,"
                    "  c.cree_le FROM oauth_etats c"
                    "  WHERE c.genre = 'client' AND c.donnees->>'approuve_le' IS NULL),"
                    " trop AS (SELECT cle, attend FROM c"
                    "  ORDER BY attend DESC, cree_le DESC, cle OFFSET :n)"
                    " DELETE FROM oauth_etats WHERE genre = 'client'"
                    " AND cle IN (SELECT cle FROM trop WHERE NOT attend) RETURNING 1"),
                    {"n": max(0, unapproved_clients_kept)})).all())
            await session.execute(text(
                "DELETE FROM jetons WHERE client_oauth IS NOT NULL "
                "AND coalesce(revoque_le, expire_le) < now() - make_interval(secs => :k)"),
                {"k": oauth_tokens_kept_s})
        return gone
