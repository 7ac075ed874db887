"""Plain, frozen views of what MemoryStore returns, so callers never hold ORM objects
(and pure code — prompts, formatting — can take them without a database)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _JsonMixin:
    def to_json(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class SouvenirRecord(_JsonMixin):
    id: int
    timestamp: datetime
    type: str
    source: str | None
    contenu: str
    resume: str | None
    importance: int | None
    metadata: dict[str, Any]
    relation_id: int | None
    public: bool


@dataclass(frozen=True)
class Recalled(_JsonMixin):
    souvenir: SouvenirRecord
    relevance: float
    score: float


@dataclass(frozen=True)
class FactRecord(_JsonMixin):
    id: int
    sujet: str
    predicat: str
    objet: str
    confiance: float
    source_souvenir_id: int | None
    cree_le: datetime
    maj_le: datetime
    valide_depuis: datetime
    valide_jusqu_a: datetime | None
    remplace_par: int | None
    relation_id: int | None
    public: bool
    selon: str | None = None
    """None for a fact; otherwise only a claim, attributed to whoever made it."""
    jamais_hors_serveur: bool = False
    """Learnt from what must never leave the server: never in a prompt bound for Claude."""

    @property
    def current(self) -> bool:
        return self.valide_jusqu_a is None

    @property
    def claim(self) -> bool:
        return self.selon is not None


@dataclass(frozen=True)
class FactChange(_JsonMixin):
    """What add_fact did: created a fact, confirmed an existing one, or superseded some."""

    fact: FactRecord
    outcome: str  # "created" | "confirmed" | "superseded"
    superseded: list[FactRecord] = field(default_factory=list)


@dataclass(frozen=True)
class IdentityRecord(_JsonMixin):
    id: int
    canal: str
    adresse: str


@dataclass(frozen=True)
class PersonRecord(_JsonMixin):
    id: int
    personne: str
    relation: str | None
    comment_interagir: str | None
    details: dict[str, Any]
    cree_le: datetime
    bloque: bool
    jamais_hors_serveur: bool
    identities: list[IdentityRecord] = field(default_factory=list)


@dataclass(frozen=True)
class ConsigneRecord(_JsonMixin):
    id: int
    texte: str
    active: bool
    source: str | None
    cree_le: datetime
    audience: str = "interne"  # "interne": the inner circle only; "tous": everyone


def souvenir_from_row(row: Any) -> SouvenirRecord:
    """A SouvenirRecord from a database row with the souvenir columns."""
    meta = row.metadata
    if isinstance(meta, str):
        meta = json.loads(meta)
    return SouvenirRecord(
        id=row.id,
        timestamp=row.timestamp,
        type=row.type,
        source=row.source,
        contenu=row.contenu,
        resume=row.resume,
        importance=row.importance,
        metadata=meta or {},
        relation_id=row.relation_id,
        public=row.public,
    )
