"""Who is Axi talking to, and what may they see? Pure rules, no I/O.

Identity comes only from a verified address (DESIGN "People"): an unverified sender is a
stranger whatever name they give. Créateur, administrateur and équipe see Axi's whole
memory and are tutoyés; clients and prospects see only what is public or about them and
are vouvoyés; strangers see only what is public; blocked people get no answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.address import Form, form_for
from bot.context import sees_private
from memory.records import PersonRecord

Trust = Literal["private", "own", "public"]

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
    def trust(self) -> Trust:
        if self.person is None:
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
        return bool(self.person is not None and self.person.jamais_hors_serveur)

    @property
    def display_name(self) -> str:
        return self.person.personne if self.person else "Interlocuteur inconnu"


def interlocutor(
    person: PersonRecord | None, *, channel: str, address: str, verified: bool
) -> Interlocutor:
    """Apply the identity rule: an unverified address never maps to a known person."""
    if not verified and channel not in TRUSTED_CHANNELS:
        person = None
    return Interlocutor(person=person, channel=channel, address=address, verified=verified)


def may_change_memory(who: Interlocutor) -> bool:
    """Only Ludo and the administrator may make Axi forget (his own request is his accord)."""
    return who.person is not None and who.person.relation in {"créateur", "administrateur"}
