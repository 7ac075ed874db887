"""Notifications: what Axi sends on its own (digests, alerts, reports, questions), once
per key.

`queue_notification` inserts the key into `notifications` and, only when it is new,
queues one outbound message per route, in the same transaction: a rerun or a retry of
whatever raised it (a veille run, a backup, the budget check) never sends twice. Which
routes (a person's preferred channel, Telegram, email, the console) is decided above,
in bot/notify.py; this module only writes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput
from memory.rows import OutboundFile, insert_outbound
from memory.text import InvalidText, clean_content


@dataclass(frozen=True)
class Route:
    """One outbound message of a notification: where it goes."""

    canal: str
    adresse: str
    relation_id: int | None = None


@dataclass(frozen=True)
class NotificationRecord:
    id: int
    cle: str
    genre: str
    destinataire: str
    sujet: str | None
    texte: str
    urgente: bool
    messages_mis_en_file: int
    cree_le: datetime


@dataclass(frozen=True)
class Queued:
    """What `queue_notification` did: `new` is False when the key was already used."""

    new: bool
    message_ids: tuple[int, ...]


class NotificationsMixin:
    db: Any

    async def queue_notification(
        self, *, cle: str, genre: str, destinataire: str, routes: Sequence[Route],
        texte: str, sujet: str | None = None, metadata: dict[str, Any] | None = None,
        files: Sequence[OutboundFile] = (), urgente: bool = False,
        due_at: datetime | None = None,
    ) -> Queued:
        try:
            cle = clean_content(cle, what="notification key", limit=300)
            texte = clean_content(texte, what="notification text", limit=1_000_000)
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        if not routes:
            raise InvalidInput("a notification needs at least one route")
        async with self.db.sessions.begin() as session:
            new_id = (await session.execute(text(
                "INSERT INTO notifications (cle, genre, destinataire, sujet, texte, urgente, "
                "messages_mis_en_file) VALUES (:k, :g, :d, :s, :t, :u, :n) "
                "ON CONFLICT (cle) DO NOTHING RETURNING id"),
                {"k": cle, "g": genre, "d": destinataire[:300], "s": sujet, "t": texte,
                 "u": urgente, "n": len(routes)})).scalar()
            if new_id is None:
                return Queued(new=False, message_ids=())
            ids = []
            for route in routes:
                ids.append(await insert_outbound(
                    session, canal=route.canal, adresse=route.adresse, texte=texte,
                    relation_id=route.relation_id, genre=genre, files=files, due_at=due_at,
                    metadata={**(metadata or {}), "notification": cle, "sujet": sujet,
                              "urgente": urgente}))
        return Queued(new=True, message_ids=tuple(ids))

    async def list_notifications(self, *, limit: int = 20, urgent_only: bool = False
                                 ) -> list[NotificationRecord]:
        where = "WHERE urgente" if urgent_only else ""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT id, cle, genre, destinataire, sujet, texte, urgente, "
                f"messages_mis_en_file, cree_le FROM notifications {where} "
                "ORDER BY cree_le DESC, id DESC LIMIT :n"), {"n": limit})).all()
        return [NotificationRecord(**r._mapping) for r in rows]

    async def routes_of(self, relation_id: int) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """A person's identities (channel, address) in creation order, and their details
        (where a preferred channel may be set)."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT i.canal, i.adresse, r.details FROM relations r "
                "LEFT JOIN identites i ON i.relation_id = r.id WHERE r.id = :id "
                "ORDER BY i.id"), {"id": relation_id})).all()
        if not rows:
            return [], {}
        details = rows[0].details or {}
        if isinstance(details, str):
            details = json.loads(details)
        return [(r.canal, r.adresse) for r in rows if r.canal is not None], dict(details)

    async def addresses_on(self, canal: str, relations: frozenset[str]) -> list[str]:
        """The addresses on a channel of the people with one of these relations (e.g.
        the inner circle's Telegram ids, whose chats get the full command list)."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT i.adresse FROM identites i JOIN relations r ON r.id = i.relation_id "
                "WHERE i.canal = :c AND r.relation = ANY(:rels) AND NOT r.bloque "
                "ORDER BY i.id"), {"c": canal, "rels": sorted(relations)})).all()
        return [r.adresse for r in rows]
