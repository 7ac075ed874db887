"""Erasing a person on request, and the site's visitors' data after
AXI_VISITOR_RETENTION_DAYS (RGPD; issue 11, item 6).

Why here, in one module: a person's data lives in many tables (souvenirs, facts, messages
and their received files, identities, tokens, confirmations, notifications, contact
requests), linked by foreign keys and by JSON metadata (a conversation turn's souvenir
names its message in `metadata.message_id` / `metadata.en_reponse_a`; a confirmation's
payload names a message or an address). Erasing means finding every one of those links,
in the order the foreign keys allow (a fact's `source_souvenir_id` has no cascade), in ONE
transaction: all of it is gone, or nothing is.

- `forget_person(who)`: a known person (name or id) and everything of theirs, the
  `relations` row included.
- `forget_address(text)`: a raw address (an email address, `telegram:ID`, a site
  visitor key `visiteur-…`, `web:personne-3`…): its messages and what derives from them.
  An address that is a known person's identity forgets that person.
- `purge_visitor_data(days)`: the periodic clean-up — site visitors' messages (channel
  `site`, nobody's), what derives from them, their memos (questions to Ludo), and
  contact requests older than `days`. Never anything of a known person.

Each returns an `Erased` (counts per kind). `dry_run=True` does the same work and rolls it
back: the counts of what WOULD be erased, for the operator's confirmation.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from memory.errors import InvalidInput, MemoryStoreError, NotFound
from memory.lexicon import uncount_lexemes
from memory.people import CHANNELS, normalise_address
from memory.records import PersonRecord
from memory.site_contacts import MEMO_ACTION, contact_key
from memory.text import clean

VISITOR_CHANNEL = "site"
"""The channel of the agency website's visitors (their sender is `visiteur-<hex>`)."""
FORGET_CHANNELS = frozenset(CHANNELS | {VISITOR_CHANNEL})
LOCK_TIMEOUT = "20s"
"""How long forgetting waits for a row another transaction holds (a message being
answered right now) before saying so, rather than hanging."""
_CONVERSATION_SUFFIXES = ("non-vérifié", "boutons", "envois")  # bot.pipeline, memory.rows


class Busy(MemoryStoreError):
    """Some of the rows to erase are in use right now (a message being answered)."""


@dataclass(frozen=True)
class Erased:
    """Rows erased (or that would be, in a dry run), per kind."""

    souvenirs: int = 0
    faits: int = 0
    messages: int = 0
    fichiers: int = 0
    identites: int = 0
    jetons: int = 0
    confirmations: int = 0
    notifications: int = 0
    demandes_contact: int = 0
    personnes: int = 0

    @property
    def total(self) -> int:
        return sum(asdict(self).values())

    def to_json(self) -> dict[str, int]:
        """English keys, for scripts (`axi people forget --json`)."""
        return {_NAMES[k][1].replace(" ", "_"): n for k, n in asdict(self).items()}

    def in_words(self) -> str:
        """'3 messages, 2 souvenirs…' (English, for the operator); 'nothing' when empty."""
        parts = [f"{n} {_NAMES[k][n != 1]}" for k, n in asdict(self).items() if n]
        return ", ".join(parts) or "nothing"


_NAMES = {
    "souvenirs": ("souvenir", "souvenirs"), "faits": ("fact", "facts"),
    "messages": ("message", "messages"), "fichiers": ("received file", "received files"),
    "identites": ("address", "addresses"), "jetons": ("token", "tokens"),
    "confirmations": ("confirmation", "confirmations"),
    "notifications": ("notification", "notifications"),
    "demandes_contact": ("contact request", "contact requests"),
    "personnes": ("person", "persons"),
}


@dataclass(frozen=True)
class ForgetTarget:
    """Whom `forget` erases: a known person (with their addresses) or a raw address."""

    person: PersonRecord | None
    addresses: tuple[tuple[str, str], ...] = field(default=())

    def describe(self) -> str:
        shown = ", ".join(f"{c}:{a}" for c, a in self.addresses)
        if self.person is not None:
            return f"{self.person.personne} (#{self.person.id}{'; ' + shown if shown else ''})"
        return shown


def parse_address(value: str) -> tuple[str, str]:
    """A raw address as the operator types it: `email@domain`, `visiteur-…` (a site
    visitor), or `channel:address` (`telegram:123456`, `web:personne-3`, a conversation
    key such as `site:visiteur-ab12:non-vérifié`). InvalidInput otherwise."""
    raw = clean(value).strip()
    if not raw:
        raise InvalidInput("the address is empty")
    if ":" not in raw:
        if "@" in raw:
            return normalise_address("email", raw)
        if raw.startswith("visiteur-"):
            return _visitor(raw)
        raise InvalidInput(f"{raw!r} is neither a known person nor an address; write an "
                           "address as email@domain, visiteur-…, or channel:address "
                           "(e.g. telegram:123456789)")
    channel, _, address = raw.partition(":")
    channel = channel.strip().lower()
    address = address.strip()
    for suffix in _CONVERSATION_SUFFIXES:  # a conversation key names its address
        if address.endswith(":" + suffix):
            address = address[: -len(suffix) - 1]
    if channel not in FORGET_CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}; use one of: "
                           f"{', '.join(sorted(FORGET_CHANNELS))}")
    if channel == VISITOR_CHANNEL:
        return _visitor(address)
    return normalise_address(channel, address)


def _visitor(address: str) -> tuple[str, str]:
    if not address or len(address) > 320 or re.search(r"\s", address):
        raise InvalidInput(f"{address!r} is not a site visitor key")
    return VISITOR_CHANNEL, address


# ------------------------------------------------------------------ SQL pieces
_ADDRESS_MATCH = (
    # (canal, adresse) pairs as two arrays; email compared case-insensitively. A message
    # is theirs when sent from/to the address, or in the address's own conversation
    # (`canal:adresse`, or with a suffix: unverified, buttons, pushes).
    "EXISTS (SELECT 1 FROM unnest(CAST(:canaux AS text[]), CAST(:adresses AS text[])) "
    "AS a(c, ad) WHERE m.canal = a.c AND ("
    " (CASE WHEN a.c = 'email' THEN lower(m.adresse) = lower(a.ad) ELSE m.adresse = a.ad END)"
    " OR m.conversation = a.c || ':' || a.ad"
    " OR left(m.conversation, length(a.c || ':' || a.ad) + 1) = a.c || ':' || a.ad || ':'))"
)
_SOUVENIR_CONVERSATION = (
    "EXISTS (SELECT 1 FROM unnest(CAST(:canaux AS text[]), CAST(:adresses AS text[])) "
    "AS a(c, ad) WHERE s.metadata->>'conversation' = a.c || ':' || a.ad "
    "OR left(s.metadata->>'conversation', length(a.c || ':' || a.ad) + 1) "
    "= a.c || ':' || a.ad || ':')"
)


async def _ids(session: Any, sql: str, params: dict[str, Any]) -> list[int]:
    return [int(r[0]) for r in (await session.execute(text(sql), params)).all()]


async def _count(session: Any, sql: str, params: dict[str, Any]) -> int:
    return len((await session.execute(text(sql), params)).all())


def _texts(ids: list[int]) -> list[str]:
    """Ids as JSON metadata holds them, compared as text (`metadata->>'message_id'`)."""
    return [str(i) for i in ids]


async def _erase_derived(session: Any, message_ids: list[int], souvenir_ids: list[int],
                         *, fact_extra: str = "FALSE", params: dict[str, Any] | None = None
                         ) -> dict[str, int]:
    """Facts (from the souvenirs, or `fact_extra`), souvenirs, files and messages, in the
    order the foreign keys allow; counts."""
    p = {**(params or {}), "souv": souvenir_ids, "mids": message_ids}
    faits = await _count(session, "DELETE FROM faits WHERE source_souvenir_id = ANY(:souv) "
                                  f"OR {fact_extra} RETURNING id", p)
    await uncount_lexemes(session, souvenir_ids)
    souvenirs = await _count(session, "DELETE FROM souvenirs WHERE id = ANY(:souv) RETURNING id",
                             p)
    fichiers = int((await session.execute(text(
        "SELECT count(*) FROM fichiers_recus WHERE message_id = ANY(:mids)"), p)).scalar_one())
    messages = await _count(session, "DELETE FROM messages WHERE id = ANY(:mids) RETURNING id",
                            p)  # its files go with it (ON DELETE CASCADE)
    await session.execute(text("DELETE FROM envois_commences WHERE message_id = ANY(:mids)"), p)
    return {"faits": faits, "souvenirs": souvenirs, "fichiers": fichiers, "messages": messages}


class ForgetMixin:
    db: Any

    async def forget_target(self, who: str | int) -> ForgetTarget:
        """A person (name or id, as `axi people show` takes it) or else a raw address; an
        address that is someone's identity is that person. NotFound / InvalidInput when
        it is neither."""
        if isinstance(who, str) and re.fullmatch(r"\s*[0-9]{19,}\s*", who):
            raise NotFound(f"no person #{who.strip()[:20]}…")  # no id is that long
        try:
            person = await self.get_person(who)  # type: ignore[attr-defined]
        except NotFound:
            if isinstance(who, int) or re.fullmatch(r"\s*[0-9]+\s*", who):
                raise  # digits are a person's id (a Telegram id is telegram:ID)
            person = None
        if person is None:
            channel, address = parse_address(str(who))
            owner = None
            if channel != VISITOR_CHANNEL:
                owner = await self.find_by_identity(channel, address)  # type: ignore[attr-defined]
            if owner is None:
                return ForgetTarget(None, ((channel, address),))
            person = owner
        return ForgetTarget(person, tuple((i.canal, i.adresse) for i in person.identities))

    async def forget_person(self, who: str | int, *, dry_run: bool = False) -> Erased:
        """Erase a known person and everything of theirs (NotFound if unknown)."""
        person = await self.get_person(who)  # type: ignore[attr-defined]
        return await self.forget(ForgetTarget(
            person, tuple((i.canal, i.adresse) for i in person.identities)), dry_run=dry_run)

    async def forget_address(self, address: str, *, dry_run: bool = False) -> Erased:
        """Erase what a raw address left (its owner entirely, when it has one)."""
        channel, value = parse_address(address)
        owner = (await self.find_by_identity(channel, value)  # type: ignore[attr-defined]
                 if channel != VISITOR_CHANNEL else None)
        if owner is not None:
            return await self.forget_person(owner.id, dry_run=dry_run)
        return await self.forget(ForgetTarget(None, ((channel, value),)), dry_run=dry_run)

    async def forget(self, target: ForgetTarget, *, dry_run: bool = False) -> Erased:
        async with self.db.sessions() as session:
            tx = await session.begin()
            try:
                await session.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                erased = await _forget_in(session, target)
            except DBAPIError as exc:
                await tx.rollback()
                if "lock timeout" in str(exc.orig):
                    raise Busy("some of these messages are being answered right now; "
                               "retry in a minute") from None
                raise
            except BaseException:
                await tx.rollback()
                raise
            if dry_run:
                await tx.rollback()
            else:
                await tx.commit()
        return erased

    async def purge_visitor_data(self, older_than_days: int, *, dry_run: bool = False
                                 ) -> Erased:
        """Delete the site's visitors' messages (channel `site`, linked to no person) older
        than `older_than_days`, with their replies, files, souvenirs, the facts learnt from
        those souvenirs and the confirmations they raised; the visitors' memos asked of
        Ludo (and the messages asking them); and the contact requests (with the emails
        relaying them) older than that. Rows in use are left for the next run."""
        if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) \
                or older_than_days < 1:
            raise InvalidInput(f"a retention is a whole number of days ≥ 1, not "
                               f"{older_than_days!r}")
        async with self.db.sessions() as session:
            tx = await session.begin()
            try:
                erased = await _purge_in(session, older_than_days)
            except BaseException:
                await tx.rollback()
                raise
            if dry_run:
                await tx.rollback()
            else:
                await tx.commit()
        return erased


async def _forget_in(session: Any, target: ForgetTarget) -> Erased:
    pid = target.person.id if target.person is not None else None
    name = target.person.personne if target.person is not None else None
    canaux = [c for c, _ in target.addresses]
    adresses = [a for _, a in target.addresses]
    emails = [a.lower() for c, a in target.addresses if c == "email"]
    visitors = [a for c, a in target.addresses if c == VISITOR_CHANNEL]
    p: dict[str, Any] = {"pid": pid, "canaux": canaux, "adresses": adresses, "emails": emails,
                         "name": name, "visitors": visitors, "memo": MEMO_ACTION}
    by_person = "m.relation_id = CAST(:pid AS integer)" if pid is not None else "FALSE"

    # their messages, in and out (locked: a message being answered is waited for, so the
    # reply and souvenirs it commits are seen below), and the replies to them (in a group,
    # a reply goes to the room's address)
    mids = await _ids(session, f"SELECT id FROM messages m WHERE {by_person} OR "
                               f"{_ADDRESS_MATCH} ORDER BY id FOR UPDATE", p)
    mids += await _ids(session, "SELECT id FROM messages WHERE en_reponse_a = ANY(:m) "
                                "AND NOT id = ANY(:m) ORDER BY id FOR UPDATE", {"m": mids})
    # contact requests with their email, and the emails relaying them to the agency
    demandes = await _ids(session, "SELECT id FROM demandes_contact "
                                   "WHERE lower(email) = ANY(:emails) FOR UPDATE", p)
    # (the relay is a notification keyed `contact:<id>`: its messages, to the agency or
    # to Ludo, quote the whole request, with or without a Reply-To)
    relays = [contact_key(d) for d in demandes]
    p["relays"] = relays
    mids += await _ids(session, (
        "SELECT id FROM messages WHERE sens = 'sortant' AND NOT id = ANY(:m) AND "
        "(metadata->>'demande_contact' = ANY(:d) OR metadata->>'notification' = ANY(:r) "
        "OR lower(metadata->>'reply_to') = ANY(:emails)) "
        "FOR UPDATE"), {"m": mids, "d": _texts(demandes), "r": relays, "emails": emails})
    # confirmations asked by them, of them, or about their messages or addresses (a site
    # visitor's memo names its visitor); and the questions that showed them (they quote
    # what the person said)
    confs = await _ids(session, (
        "SELECT id FROM confirmations c WHERE "
        "(CAST(:pid AS integer) IS NOT NULL AND (c.demande_a = :pid "
        " OR (c.demande_par = :pid AND c.etat = 'en_attente'))) "
        "OR c.payload->>'message_id' = ANY(:mt) "
        "OR (c.action = :memo AND c.payload->>'visiteur' = ANY(CAST(:visitors AS text[]))) "
        "OR EXISTS (SELECT 1 FROM unnest(CAST(:canaux AS text[]), CAST(:adresses AS text[])) "
        " AS a(ca, ad) WHERE c.payload->>'canal' = a.ca AND c.payload->>'adresse' = a.ad) "
        "FOR UPDATE"), {**p, "mt": _texts(mids)})
    mids += await _ids(session, "SELECT id FROM messages WHERE metadata->>'confirmation' = "
                                "ANY(:c) AND NOT id = ANY(:m) FOR UPDATE",
                       {"c": _texts(confs), "m": mids})
    by_person_s = "s.relation_id = CAST(:pid AS integer)" if pid is not None else "FALSE"
    souvenirs = await _ids(session, (
        f"SELECT id FROM souvenirs s WHERE {by_person_s} "
        "OR s.metadata->>'message_id' = ANY(:mt) OR s.metadata->>'en_reponse_a' = ANY(:mt) "
        f"OR {_SOUVENIR_CONVERSATION} ORDER BY id FOR UPDATE"), {**p, "mt": _texts(mids)})
    # facts about them (linked, or whose subject is their name), claimed by them (`selon`
    # "Name (relation)"), or learnt from an erased souvenir
    fact_extra = "FALSE"
    if pid is not None:
        fact_extra = ("relation_id = CAST(:pid AS integer) OR axi_pli(sujet) = axi_pli(:name) "
                      "OR selon = :name OR left(selon, length(:name) + 2) = :name || ' ('")
    counts = await _erase_derived(session, mids, souvenirs, fact_extra=fact_extra, params=p)
    counts["confirmations"] = await _count(
        session, "DELETE FROM confirmations WHERE id = ANY(:c) RETURNING id", {"c": confs})
    counts["notifications"] = await _count(session, (
        "DELETE FROM notifications WHERE destinataire = :name OR cle = ANY(:relays) "
        "OR EXISTS (SELECT 1 FROM "
        "unnest(CAST(:canaux AS text[]), CAST(:adresses AS text[])) AS a(c, ad) "
        "WHERE destinataire IN (a.ad, a.c || ':' || a.ad)) RETURNING id"), p)
    counts["demandes_contact"] = await _count(
        session, "DELETE FROM demandes_contact WHERE id = ANY(:d) RETURNING id", {"d": demandes})
    if pid is not None:
        counts["identites"] = await _count(
            session, "DELETE FROM identites WHERE relation_id = :pid RETURNING id", p)
        counts["jetons"] = await _count(
            session, "DELETE FROM jetons WHERE relation_id = :pid RETURNING id", p)
        counts["personnes"] = await _count(
            session, "DELETE FROM relations WHERE id = :pid RETURNING id", p)
    return Erased(**counts)


async def _purge_in(session: Any, days: int) -> Erased:
    p: dict[str, Any] = {"days": days, "canal": VISITOR_CHANNEL}
    old = "now() - make_interval(days => :days)"
    # nobody's site messages (a row in use is skipped: the next run takes it)
    mids = await _ids(session, (
        "SELECT id FROM messages m WHERE m.canal = :canal AND m.relation_id IS NULL "
        f"AND m.cree_le < {old} AND NOT EXISTS (SELECT 1 FROM identites i "
        "WHERE i.canal = m.canal AND i.adresse = m.adresse) "
        "ORDER BY id FOR UPDATE SKIP LOCKED"), p)
    mids += await _ids(session, "SELECT id FROM messages WHERE en_reponse_a = ANY(:m) "
                                "AND relation_id IS NULL AND NOT id = ANY(:m) "
                                "ORDER BY id FOR UPDATE SKIP LOCKED", {"m": mids})
    demandes = (await session.execute(text(
        f"DELETE FROM demandes_contact WHERE cree_le < {old} RETURNING id, lower(email)"),
        p)).all()
    relays = [contact_key(r[0]) for r in demandes]
    mids += await _ids(session, (
        "SELECT id FROM messages WHERE sens = 'sortant' "
        "AND NOT id = ANY(:m) AND (metadata->>'notification' = ANY(:r) "
        "OR (relation_id IS NULL AND (metadata->>'demande_contact' = ANY(:d) "
        f"OR (lower(metadata->>'reply_to') = ANY(:emails) AND cree_le < {old})))) "
        "ORDER BY id FOR UPDATE SKIP LOCKED"),
        {**p, "m": mids, "d": _texts([r[0] for r in demandes]), "r": relays,
         "emails": sorted({r[1] for r in demandes})})
    linked = (await session.execute(text(
        "SELECT id, coalesce(metadata->>'message_id', metadata->>'en_reponse_a') AS mid "
        "FROM souvenirs WHERE relation_id IS NULL AND "
        "(metadata->>'message_id' = ANY(:mt) OR metadata->>'en_reponse_a' = ANY(:mt)) "
        "ORDER BY id"), {"mt": _texts(mids)})).all()
    locked = set(await _ids(session, "SELECT id FROM souvenirs WHERE id = ANY(:s) "
                                     "ORDER BY id FOR UPDATE SKIP LOCKED",
                            {"s": [r.id for r in linked]}))
    busy = {r.mid for r in linked if r.id not in locked}
    if busy:  # a souvenir in use (its facts being extracted): its turn waits for next run
        turns = [int(b) for b in busy if b is not None and b.isascii() and b.isdigit()]
        kept = set(await _ids(session, "SELECT id FROM messages WHERE id = ANY(:b) "
                                       "OR en_reponse_a = ANY(:b)", {"b": turns}))
        mids = [m for m in mids if m not in kept]
    souvenirs = [r.id for r in linked if r.id in locked and r.mid not in busy]
    # facts learnt from a visitor's words go with them (a visitor's claim, never a fact of
    # a known person's own)
    # visitors' memos (a question to Ludo quoting a visitor's words, with its IP and key),
    # with the messages that asked them; one whose question is in use waits for next run
    memos = await _ids(session, (
        f"SELECT id FROM confirmations WHERE action = :memo AND cree_le < {old} "
        "ORDER BY id FOR UPDATE SKIP LOCKED"), {**p, "memo": MEMO_ACTION})
    asked = (await session.execute(text(
        "SELECT id, metadata->>'confirmation' AS c FROM messages "
        "WHERE metadata->>'confirmation' = ANY(:c) AND NOT id = ANY(:m) ORDER BY id"),
        {"c": _texts(memos), "m": mids})).all()
    free = set(await _ids(session, "SELECT id FROM messages WHERE id = ANY(:q) "
                                   "ORDER BY id FOR UPDATE SKIP LOCKED",
                          {"q": [r.id for r in asked]}))
    held = {r.c for r in asked if r.id not in free}
    memos = [m for m in memos if str(m) not in held]
    mids += [r.id for r in asked if r.c not in held]
    counts = await _erase_derived(session, mids, souvenirs)
    counts["confirmations"] = await _count(session, (
        "DELETE FROM confirmations WHERE payload->>'message_id' = ANY(:mt) "
        "OR id = ANY(:memos) RETURNING id"), {"mt": _texts(mids), "memos": memos})
    counts["notifications"] = await _count(
        session, "DELETE FROM notifications WHERE cle = ANY(:r) RETURNING id", {"r": relays})
    counts["demandes_contact"] = len(demandes)
    return Erased(**counts)
