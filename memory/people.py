"""People (`relations`) and their verified addresses (`identites`).

Identity is never taken from a display name: a person is found from a (channel,
address) pair that a channel has verified. Addresses are normalised per channel so
that "Ludo@Example.FR" and "ludo@example.fr" are one identity.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from memory.errors import AlreadyExists, InvalidInput, NotFound, row_id
from memory.records import IdentityRecord, PersonRecord
from memory.text import InvalidText, clean, clean_content, fold

RELATIONS = {
    "createur": "créateur",
    "administrateur": "administrateur",
    "equipe": "équipe",
    "client": "client",
    "prospect": "prospect",
    "partenaire": "partenaire",
    "axis": "axis",
    "autre": "autre",
}
CHANNELS = {"telegram", "email", "web", "console", "axis", "api"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_ID = re.compile(r"\s*[0-9]+\s*")
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def normalise_name(value: str) -> str:
    """A person's name as it may be stored (and later shown in prompts): one line of
    text without control characters, with at least one letter (a name made of digits
    would be taken for an id by `axi people show|remove`)."""
    try:
        name = clean_content(value, what="name", limit=200)
    except InvalidText as exc:
        raise InvalidInput(str(exc)) from None
    if any(unicodedata.category(ch) in {"Cc", "Zl", "Zp"} or ch in _BIDI_CONTROLS
           for ch in name):
        raise InvalidInput(f"a name is one line without control characters, not {name!r}")
    if not any(ch.isalpha() for ch in name):
        why = " (a number is taken for an id)" if _ID.fullmatch(name) else ""
        raise InvalidInput(f"a name needs at least one letter, not {name!r}{why}")
    return name


def normalise_relation(value: str) -> str:
    key = fold(value.strip())
    if key not in RELATIONS:
        raise InvalidInput(
            f"unknown relation {value!r}; use one of: {', '.join(sorted(set(RELATIONS.values())))}"
        )
    return RELATIONS[key]


def normalise_address(channel: str, address: str) -> tuple[str, str]:
    channel = clean(channel).strip().lower()
    address = clean(address).strip()
    if channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}; use one of: {', '.join(sorted(CHANNELS))}")
    if not address:
        raise InvalidInput("the address is empty")
    if channel == "telegram":
        if not re.fullmatch(r"-?\d{1,20}", address):
            raise InvalidInput(
                f"a Telegram address is the numeric user id (e.g. 123456789), not {address!r}"
            )
    elif channel == "email":
        address = address.lower()
        if not _EMAIL.match(address):
            raise InvalidInput(f"{address!r} is not an email address")
    if len(address) > 320:
        raise InvalidInput("the address is too long")
    return channel, address


_PERSON_COLUMNS = "id, personne, relation, comment_interagir, details, cree_le, bloque, jamais_hors_serveur"


def _person(row: Any, identities: list[IdentityRecord]) -> PersonRecord:
    details = row.details
    if isinstance(details, str):
        details = json.loads(details)
    return PersonRecord(
        id=row.id, personne=row.personne, relation=row.relation,
        comment_interagir=row.comment_interagir, details=details or {}, cree_le=row.cree_le,
        bloque=row.bloque, jamais_hors_serveur=row.jamais_hors_serveur, identities=identities,
    )


class PeopleMixin:
    db: Any

    async def add_person(
        self,
        personne: str,
        *,
        relation: str,
        comment_interagir: str | None = None,
        details: dict[str, Any] | None = None,
        identities: list[tuple[str, str]] = (),  # type: ignore[assignment]
        jamais_hors_serveur: bool = False,
    ) -> PersonRecord:
        """Create a person with optional addresses, all in one transaction."""
        personne = normalise_name(personne)
        try:
            style = clean_content(comment_interagir, what="style", limit=4000) if comment_interagir else None
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        rel = normalise_relation(relation)
        addresses = [normalise_address(c, a) for c, a in identities]
        try:
            async with self.db.sessions.begin() as session:
                row = (
                    await session.execute(
                        text(
                            "INSERT INTO relations (personne, relation, comment_interagir, details, "
                            "jamais_hors_serveur) VALUES (:p, :r, :c, CAST(:d AS jsonb), :j) "
                            f"RETURNING {_PERSON_COLUMNS}"
                        ),
                        {"p": personne, "r": rel, "c": style, "d": json.dumps(details or {}),
                         "j": jamais_hors_serveur},
                    )
                ).one()
                ids = []
                for channel, address in addresses:
                    ident = (
                        await session.execute(
                            text("INSERT INTO identites (relation_id, canal, adresse) "
                                 "VALUES (:r, :c, :a) RETURNING id, canal, adresse"),
                            {"r": row.id, "c": channel, "a": address},
                        )
                    ).one()
                    ids.append(IdentityRecord(id=ident.id, canal=ident.canal, adresse=ident.adresse))
        except IntegrityError as exc:
            raise self._conflict(exc, personne) from None
        return _person(row, ids)

    @staticmethod
    def _conflict(exc: IntegrityError, personne: str) -> AlreadyExists:
        msg = str(exc.orig)
        if "uq_relations_personne" in msg:
            return AlreadyExists(f"a person named {personne!r} already exists")
        if "uq_identites_canal_adresse" in msg:
            return AlreadyExists("this address already belongs to someone")
        return AlreadyExists(msg.splitlines()[0])

    async def _identities(self, session: Any, relation_ids: list[int]) -> dict[int, list[IdentityRecord]]:
        rows = (
            await session.execute(
                text("SELECT id, relation_id, canal, adresse FROM identites "
                     "WHERE relation_id = ANY(:ids) ORDER BY id"),
                {"ids": relation_ids},
            )
        ).all()
        out: dict[int, list[IdentityRecord]] = {i: [] for i in relation_ids}
        for r in rows:
            out[r.relation_id].append(IdentityRecord(id=r.id, canal=r.canal, adresse=r.adresse))
        return out

    async def get_person(self, who: str | int) -> PersonRecord:
        """A person by id or by name (case- and accent-insensitive)."""
        async with self.db.sessions() as session:
            if isinstance(who, int) or _ID.fullmatch(who):
                # names always hold a letter (normalise_name), so digits are an id; more
                # digits than any id has are no person (and beyond int()'s digit limit)
                digits = str(who).strip()
                if len(digits.lstrip("0")) > 19:
                    raise NotFound(f"no person #{digits[:30]}…; see `axi people list`")
                row = (await session.execute(
                    text(f"SELECT {_PERSON_COLUMNS} FROM relations WHERE id = :id"),
                    {"id": row_id(int(who), "person")})).one_or_none()
            else:
                row = (await session.execute(
                    text(f"SELECT {_PERSON_COLUMNS} FROM relations "
                         "WHERE axi_pli(personne) = axi_pli(:p)"),
                    {"p": clean(who).strip()})).one_or_none()
            if row is None:
                raise NotFound(f"no person {who!r}; see `axi people list`")
            idents = await self._identities(session, [row.id])
        return _person(row, idents[row.id])

    async def list_people(self) -> list[PersonRecord]:
        async with self.db.sessions() as session:
            rows = (await session.execute(
                text(f"SELECT {_PERSON_COLUMNS} FROM relations ORDER BY personne"))).all()
            idents = await self._identities(session, [r.id for r in rows])
        return [_person(r, idents[r.id]) for r in rows]

    async def link_identity(self, who: str | int, channel: str, address: str) -> PersonRecord:
        person = await self.get_person(who)
        channel, address = normalise_address(channel, address)
        try:
            async with self.db.sessions.begin() as session:
                await session.execute(
                    text("INSERT INTO identites (relation_id, canal, adresse) VALUES (:r, :c, :a)"),
                    {"r": person.id, "c": channel, "a": address},
                )
        except IntegrityError as exc:
            owner = await self.find_by_identity(channel, address)
            if owner is not None and owner.id == person.id:
                return person
            who_has = f" ({owner.personne})" if owner else ""
            raise AlreadyExists(f"{channel}:{address} already belongs to someone{who_has}") from exc
        return await self.get_person(person.id)

    async def find_by_identity(self, channel: str, address: str) -> PersonRecord | None:
        try:
            channel, address = normalise_address(channel, address)
        except InvalidInput:
            return None
        # one round trip (this is on every message's path): the person and all their
        # identities, aggregated; autocommit, so no BEGIN/ROLLBACK around it
        async with self.db.reads() as session:
            row = (await session.execute(
                text(f"SELECT r.{_PERSON_COLUMNS.replace(', ', ', r.')}, "
                     "(SELECT json_agg(json_build_array(o.id, o.canal, o.adresse) ORDER BY o.id) "
                     " FROM identites o WHERE o.relation_id = r.id) AS idents "
                     "FROM relations r JOIN identites i ON i.relation_id = r.id "
                     "WHERE i.canal = :c AND i.adresse = :a"),
                {"c": channel, "a": address})).one_or_none()
        if row is None:
            return None
        idents = row.idents if not isinstance(row.idents, str) else json.loads(row.idents)
        return _person(row, [IdentityRecord(id=i, canal=c, adresse=a)
                             for i, c, a in idents or []])

    async def update_person(self, who: str | int, **changes: Any) -> PersonRecord:
        """Change relation, comment_interagir, bloque or jamais_hors_serveur."""
        person = await self.get_person(who)
        allowed = {"relation", "comment_interagir", "bloque", "jamais_hors_serveur"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidInput(f"cannot change {', '.join(sorted(unknown))}")
        if "relation" in changes:
            changes["relation"] = normalise_relation(changes["relation"])
        if not changes:
            return person
        sets = ", ".join(f"{k} = :{k}" for k in changes)
        async with self.db.sessions.begin() as session:
            await session.execute(text(f"UPDATE relations SET {sets} WHERE id = :id"),
                                  {**changes, "id": person.id})
        return await self.get_person(person.id)

    async def remove_person(self, who: str | int) -> PersonRecord:
        """Delete a person and their addresses; their souvenirs and facts stay, unlinked."""
        person = await self.get_person(who)
        async with self.db.sessions.begin() as session:
            await session.execute(text("DELETE FROM relations WHERE id = :id"), {"id": person.id})
        return person
