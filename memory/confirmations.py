"""Confirmations: actions with side effects on Ludo's behalf wait for his accord.

A row holds who asks, whom we ask, the action's name and JSON payload, the choices and
the expiry. `create_confirmation` writes it and queues the question (an outbound message
of kind `confirmation` carrying the choices as buttons) in one transaction. The answer
comes back through the inbox as a button event; the worker then `lock_confirmation`s the
row inside its own claim transaction and `settle_confirmation` moves its state once, in
that same transaction as the action's writes: the action runs exactly once, or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import MAX_ID, InvalidInput
from memory.messages import Claim
from memory.rows import insert_outbound
from memory.text import InvalidText, clean_content

PENDING = "en_attente"
STATES = ("en_attente", "executee", "refusee", "expiree", "echouee")
_COLUMNS = ("id, action, texte, payload, choix, demande_par, demande_a, etat, reponse, "
            "resultat, repondu_le, expire_le, cree_le")


@dataclass(frozen=True)
class ConfirmationRecord:
    id: int
    action: str
    texte: str
    payload: dict[str, Any]
    choix: list[str]
    demande_par: int | None
    demande_a: int
    etat: str
    reponse: str | None
    resultat: str | None
    repondu_le: datetime | None
    expire_le: datetime
    cree_le: datetime


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _record(row: Any) -> ConfirmationRecord:
    values = dict(row._mapping)
    values["payload"] = _json(values["payload"]) or {}
    values["choix"] = _json(values["choix"]) or []
    return ConfirmationRecord(**values)


def button_data(confirmation_id: int, choice: str) -> str:
    """What a button carries; only a transport event can bring it back."""
    return f"confirmation:{confirmation_id}:{choice}"


def parse_button(data: str) -> tuple[int, str] | None:
    parts = data.split(":", 2)
    if (len(parts) != 3 or parts[0] != "confirmation" or not parts[1].isascii()
            or not parts[1].isdigit()):
        return None
    if len(parts[1]) > 10:
        return None
    return int(parts[1]), parts[2]


class ConfirmationsMixin:
    db: Any

    async def create_confirmation(
        self, *, action: str, texte: str, payload: dict[str, Any], choix: Sequence[str],
        labels: Sequence[str], demande_a: int, demande_par: int | None, expire_le: datetime,
        routes: Sequence[tuple[str, str]],
    ) -> tuple[ConfirmationRecord, list[int]]:
        """Store the confirmation and queue the question on each route (channel,
        address), all in one transaction."""
        try:
            action = clean_content(action, what="action", limit=100)
            texte = clean_content(texte, what="confirmation text", limit=4000)
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        if len(choix) < 2 or len(set(choix)) != len(choix) or len(labels) != len(choix):
            raise InvalidInput("a confirmation needs at least two distinct choices")
        if not routes:
            raise InvalidInput("no channel to ask on")
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "INSERT INTO confirmations (action, texte, payload, choix, demande_par, "
                "demande_a, expire_le) VALUES (:a, :t, CAST(:p AS jsonb), CAST(:c AS jsonb), "
                f":par, :da, :exp) RETURNING {_COLUMNS}"),
                {"a": action, "t": texte, "p": json.dumps(payload), "c": json.dumps(list(choix)),
                 "par": demande_par, "da": demande_a, "exp": expire_le})).one()
            record = _record(row)
            buttons = [[label, button_data(record.id, c)] for c, label in zip(choix, labels,
                                                                               strict=True)]
            ids = [await insert_outbound(
                session, canal=canal, adresse=adresse, texte=texte, relation_id=demande_a,
                genre="confirmation", metadata={"confirmation": record.id, "choix": buttons})
                for canal, adresse in routes]
        return record, ids

    async def get_confirmation(self, confirmation_id: int) -> ConfirmationRecord | None:
        if not 1 <= confirmation_id <= MAX_ID:
            return None
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM confirmations WHERE id = :id"),
                {"id": confirmation_id})).one_or_none()
        return _record(row) if row is not None else None

    async def list_confirmations(self, *, pending_only: bool = True, limit: int = 100
                                 ) -> list[ConfirmationRecord]:
        where = "WHERE etat = 'en_attente'" if pending_only else ""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM confirmations {where} ORDER BY id DESC LIMIT :n"),
                {"n": limit})).all()
        return [_record(r) for r in rows]

    async def lock_confirmation(self, claim: Claim, confirmation_id: int
                                ) -> ConfirmationRecord | None:
        """The row, locked in the claim's transaction (answers to it queue up)."""
        if not 1 <= confirmation_id <= MAX_ID:
            return None
        row = (await claim.execute(
            f"SELECT {_COLUMNS} FROM confirmations WHERE id = :id FOR UPDATE",
            {"id": confirmation_id})).one_or_none()
        return _record(row) if row is not None else None

    async def settle_confirmation(self, claim: Claim, confirmation_id: int, *, etat: str,
                                  reponse: str | None, resultat: str | None) -> None:
        if etat not in STATES or etat == PENDING:
            raise InvalidInput(f"not a final confirmation state: {etat}")
        await claim.execute(
            "UPDATE confirmations SET etat = :e, reponse = :r, resultat = :res, "
            "repondu_le = now() WHERE id = :id AND etat = 'en_attente'",
            {"e": etat, "r": reponse, "res": resultat, "id": confirmation_id})

    async def pending_confirmation_about(self, action: str, key: str, value: str
                                         ) -> ConfirmationRecord | None:
        """A pending confirmation of `action` whose payload has key = value (one pairing
        request per stranger, not one per message)."""
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM confirmations WHERE etat = 'en_attente' "
                "AND action = :a AND payload->>:k = :v AND expire_le > now() "
                "ORDER BY id DESC LIMIT 1"), {"a": action, "k": key, "v": value})).one_or_none()
        return _record(row) if row is not None else None

    async def withdraw_confirmation(self, confirmation_id: int, why: str) -> bool:
        """End a pending confirmation whose question no longer stands (what it asked
        about is gone): it becomes `expiree`, so a later press does nothing and says so.
        False when it was no longer pending."""
        async with self.db.sessions.begin() as session:
            result = await session.execute(text(
                "UPDATE confirmations SET etat = 'expiree', resultat = :w "
                "WHERE id = :id AND etat = 'en_attente'"), {"w": why[:500], "id": confirmation_id})
        return bool(result.rowcount)

    async def expire_confirmations(self) -> int:
        async with self.db.sessions.begin() as session:
            result = await session.execute(text(
                "UPDATE confirmations SET etat = 'expiree' WHERE etat = 'en_attente' "
                "AND expire_le <= now()"))
        return int(result.rowcount or 0)
