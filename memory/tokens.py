"""Bearer tokens of the HTTP API (`jetons`): created for a person with a scope, printed
once, stored only as a SHA-256, found again by that hash, revoked without being forgotten.

A token maps to a person through an identity of its own channel (`web` for the `chat`,
`site` and `admin` scopes, `axis` for the `axis` scope) whose address is `personne-<id>`: messages sent
with any of a person's tokens are one conversation, remembered like Telegram's. The
comparison that matters is done by PostgreSQL on the hash (a unique index): the secret
itself is never compared, and the hash of a wrong token reveals nothing of a right one.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import text

from memory.errors import InvalidInput, NotFound, row_id
from memory.text import InvalidText, clean_content

Scope = Literal["chat", "axis", "site", "admin"]
SCOPES: tuple[Scope, ...] = ("chat", "axis", "site", "admin")
"""`admin`: the details of /health and /metrics from outside the server (migration 0019);
only for the créateur or an administrateur (bot/policy.py `may_administer`)."""
PREFIX = "axi_"
_MAX_TOKEN_CHARS = 200


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def channel_of_scope(scope: str) -> str:
    return "axis" if scope == "axis" else "web"


def person_address(person_id: int) -> str:
    """The address a token's person has on the token's channel."""
    return f"personne-{person_id}"


@dataclass(frozen=True)
class TokenRecord:
    id: int
    relation_id: int
    personne: str
    relation: str | None
    portee: str
    nom: str | None
    cree_le: datetime
    utilise_le: datetime | None
    expire_le: datetime | None
    revoque_le: datetime | None
    client_oauth: str | None = None

    @property
    def channel(self) -> str:
        return channel_of_scope(self.portee)

    @property
    def address(self) -> str:
        return person_address(self.relation_id)


@dataclass(frozen=True)
class NewToken:
    """A token just created: `secret` is shown once and never stored."""

    record: TokenRecord
    secret: str


_COLUMNS = ("j.id, j.relation_id, r.personne, r.relation, j.portee, j.nom, j.cree_le, "
            "j.utilise_le, j.expire_le, j.revoque_le, j.client_oauth")


def _record(row: Any) -> TokenRecord:
    return TokenRecord(id=row.id, relation_id=row.relation_id, personne=row.personne,
                       relation=row.relation, portee=row.portee, nom=row.nom,
                       cree_le=row.cree_le, utilise_le=row.utilise_le, expire_le=row.expire_le,
                       revoque_le=row.revoque_le, client_oauth=row.client_oauth)


class TokensMixin:
    db: Any

    async def create_token(self, person_id: int, *, scope: str = "chat",
                           name: str | None = None, expires_at: datetime | None = None,
                           oauth_client: str | None = None) -> NewToken:
        """A new token for a person (and their identity on the token's channel)."""
        if scope not in SCOPES:
            raise InvalidInput(f"unknown scope {scope!r}; use one of: {', '.join(SCOPES)}")
        if name is not None:
            try:
                name = clean_content(name, what="token name", limit=200)
            except InvalidText as exc:
                raise InvalidInput(str(exc)) from None
        secret = PREFIX + secrets.token_urlsafe(32)
        async with self.db.sessions.begin() as session:
            person = (await session.execute(
                text("SELECT id FROM relations WHERE id = :i"), {"i": row_id(person_id, "person")})).scalar()
            if person is None:
                raise NotFound(f"no person #{person_id}")
            await session.execute(
                text("INSERT INTO identites (relation_id, canal, adresse) "
                     "VALUES (:r, :c, :a) ON CONFLICT (canal, adresse) DO NOTHING"),
                {"r": person, "c": channel_of_scope(scope), "a": person_address(person)})
            token_id = (await session.execute(
                text("INSERT INTO jetons (relation_id, portee, nom, empreinte, expire_le, "
                     "client_oauth) VALUES (:r, :p, :n, :e, :x, :o) RETURNING id"),
                {"r": person, "p": scope, "n": name, "e": token_hash(secret), "x": expires_at,
                 "o": oauth_client})).scalar_one()
            row = (await session.execute(
                text(f"SELECT {_COLUMNS} FROM jetons j JOIN relations r ON r.id = j.relation_id "
                     "WHERE j.id = :i"), {"i": token_id})).one()
        return NewToken(_record(row), secret)

    async def find_token(self, secret: str, *, touch: bool = True) -> TokenRecord | None:
        """The live token (not revoked, not expired) whose hash matches, or None. Marks
        it used (at most once a minute, to spare writes)."""
        if not secret or len(secret) > _MAX_TOKEN_CHARS:
            return None
        async with self.db.sessions.begin() as session:
            row = (await session.execute(
                text(f"SELECT {_COLUMNS} FROM jetons j JOIN relations r ON r.id = j.relation_id "
                     "WHERE j.empreinte = :e AND j.revoque_le IS NULL "
                     "AND (j.expire_le IS NULL OR j.expire_le > now())"),
                {"e": token_hash(secret)})).one_or_none()
            if row is None:
                return None
            if touch and (row.utilise_le is None
                          or (await session.execute(text(
                              "SELECT :u < now() - interval '1 minute'"),
                              {"u": row.utilise_le})).scalar()):
                await session.execute(text("UPDATE jetons SET utilise_le = now() WHERE id = :i"),
                                      {"i": row.id})
        return _record(row)

    async def list_tokens(self, *, include_revoked: bool = False,
                          oauth: bool | None = None) -> list[TokenRecord]:
        where = ["TRUE"]
        if not include_revoked:
            where.append("j.revoque_le IS NULL AND (j.expire_le IS NULL OR j.expire_le > now())")
        if oauth is not None:
            where.append("j.client_oauth IS NOT NULL" if oauth else "j.client_oauth IS NULL")
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM jetons j JOIN relations r ON r.id = j.relation_id "
                f"WHERE {' AND '.join(where)} ORDER BY j.id"))).all()
        return [_record(r) for r in rows]

    async def revoke_token(self, token_id: int) -> TokenRecord:
        async with self.db.sessions.begin() as session:
            found = (await session.execute(
                text("UPDATE jetons SET revoque_le = coalesce(revoque_le, now()) WHERE id = :i "
                     "RETURNING id"), {"i": row_id(token_id, "token")})).scalar()
            if found is None:
                raise NotFound(f"no token #{token_id}")
            # an OAuth access token's refresh tokens (bot/axis_connect.py) end with it:
            # else the connector would mint a new access token by its next refresh
            await session.execute(text(
                "DELETE FROM oauth_etats WHERE genre = 'rafraichissement' "
                "AND donnees->>'jeton' = :i"), {"i": str(found)})
            row = (await session.execute(
                text(f"SELECT {_COLUMNS} FROM jetons j JOIN relations r ON r.id = j.relation_id "
                     "WHERE j.id = :i"), {"i": found})).one()
        return _record(row)
