"""The durable inbox and outbox of the conversation pipeline (table `messages`).

Inbound: `accept_inbound` writes a message in one transaction, unique on (channel,
external id), so a redelivery is a no-op; the channel acknowledges its source only after.
A worker then `claim`s the oldest pending message of a conversation whose earlier
messages are all done, holding the row lock (FOR NO KEY UPDATE SKIP LOCKED: a row written
meanwhile in another transaction may still reference it, e.g. a notice of the expected
wait sent before the reply) inside a transaction for the whole reply: if the process
dies, the transaction aborts, the lock goes and the message is pending again — nothing
is lost and nothing is answered twice, because the reply, the souvenirs and the "done"
mark are committed together.

Outbound: replies wait as `a_envoyer`; the sender claims them the same way, sends, and
marks them `envoye` with the channel's id (memory/outbox.py; at-least-once where the
channel dedupes or a repeat is harmless; at-most-once elsewhere, see
memory/send_attempts.py).

States: entrant en_attente → traite | ignore | erreur; sortant a_envoyer → envoye | echec.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from memory.errors import InvalidInput, NotFound, row_id
from memory.rows import NewSouvenir, insert_outbound, insert_souvenir
from memory.text import MAX_CONTENT_CHARS, InvalidText, clean, clean_content, clean_json

MAX_MESSAGE_ID = 2**63 - 1  # messages.id is a BIGSERIAL

_COLUMNS = (
    "id, sens, canal, adresse, verifie, relation_id, conversation, identifiant_externe, "
    "reference_fil, texte, pieces_jointes, metadata, etat, tentatives, prochain_essai, erreur, "
    "en_reponse_a, recu_le, cree_le"
)

_HISTORY_TURN = ("(sens = 'entrant' AND etat = 'traite') OR "
                 "(sens = 'sortant' AND NOT coalesce((metadata->>'avis')::boolean, false))")
"""A turn of a conversation's history: the predicate of idx_messages_historique."""


@dataclass(frozen=True)
class StoredMessage:
    id: int
    sens: str
    canal: str
    adresse: str
    verifie: bool
    relation_id: int | None
    conversation: str
    identifiant_externe: str | None
    reference_fil: str | None
    texte: str
    pieces_jointes: list[Any]
    metadata: dict[str, Any]
    etat: str
    tentatives: int
    prochain_essai: datetime | None
    erreur: str | None
    en_reponse_a: int | None
    recu_le: datetime
    cree_le: datetime

    @property
    def room(self) -> str | None:
        """The shared place (a group) the message was said in, if any."""
        room = self.metadata.get("salon")
        return str(room) if room else None

    @property
    def reply_address(self) -> str:
        """Where answers to this message go: its room when said in one, else its sender."""
        return self.room or self.adresse


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _row(row: Any) -> StoredMessage:
    return StoredMessage(
        id=row.id, sens=row.sens, canal=row.canal, adresse=row.adresse, verifie=row.verifie,
        relation_id=row.relation_id, conversation=row.conversation,
        identifiant_externe=row.identifiant_externe, reference_fil=row.reference_fil,
        texte=row.texte, pieces_jointes=_json(row.pieces_jointes) or [],
        metadata=_json(row.metadata) or {}, etat=row.etat, tentatives=row.tentatives,
        prochain_essai=row.prochain_essai, erreur=row.erreur, en_reponse_a=row.en_reponse_a,
        recu_le=row.recu_le, cree_le=row.cree_le,
    )


@dataclass(frozen=True)
class Accepted:
    message: StoredMessage
    duplicate: bool


class Claim:
    """A claimed message and the open transaction that holds its lock."""

    def __init__(self, session: AsyncSession, message: StoredMessage):
        self.session = session
        self.message = message
        self.finished = False

    async def execute(self, sql: str, params: dict[str, Any]) -> Any:
        return await self.session.execute(text(sql), params)


_CLAIM_INBOUND = f"""
SELECT {_COLUMNS} FROM messages m
WHERE m.sens = 'entrant' AND m.etat = 'en_attente'
  AND (m.prochain_essai IS NULL OR m.prochain_essai <= now())
  AND NOT EXISTS (
      SELECT 1 FROM messages p
      WHERE p.conversation = m.conversation AND p.sens = 'entrant'
        AND p.etat = 'en_attente' AND p.id < m.id)
  {{extra}}
ORDER BY m.id
LIMIT 1
FOR NO KEY UPDATE SKIP LOCKED
"""

def _with_thread(msg: StoredMessage, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """An answer carries the answered message's threading data (the channel's `fil`)."""
    fil = msg.metadata.get("fil")
    if not fil:
        return metadata
    return {**(metadata or {}), "fil": fil}


@dataclass(frozen=True)
class ReceivedFile:
    """A received file's content, kept in `fichiers_recus` with its message; `rang` is its
    place in the message's `pieces_jointes`."""

    rang: int
    nom: str
    type_mime: str
    contenu: bytes = field(repr=False)


def inbound_params(
    *, canal: str, adresse: str, texte: str, identifiant_externe: str, conversation: str,
    verifie: bool = False, reference_fil: str | None = None, pieces_jointes: Sequence[Any] = (),
    recu_le: datetime | None = None, metadata: dict[str, Any] | None = None,
    files: Sequence[ReceivedFile] = (),
) -> dict[str, Any]:
    """Validated parameters of one inbound message (InvalidInput says what is wrong);
    `files` are the contents kept with it (stored with the message, once). Every text,
    in the jsonb columns too, is cleaned (memory.text): a channel's NUL never refuses it."""
    try:
        body = clean(texte).strip()
        if len(body) > MAX_CONTENT_CHARS:
            raise InvalidText(f"message too long: {len(body):,} characters")
        ext = clean_content(identifiant_externe, what="external id", limit=200)
        address = clean_content(adresse, what="sender address", limit=320)
    except InvalidText as exc:
        raise InvalidInput(str(exc)) from None
    if not body and not pieces_jointes and not (metadata or {}).get("evenement"):
        raise InvalidInput("empty message")
    return {
        "canal": canal, "adresse": address, "verifie": verifie,
        "conversation": clean(conversation)[:400], "ext": ext,
        "fil": clean(reference_fil)[:400] if reference_fil else None, "texte": body,
        "pj": json.dumps(clean_json(list(pieces_jointes))), "recu": recu_le,
        "meta": json.dumps(clean_json(metadata or {})), FILES: tuple(files),
    }


FILES = "_fichiers"
"""The key of `inbound_params` holding the files' contents (not a SQL parameter)."""


async def _accept_in(session: AsyncSession, params: dict[str, Any]) -> Accepted:
    files: Sequence[ReceivedFile] = params.get(FILES, ())
    params = {k: v for k, v in params.items() if k != FILES}
    row = (await session.execute(text(
        "INSERT INTO messages (sens, canal, adresse, verifie, conversation, "
        "identifiant_externe, reference_fil, texte, pieces_jointes, recu_le, metadata, etat) "
        "VALUES ('entrant', :canal, :adresse, :verifie, :conversation, :ext, :fil, :texte, "
        "CAST(:pj AS jsonb), coalesce(:recu, now()), CAST(:meta AS jsonb), 'en_attente') "
        "ON CONFLICT (canal, identifiant_externe) WHERE sens = 'entrant' DO NOTHING "
        f"RETURNING {_COLUMNS}"), params)).one_or_none()
    if row is not None:
        for f in files:  # a redelivered message (below) stores nothing twice
            await session.execute(text(
                "INSERT INTO fichiers_recus (message_id, rang, nom, type_mime, taille, sha256, "
                "contenu) VALUES (:m, :r, :n, :t, :s, :h, :c)"),
                {"m": row.id, "r": f.rang, "n": clean(f.nom)[:300] or "fichier",
                 "t": f.type_mime[:200], "s": len(f.contenu),
                 "h": hashlib.sha256(f.contenu).hexdigest(), "c": f.contenu})
        return Accepted(_row(row), duplicate=False)
    existing = (await session.execute(text(
        f"SELECT {_COLUMNS} FROM messages WHERE sens = 'entrant' AND canal = :canal "
        "AND identifiant_externe = :ext"), params)).one()
    return Accepted(_row(existing), duplicate=True)


class MessagesMixin:
    db: Any

    async def accept_inbound(
        self,
        *,
        canal: str,
        adresse: str,
        texte: str,
        identifiant_externe: str,
        conversation: str,
        verifie: bool = False,
        reference_fil: str | None = None,
        pieces_jointes: Sequence[Any] = (),
        recu_le: datetime | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Accepted:
        """Store an inbound message once; a redelivery returns the stored one."""
        params = inbound_params(
            canal=canal, adresse=adresse, texte=texte, identifiant_externe=identifiant_externe,
            conversation=conversation, verifie=verifie, reference_fil=reference_fil,
            pieces_jointes=pieces_jointes, recu_le=recu_le, metadata=metadata)
        async with self.db.sessions.begin() as session:
            return await _accept_in(session, params)

    async def received_files(self, message_id: int) -> list[ReceivedFile]:
        """The contents kept with an inbound message, in their order."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT rang, nom, type_mime, contenu FROM fichiers_recus "
                "WHERE message_id = :m ORDER BY rang"), {"m": message_id})).all()
        return [ReceivedFile(r.rang, r.nom, r.type_mime, bytes(r.contenu)) for r in rows]

    async def read_cursor(self, canal: str, cle: str) -> str | None:
        async with self.db.sessions() as session:
            return await session.scalar(text(
                "SELECT valeur FROM curseurs_canal WHERE canal = :c AND cle = :k"),
                {"c": canal, "k": cle})

    @asynccontextmanager
    async def claim_inbound(self, *, message_id: int | None = None,
                            conversation: str | None = None) -> AsyncIterator[Claim | None]:
        """Hold the next processable inbound message (or a given one, or the next of one
        conversation) for the block."""
        extra = ""
        if message_id is not None:
            extra += " AND m.id = :mid"
        if conversation is not None:
            extra += " AND m.conversation = :conv"
        async with self.db.sessions() as session, session.begin():
            row = (await session.execute(text(_CLAIM_INBOUND.format(extra=extra)),
                                         {"mid": message_id, "conv": conversation})
                   ).one_or_none()
            if row is None:
                yield None
                return
            yield Claim(session, _row(row))

    async def finish_inbound(
        self,
        claim: Claim,
        *,
        etat: str,
        relation_id: int | None,
        reply: str | None = None,
        reply_metadata: dict[str, Any] | None = None,
        souvenirs: Sequence[dict[str, Any]] = (),
        erreur: str | None = None,
        inbound_metadata: dict[str, Any] | None = None,
    ) -> int | None:
        """Close a claim: mark the inbound message, queue the reply, write the souvenirs,
        all in the claim's transaction. Returns the outbound message id."""
        msg = claim.message
        await claim.execute(
            "UPDATE messages SET etat = :etat, relation_id = :rid, erreur = :err, maj_le = now(), "
            "tentatives = tentatives + 1, metadata = metadata || CAST(:meta AS jsonb) "
            "WHERE id = :id",
            {"etat": etat, "rid": relation_id, "err": erreur, "id": msg.id,
             "meta": json.dumps(clean_json(inbound_metadata or {}))})
        out_id = None
        if reply is not None:
            out_id = await insert_outbound(
                claim.session, canal=msg.canal, adresse=msg.reply_address, texte=reply,
                conversation=msg.conversation, relation_id=relation_id, en_reponse_a=msg.id,
                reference_fil=msg.reference_fil, genre="reply",
                metadata=_with_thread(msg, reply_metadata))
        for s in souvenirs:
            await insert_souvenir(claim.session, NewSouvenir(
                contenu=s["contenu"], type=s.get("type", "conversation"),
                source=s.get("source", msg.canal), importance=s.get("importance", 5),
                timestamp=s.get("timestamp"), relation_id=s.get("relation_id", relation_id),
                metadata=s.get("metadata", {})))
        claim.finished = True
        return out_id

    async def postpone_inbound(
        self, claim: Claim, *, delay_s: float, erreur: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Leave the message pending, to be retried after delay_s (degraded mode)."""
        await claim.execute(
            "UPDATE messages SET prochain_essai = now() + make_interval(secs => :d), "
            "erreur = :err, tentatives = tentatives + 1, maj_le = now(), "
            "metadata = metadata || CAST(:meta AS jsonb) WHERE id = :id",
            {"d": delay_s, "err": erreur, "meta": json.dumps(clean_json(metadata or {})),
             "id": claim.message.id})
        claim.finished = True

    async def conversation_busy(self, conversation: str, *, message_id: int) -> bool:
        """Whether another process is answering the conversation up to `message_id` now:
        an earlier pending message is due (so only a lock kept it from this process's
        claim), or, with none pending before it, the message itself is due but locked.
        False when they wait for a model (postponed): then so does this message."""
        async with self.db.sessions() as session:
            return bool(await session.scalar(text(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM messages WHERE conversation = :c "
                "  AND sens = 'entrant' AND etat = 'en_attente' AND id < :b) "
                "THEN EXISTS (SELECT 1 FROM messages WHERE conversation = :c "
                "  AND sens = 'entrant' AND etat = 'en_attente' AND id < :b "
                "  AND (prochain_essai IS NULL OR prochain_essai <= now())) "
                "ELSE EXISTS (SELECT 1 FROM messages WHERE id = :b AND etat = 'en_attente' "
                "  AND (prochain_essai IS NULL OR prochain_essai <= now())) END"),
                {"c": conversation, "b": message_id}))

    async def make_due(self, conversation: str) -> int:
        """Make the conversation's waiting messages due now (someone is there to read)."""
        async with self.db.sessions.begin() as session:
            result = await session.execute(text(
                "UPDATE messages SET prochain_essai = now() WHERE conversation = :c "
                "AND sens = 'entrant' AND etat = 'en_attente' AND prochain_essai > now()"),
                {"c": conversation})
        return int(result.rowcount or 0)

    async def queue_notice(self, claim: Claim, texte: str, *, relation_id: int | None) -> int:
        """Queue a short notice answering the claimed message, in the claim's transaction.
        Notices never enter the conversation history."""
        msg = claim.message
        return await insert_outbound(
            claim.session, canal=msg.canal, adresse=msg.reply_address, texte=texte,
            conversation=msg.conversation, relation_id=relation_id, en_reponse_a=msg.id,
            reference_fil=msg.reference_fil, genre="notice", metadata=_with_thread(msg, None))

    async def record_inbound_failure(
        self, message_id: int, erreur: str, *, retry_in_s: float, max_attempts: int
    ) -> bool:
        """After an unexpected error: retry later, or give up (etat 'erreur') after
        max_attempts. Returns True when the message was given up."""
        async with self.db.sessions.begin() as session:
            etat = (await session.execute(text(
                "UPDATE messages SET tentatives = tentatives + 1, erreur = :err, maj_le = now(), "
                "prochain_essai = now() + make_interval(secs => :d), "
                "etat = CASE WHEN tentatives + 1 >= :max THEN 'erreur' ELSE etat END "
                "WHERE id = :id AND etat = 'en_attente' RETURNING etat"),
                {"err": erreur[:2000], "d": retry_in_s, "max": max_attempts, "id": message_id}
            )).scalar_one_or_none()
        return etat == "erreur"

    async def get_message(self, message_id: int) -> StoredMessage:
        message_id = row_id(message_id, "message", max_id=MAX_MESSAGE_ID)
        async with self.db.sessions() as session:
            row = (await session.execute(text(f"SELECT {_COLUMNS} FROM messages WHERE id = :id"),
                                         {"id": message_id})).one_or_none()
        if row is None:
            raise NotFound(f"no message #{message_id}")
        return _row(row)

    async def replies_to(self, message_id: int) -> list[StoredMessage]:
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM messages WHERE en_reponse_a = :id ORDER BY id"),
                {"id": message_id})).all()
        return [_row(r) for r in rows]

    async def reply_of(self, message_id: int | None) -> tuple[str | None, bool]:
        """Axi's reply (not a notice) to an inbound message, and whether it must never
        leave the server; (None, False) when there is none."""
        if message_id is None:
            return None, False
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                "SELECT texte, coalesce((metadata->>'local_only')::boolean, false) AS lo "
                "FROM messages WHERE en_reponse_a = :id AND sens = 'sortant' "
                "AND NOT coalesce((metadata->>'avis')::boolean, false) ORDER BY id LIMIT 1"),
                {"id": message_id})).one_or_none()
        return (row.texte, bool(row.lo)) if row is not None else (None, False)

    async def conversation_history(self, conversation: str, *, current_id: int,
                                   limit: int = 40) -> tuple[list[StoredMessage], int]:
        """The conversation's last answered turns and replies (not notices), oldest first,
        and the absolute position of the first one in the whole conversation.

        Messages of one conversation are handled in order, so every answered inbound
        message is older than the current one; its reply may have a larger id.
        """
        # both halves use idx_messages_historique (migration 0007), whose predicate is
        # HISTORY_TURN word for word: the last turns by a backward index scan, the length
        # by an index-only count (the current message is not a turn yet: not counted)
        async with self.db.reads() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS}, (SELECT count(*) FROM messages h WHERE h.conversation = :c "
                f"AND ({_HISTORY_TURN.replace('metadata', 'h.metadata')})) "
                f"AS total FROM messages WHERE conversation = :c AND id <> :b "
                f"AND ({_HISTORY_TURN}) ORDER BY id DESC LIMIT :k"),
                {"c": conversation, "b": current_id, "k": limit})).all()
        total = rows[0].total if rows else 0
        return [_row(r) for r in reversed(rows)], total - len(rows)

    async def pending_counts(self) -> dict[str, int]:
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT sens || ':' || etat AS k, count(*) AS n FROM messages "
                "WHERE etat IN ('en_attente', 'a_envoyer') GROUP BY 1"))).all()
        return {r.k: r.n for r in rows}
