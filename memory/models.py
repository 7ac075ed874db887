"""SQLAlchemy models of Axi's memory. The database speaks French (Ludo and Anthony read
it in psql), so tables and columns keep their French names; classes are English.

The seed tables `souvenirs`, `faits` and `relations` keep the seed's columns; what the
design needs on top of them is added beside (never renamed). The migrations in
`memory/migrations/versions` are the source of truth for DDL; these models mirror them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSVECTOR
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

SEARCH_VECTOR_SQL = (
    "to_tsvector('french'::regconfig, contenu) "
    "|| to_tsvector('french'::regconfig, axi_pli(contenu))"
)
"""Search vector: stems of the text as written and of its accent-free form, so a query
with or without accents meets the same stems (see memory.text.tsquery_text)."""


class Base(DeclarativeBase):
    pass


class Souvenir(Base):
    """Anything Axi lived: a message, an action, an observation, a note."""

    __tablename__ = "souvenirs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    type: Mapped[str] = mapped_column(String(50))
    source: Mapped[str | None] = mapped_column(String(100))
    contenu: Mapped[str] = mapped_column(Text)
    resume: Mapped[str | None] = mapped_column(Text)
    importance: Mapped[int | None] = mapped_column(Integer, server_default=text("5"))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    # Added by Axi (not in the seed)
    relation_id: Mapped[int | None] = mapped_column(
        ForeignKey("relations.id", ondelete="SET NULL")
    )
    public: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    recherche: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(SEARCH_VECTOR_SQL, persisted=True)
    )


class Fact(Base):
    """A fact (subject, predicate, object, confidence) with its validity."""

    __tablename__ = "faits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sujet: Mapped[str] = mapped_column(String(200))
    predicat: Mapped[str] = mapped_column(String(200))
    objet: Mapped[str] = mapped_column(Text)
    source_souvenir_id: Mapped[int | None] = mapped_column(ForeignKey("souvenirs.id"))
    confiance: Mapped[float | None] = mapped_column(Float, server_default=text("1.0"))
    cree_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    maj_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Added by Axi
    valide_depuis: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    valide_jusqu_a: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    remplace_par: Mapped[int | None] = mapped_column(ForeignKey("faits.id", ondelete="SET NULL"))
    relation_id: Mapped[int | None] = mapped_column(
        ForeignKey("relations.id", ondelete="SET NULL")
    )
    public: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    selon: Mapped[str | None] = mapped_column(Text)  # NULL: a fact; else a claim, by whom
    jamais_hors_serveur: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class Relation(Base):
    """A person Axi knows, how they relate to the business and how to talk to them."""

    __tablename__ = "relations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    personne: Mapped[str] = mapped_column(String(200))
    relation: Mapped[str | None] = mapped_column(String(100))
    details: Mapped[dict[str, Any] | None] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb")
    )
    comment_interagir: Mapped[str | None] = mapped_column(Text)
    cree_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Added by Axi
    bloque: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    jamais_hors_serveur: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))


class Identity(Base):
    """A verified address (channel + address) that identifies a relation."""

    __tablename__ = "identites"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    relation_id: Mapped[int] = mapped_column(ForeignKey("relations.id", ondelete="CASCADE"))
    canal: Mapped[str] = mapped_column(String(30))
    adresse: Mapped[str] = mapped_column(String(320))
    cree_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Instruction(Base):
    """A consigne: a standing instruction, always in Axi's context while active."""

    __tablename__ = "consignes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    texte: Mapped[str] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    source: Mapped[str | None] = mapped_column(String(100))
    cree_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    maj_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    audience: Mapped[str] = mapped_column(String(10), server_default=text("'interne'"))  # | tous


class Message(Base):
    """One message in or out: the durable inbox and outbox of the pipeline."""

    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    sens: Mapped[str] = mapped_column(String(10))  # entrant | sortant
    canal: Mapped[str] = mapped_column(String(30))
    adresse: Mapped[str] = mapped_column(String(320))
    verifie: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    relation_id: Mapped[int | None] = mapped_column(
        ForeignKey("relations.id", ondelete="SET NULL")
    )
    conversation: Mapped[str] = mapped_column(String(400))
    identifiant_externe: Mapped[str | None] = mapped_column(String(200))
    reference_fil: Mapped[str | None] = mapped_column(String(400))
    texte: Mapped[str] = mapped_column(Text)
    pieces_jointes: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb")
    )
    etat: Mapped[str] = mapped_column(String(20))
    tentatives: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    prochain_essai: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    erreur: Mapped[str | None] = mapped_column(Text)
    en_reponse_a: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    recu_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    cree_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    maj_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReceivedFile(Base):
    """The content of a file someone sent (a Telegram photo, a mail's attachment), kept
    with its message up to the channel's size limit."""

    __tablename__ = "fichiers_recus"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    rang: Mapped[int] = mapped_column(Integer)  # its place among the message's attachments
    nom: Mapped[str] = mapped_column(Text)
    type_mime: Mapped[str] = mapped_column(Text)
    taille: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(Text)
    contenu: Mapped[bytes] = mapped_column(LargeBinary)
    cree_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class LLMCall(Base):
    """One attempt against a chat model (local or Claude): the local share, the Claude
    spend and the local server's own timings (`axi llm status`) come from these rows."""

    __tablename__ = "appels_llm"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    cree_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    fournisseur: Mapped[str] = mapped_column(String(20))  # "ollama" or "anthropic"
    modele: Mapped[str] = mapped_column(String(200))
    tache: Mapped[str] = mapped_column(String(50))
    jetons_entree: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    jetons_sortie: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    latence_ms: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    succes: Mapped[bool] = mapped_column(Boolean)
    erreur: Mapped[str | None] = mapped_column(Text)
    raison_repli: Mapped[str | None] = mapped_column(Text)
    cout_eur: Mapped[float] = mapped_column(Numeric(12, 6, asdecimal=False),
                                            server_default=text("0"))
    # the local server's account of the call (migration 0015; None for Claude, older rows)
    jetons_caches: Mapped[int | None] = mapped_column(Integer)  # prompt tokens from the cache
    caches_estimes: Mapped[bool | None] = mapped_column(Boolean)  # jetons_caches estimated
    jetons_evalues: Mapped[int | None] = mapped_column(Integer)  # prompt tokens evaluated
    duree_prompt_ms: Mapped[int | None] = mapped_column(Integer)
    duree_generation_ms: Mapped[int | None] = mapped_column(Integer)
    duree_chargement_ms: Mapped[int | None] = mapped_column(Integer)
    duree_totale_ms: Mapped[int | None] = mapped_column(Integer)
    attente_ms: Mapped[int | None] = mapped_column(Integer)  # in Axi's queue (the gate)


class ChannelCursor(Base):
    """Where a channel stopped reading its source (Telegram offset, IMAP UID…)."""

    __tablename__ = "curseurs_canal"

    canal: Mapped[str] = mapped_column(String(30), primary_key=True)
    cle: Mapped[str] = mapped_column(String(200), primary_key=True)
    valeur: Mapped[str] = mapped_column(Text)
    maj_le: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
