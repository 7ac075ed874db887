"""Alerts for the créateur (Ludo): raised once per key, delivered through the outbox.

A condition that persists (the monthly Claude budget spent, a veille source that keeps
failing) would otherwise alert at every message or every run. `raise_alert` records the
key in `alertes` and, only the first time, queues the text to every identity of every
créateur, in the same transaction: an alert is either raised and queued, or neither.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput
from memory.messages import INSERT_OUTBOUND
from memory.text import InvalidText, clean_content

OWNER_RELATION = "créateur"
# With no identity for the créateur yet, the alert goes to the local operator's console
# (under `axi run` the console channel writes it to the log).
FALLBACK_CHANNEL, FALLBACK_ADDRESS = "console", "operateur"


@dataclass(frozen=True)
class AlertRecord:
    id: int
    cle: str
    texte: str
    messages_mis_en_file: int
    cree_le: datetime


@dataclass(frozen=True)
class RaisedAlert:
    """What `raise_alert` did: `new` is False when the key was already raised."""

    new: bool
    queued: int


_OWNER_ADDRESSES = (
    "SELECT i.canal, i.adresse, r.id AS relation_id FROM identites i "
    "JOIN relations r ON r.id = i.relation_id "
    "WHERE r.relation = :owner AND NOT r.bloque ORDER BY r.id, i.id"
)


class AlertsMixin:
    db: Any

    async def raise_alert(self, cle: str, texte: str, *,
                          channels: Sequence[str] | None = None) -> RaisedAlert:
        """Record alert `cle` and queue `texte` to the créateur, once per key.

        With `channels` (those running now), only his addresses on them are used: an
        alert queued for a channel that is not running would be sent, stale, whenever
        that channel starts. With none of them, the local console gets it."""
        try:
            cle = clean_content(cle, what="alert key", limit=200)
            texte = clean_content(texte, what="alert text", limit=4000)
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        async with self.db.sessions.begin() as session:
            alert_id = (await session.execute(text(
                "INSERT INTO alertes (cle, texte) VALUES (:k, :t) "
                "ON CONFLICT (cle) DO NOTHING RETURNING id"), {"k": cle, "t": texte})).scalar()
            if alert_id is None:
                return RaisedAlert(new=False, queued=0)
            targets = [(r.canal, r.adresse, r.relation_id) for r in (await session.execute(
                text(_OWNER_ADDRESSES), {"owner": OWNER_RELATION})).all()
                       if channels is None or r.canal in channels]
            if not targets:
                targets = [(FALLBACK_CHANNEL, FALLBACK_ADDRESS, None)]
            meta = json.dumps({"avis": True, "alerte": cle})
            for canal, adresse, relation_id in targets:
                await session.execute(text(INSERT_OUTBOUND), {
                    "c": canal, "a": adresse, "rid": relation_id, "conv": f"{canal}:{adresse}",
                    "fil": None, "t": texte, "meta": meta, "rep": None})
            await session.execute(text(
                "UPDATE alertes SET messages_mis_en_file = :n WHERE id = :id"),
                {"n": len(targets), "id": alert_id})
        return RaisedAlert(new=True, queued=len(targets))

    async def list_alerts(self, *, limit: int = 20) -> list[AlertRecord]:
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT id, cle, texte, messages_mis_en_file, cree_le FROM alertes "
                "ORDER BY cree_le DESC, id DESC LIMIT :n"), {"n": limit})).all()
        return [AlertRecord(id=r.id, cle=r.cle, texte=r.texte,
                            messages_mis_en_file=r.messages_mis_en_file, cree_le=r.cree_le)
                for r in rows]
