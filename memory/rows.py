"""The one way a souvenir row and an outbound message row are written.

Replies, notices, notifications, confirmations and alerts all queue outbound messages;
conversation turns, notes and imports all store souvenirs. Each kind of row has exactly
one INSERT here, with one validation, so a rule about what may be stored (clean text,
bounded sizes, the metadata an outbound message carries) is written once. These helpers
take the caller's session: the row joins the caller's transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput
from memory.text import InvalidText, clean, clean_content, clean_json

SOUVENIR_COLUMNS = (
    "id, timestamp, type, source, contenu, resume, importance, metadata, relation_id, public"
)


@dataclass(frozen=True)
class NewSouvenir:
    """One souvenir to store."""

    contenu: str
    type: str = "note"
    source: str | None = None
    importance: int = 5
    timestamp: datetime | None = None
    relation_id: int | None = None
    public: bool = False
    resume: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def prepare_souvenir(item: NewSouvenir) -> dict[str, Any]:
    """Validated column values of a souvenir (InvalidInput says what is wrong)."""
    try:
        contenu = clean_content(item.contenu, what="souvenir text")
        kind = clean_content(item.type, what="souvenir type", limit=50)
        source = clean_content(item.source, what="source", limit=100) if item.source else None
    except InvalidText as exc:
        raise InvalidInput(str(exc)) from None
    if not 0 <= int(item.importance) <= 10:
        raise InvalidInput(f"importance must be between 0 and 10, not {item.importance}")
    return {
        "contenu": contenu,
        "type": kind,
        "source": source,
        "importance": int(item.importance),
        "timestamp": item.timestamp,
        "relation_id": item.relation_id,
        "public": item.public,
        "resume": clean(item.resume) if item.resume else None,
        "metadata": json.dumps(clean_json(item.metadata or {})),
    }


INSERT_SOUVENIR = text(
    "INSERT INTO souvenirs (timestamp, type, source, contenu, resume, importance, "
    "metadata, relation_id, public) VALUES (coalesce(:timestamp, now()), :type, "
    ":source, :contenu, :resume, :importance, CAST(:metadata AS jsonb), :relation_id, "
    f":public) RETURNING {SOUVENIR_COLUMNS}"
)


async def insert_souvenir(session: Any, item: NewSouvenir) -> Any:
    """Insert one souvenir in the caller's transaction; returns its row."""
    return (await session.execute(INSERT_SOUVENIR, prepare_souvenir(item))).one()


# ---------------------------------------------------------------- outbound messages
MAX_OUTBOUND_CHARS = 1_000_000
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024

SENT_ON_ITS_OWN = "envois"
"""The conversation suffix of what Axi sends on its own (pushes, questions): they keep
their own order, and a push held for quiet hours never holds a reply back."""

NOT_A_TURN = "avis"
"""Metadata flag of an outbound message that is not part of the conversation's history
(a notice, a push, a confirmation request): idx_messages_historique's predicate."""


@dataclass(frozen=True)
class OutboundFile:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


def encode_files(files: Sequence[OutboundFile]) -> list[dict[str, Any]]:
    total = sum(len(f.data) for f in files)
    if total > MAX_ATTACHMENT_BYTES:
        raise InvalidInput(f"attachments too large: {total:,} bytes "
                           f"(at most {MAX_ATTACHMENT_BYTES:,})")
    return [{"filename": clean(f.filename)[:200] or "piece-jointe",
             "content_type": f.content_type, "size": len(f.data),
             "data": base64.b64encode(f.data).decode("ascii")} for f in files]


def decode_files(stored: Sequence[dict[str, Any]]) -> list[OutboundFile]:
    return [OutboundFile(filename=f.get("filename") or "piece-jointe",
                         content_type=f.get("content_type") or "application/octet-stream",
                         data=base64.b64decode(f["data"])) for f in stored if "data" in f]


_INSERT_OUTBOUND = text(
    "INSERT INTO messages (sens, canal, adresse, verifie, relation_id, conversation, "
    "reference_fil, texte, pieces_jointes, metadata, etat, en_reponse_a, prochain_essai) "
    "VALUES ('sortant', :c, :a, true, :rid, :conv, :fil, :t, CAST(:pj AS jsonb), "
    "CAST(:meta AS jsonb), 'a_envoyer', :rep, :due) RETURNING id")


async def insert_outbound(
    session: Any, *, canal: str, adresse: str, texte: str, conversation: str | None = None,
    relation_id: int | None = None, en_reponse_a: int | None = None,
    reference_fil: str | None = None, genre: str = "reply",
    metadata: dict[str, Any] | None = None, files: Sequence[OutboundFile] = (),
    due_at: datetime | None = None,
) -> int:
    """Queue one outbound message in the caller's transaction; returns its id.

    `genre` is the Delivery kind (reply, notice, push, confirmation); everything but a
    reply is kept out of the conversation's history. `due_at` holds it until then
    (quiet hours)."""
    try:
        body = clean_content(texte, what="outbound text", limit=MAX_OUTBOUND_CHARS)
    except InvalidText as exc:
        raise InvalidInput(str(exc)) from None
    meta = dict(clean_json(metadata or {}))
    meta["genre"] = genre
    if genre != "reply":
        meta[NOT_A_TURN] = True
    return int((await session.execute(_INSERT_OUTBOUND, {
        "c": canal, "a": clean(adresse), "rid": relation_id,
        "conv": clean(conversation or f"{canal}:{adresse}:{SENT_ON_ITS_OWN}")[:400],
        "fil": clean(reference_fil)[:400] if reference_fil else None, "t": body,
        "pj": json.dumps(encode_files(files)), "meta": json.dumps(meta), "rep": en_reponse_a,
        "due": due_at})).scalar_one())
