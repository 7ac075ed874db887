"""Who is Axi talking to, what may they see, and whose word is a fact? Pure rules, no I/O.
The one home of "who sees what": recall's filter, the prompt builder and the extractor
all ask here.

Identity comes only from a verified address (DESIGN "People"): an unverified sender is a
stranger whatever name they give. Créateur, administrateur and équipe (the inner circle)
see Axi's whole memory and are tutoyés; blocked people get no answer.

Who sees what: a souvenir reaches anyone outside the inner circle (clients, prospects,
strangers) only when it is public; in a shared room (a group) everyone reads the answer,
so there Axi answers as to the public, whoever asks. "About a person" is not "visible to that person": a
private note linked to a client (their negotiation) never reaches that client. A fact
reaches them when it is public, or when it is their own statement about themselves
(facts carry the relation of the person they were learnt from only then); claims reach
only the inner circle, always attributed.

Who may assert what: a verified person's statements about themselves, and the inner
circle's about anyone, are facts (from outside the inner circle, one that also names
someone else Axi knows — "Ludo m'a promis…" — is a claim: `speaks_for_others`).
Anything else — a client about someone else, an unverified stranger, text from emails,
web pages or forwarded messages — is at most a claim: attributed ("selon Mme Durand
(client)"), low confidence, never superseding a fact, never shown as truth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bot.tutoiement import Form, form_for
from llm.gate import Priority
from memory.records import ConsigneRecord, FactRecord, PersonRecord, SouvenirRecord
from memory.text import fold

INNER_CIRCLE = frozenset({"créateur", "administrateur", "équipe"})
OWNER_RELATION = "créateur"
"""Ludo: the person asked for confirmations and alerted by default."""
CLAIM_MAX_CONFIDENCE = 0.3
"""A claim is never held with more confidence than this (a fact's default is 0.7)."""
SELF_WORDS = frozenset({"je", "moi", "j'"})

Trust = Literal["private", "own", "public"]

PAIRING_CHANNELS = frozenset({"telegram"})
"""Channels where a verified but unknown sender (a Telegram user id nobody paired) gets one
polite answer and nothing from memory, while Ludo is asked who they are."""

TRUSTED_CHANNELS = {"console"}  # the local operator's terminal: whoever runs `axi` is trusted

OPERATOR = PersonRecord(
    id=0, personne="Opérateur local", relation="administrateur",
    comment_interagir="tutoie ; c'est la personne qui administre Axi depuis le terminal",
    details={}, cree_le=None, bloque=False, jamais_hors_serveur=False,  # type: ignore[arg-type]
)


@dataclass(frozen=True)
class Interlocutor:
    person: PersonRecord | None
    channel: str
    address: str
    verified: bool
    shared: bool = False
    """Said in a room several people read (a group): Axi answers as to the public there,
    whoever asks, since everyone reads the answer."""
    claimed_local_only: bool = False
    """From the address of a person whose messages never leave the server, not proved
    (a failed DMARC, a forward): not them as far as memory goes, but most likely their
    words, which stay here."""

    @property
    def known(self) -> bool:
        return self.person is not None

    @property
    def blocked(self) -> bool:
        return self.person is not None and self.person.bloque

    @property
    def relation_id(self) -> int | None:
        return self.person.id if self.person is not None and self.person.id else None

    @property
    def viewer(self) -> PersonRecord | None:
        """Whose visibility the answer gets: the person's, or nobody's in a shared room."""
        return None if self.shared else self.person

    @property
    def trust(self) -> Trust:
        if self.person is None or self.shared:
            return "public"
        if sees_private(self.person):
            return "private"
        return "own"

    @property
    def form(self) -> Form:
        if self.person is None:
            return "vous"
        return form_for(self.person.relation, self.person.comment_interagir)

    @property
    def local_only(self) -> bool:
        return bool((self.person is not None and self.person.jamais_hors_serveur)
                    or self.claimed_local_only)

    @property
    def display_name(self) -> str:
        return self.person.personne if self.person else "Interlocuteur inconnu"


def interlocutor(
    person: PersonRecord | None, *, channel: str, address: str, verified: bool,
    shared: bool = False, claimed_local_only: bool = False,
) -> Interlocutor:
    """Apply the identity rule: an unverified address never maps to a known person.
    `claimed_local_only`: it is the address of someone whose messages never leave the
    server (their words, most likely, stay here)."""
    if not verified and channel not in TRUSTED_CHANNELS:
        person = None
    return Interlocutor(person=person, channel=channel, address=address, verified=verified,
                        shared=shared, claimed_local_only=claimed_local_only)


def sees_private(person: PersonRecord | None) -> bool:
    """The inner circle (not blocked) sees private memory; nobody else does."""
    return person is not None and not person.bloque and person.relation in INNER_CIRCLE


def sees_souvenir(person: PersonRecord | None, souvenir: SouvenirRecord) -> bool:
    """Only public souvenirs reach clients and strangers, even those linked to them."""
    return souvenir.public or sees_private(person)


def sees_consigne(person: PersonRecord | None, consigne: ConsigneRecord) -> bool:
    """A consigne meant for the inner circle ('interne', the default) stays out of
    clients' and strangers' prompts; one meant for everyone ('tous') reaches them."""
    return consigne.audience == "tous" or sees_private(person)


def sees_fact(person: PersonRecord | None, fact: FactRecord) -> bool:
    """Claims: the inner circle only. Facts: public ones, and a person's own statements
    about themselves (`relation_id` is theirs)."""
    if fact.claim:
        return sees_private(person)
    if fact.public or sees_private(person):
        return True
    return person is not None and fact.relation_id is not None and fact.relation_id == person.id


def same_person(subject: str, person: PersonRecord) -> bool:
    """Whether a fact's subject names `person` (accent/case-insensitive, or "je")."""
    folded = " ".join(fold(subject).split())
    return folded in SELF_WORDS or folded == " ".join(fold(person.personne).split())


def _words(text: str) -> str:
    return " " + " ".join(re.sub(r"[^0-9a-z]+", " ", fold(text)).split()) + " "


def speaks_for_others(speaker: PersonRecord, statement: str, names: Iterable[str]) -> bool:
    """Whether a statement about oneself also says something of someone else Axi knows
    ("Ludo m'a promis une remise"): from outside the inner circle, that is a claim about
    them too — else a client's « je » would make her word about Ludo a fact, shown to
    Ludo as truth. `names`: the people Axi knows."""
    said = _words(statement)
    own = _words(speaker.personne)
    return any(w != " " and w != own and w in said for w in map(_words, names))


def asserts_fact(speaker: PersonRecord | None, subject: str, *, verified: bool) -> bool:
    """Whether `speaker` saying something about `subject` makes it a fact (else a claim):
    the inner circle about anyone, a verified person about themselves."""
    if speaker is None or not verified or speaker.bloque:
        return False
    return speaker.relation in INNER_CIRCLE or same_person(subject, speaker)


def attribution(speaker: PersonRecord | None, name: str | None, channel: str | None, *,
                own_words: bool = True) -> str:
    """Who a claim is attributed to, as Ludo reads it: "Mme Durand (client)", "un message
    transféré par Ludo (créateur)", "Interlocuteur inconnu (non vérifié, web)"; a name
    nobody verified is only the name someone gave."""
    where = f", {channel}" if channel else ""
    if speaker is not None:
        who = f"{speaker.personne} ({speaker.relation or 'relation inconnue'})"
        return who if own_words else f"un message transféré par {who}"
    given = " ".join((name or "").split())[:80]
    if not own_words:
        origin = f"un texte reçu ({channel})" if channel else "un texte reçu"
        return f"{origin}, signé {given}, non vérifié" if given else f"{origin}, non vérifié"
    if given and given not in {"Interlocuteur inconnu", "Inconnu"}:
        return f"quelqu'un se présentant comme {given} (non vérifié{where})"
    return f"Interlocuteur inconnu (non vérifié{where})"


def recall_privacy(who: Interlocutor) -> tuple[bool, int | None]:
    """What recall's filter depends on: private memory allowed, and whose souvenirs."""
    return who.trust == "private", who.relation_id


LIVE_CHANNELS = frozenset({"telegram", "web", "console", "site", "axis"})
"""Channels where a person waits, watching, for the answer (email is read later; Axis
waits inside its tool call)."""

CLOUD_READERS = frozenset({"axis"})
"""Channels whose replies are read in someone else's cloud (Axis lives in Claude.ai): the
prompt of a reply there never holds what must stay on the server, as for the fallback."""


def model_priority(who: Interlocutor) -> Priority:
    """Who gets the local model first (llm/gate.py): the inner circle in a live chat, then
    clients in a live chat, then email replies; background work comes after them all."""
    if who.channel not in LIVE_CHANNELS:
        return Priority.EMAIL
    return Priority.INNER_LIVE if sees_private(who.person) else Priority.CLIENT_LIVE


def may_change_memory(who: Interlocutor) -> bool:
    """Only Ludo and the administrator may make Axi forget (his own request is his accord)."""
    return who.person is not None and who.person.relation in {"créateur", "administrateur"}


ADMINISTRATORS = frozenset({OWNER_RELATION, "administrateur"})
"""Who runs Axi (Ludo, Anthony): they may hold an `admin` token (the details of /health and
/metrics) and get the alerts about Axi's own components (bot/monitor.py)."""


def may_administer(relation: str | None) -> bool:
    return relation in ADMINISTRATORS


def may_use_axis(person: PersonRecord) -> bool:
    """Whether an `axis` token of this person works: Axis reads Ludo's private memory, so
    only Axis itself and the inner circle; a token made for anyone else (a client) is
    refused, and one whose holder left the inner circle stops with it."""
    return person.relation == "axis" or sees_private(person)
