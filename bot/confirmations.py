"""Confirmations: "ne rien lancer sans accord Ludo" (DESIGN "Reaching people").

An action with side effects on Ludo's behalf (mail to a third party, changing a veille,
replacing the consignes, forgetting memories on request) is registered here by name and
is never run directly: `ask` stores a pending confirmation and shows the question to the
person asked (by default the créateur) with one button per choice. The answer comes back
as a `ButtonPressed` event through the inbox — never as text: text from outside (mails,
web pages, forwarded messages, a client's "oui") can neither create nor approve one — and
`answer` runs the action exactly once, inside the worker's claim transaction, only for
the person asked, only while pending and unexpired, and never after the refusing choice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.notify import Notifier
from bot.policy import OWNER_RELATION, Interlocutor
from memory.confirmations import ConfirmationRecord, parse_button
from memory.errors import InvalidInput, NotFound
from memory.messages import Claim
from memory.store import MemoryStore

log = logging.getLogger(__name__)

YES_NO: tuple[tuple[str, str], ...] = (("oui", "Oui"), ("non", "Non"))
REFUSALS = frozenset({"non"})
DEFAULT_EXPIRY = timedelta(days=2)


@dataclass(frozen=True)
class ActionContext:
    """What an action gets: the claim whose transaction it must write in (so its
    effects commit together with the confirmation's new state), the store, the
    confirmation, and the choice made."""

    claim: Claim
    store: MemoryStore
    confirmation: ConfirmationRecord
    choice: str

    @property
    def payload(self) -> dict[str, Any]:
        return self.confirmation.payload

    async def execute(self, sql: str, params: dict[str, Any]) -> Any:
        return await self.claim.execute(sql, params)


Action = Callable[[ActionContext], Awaitable[str]]
"""Runs the action for an accepting choice; returns what Ludo reads (French)."""

LetGo = Callable[[ActionContext], Awaitable[None]]
"""Runs, in the same transaction, when a confirmation ends without its action (refused,
or answered after its expiry): whatever waited on the answer is let go at once."""


class Confirmations:
    def __init__(self, store: MemoryStore, notifier: Notifier, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self._actions: dict[str, Action] = {}
        self._let_go: dict[str, LetGo] = {}

    def register(self, name: str, action: Action, *, on_refusal: LetGo | None = None) -> None:
        self._actions[name] = action
        if on_refusal is not None:
            self._let_go[name] = on_refusal

    @property
    def actions(self) -> list[str]:
        return sorted(self._actions)

    async def ask(self, action: str, text: str, payload: dict[str, Any], *,
                  ask: int | str | None = None, requested_by: int | None = None,
                  choices: Sequence[tuple[str, str]] = YES_NO,
                  expires_in: timedelta = DEFAULT_EXPIRY) -> ConfirmationRecord:
        """Store a pending confirmation of `action` and show `text` to the person asked
        (a person id or name; default: the créateur). Raises InvalidInput for an
        unknown action, NotFound when there is nobody to ask."""
        if action not in self._actions:
            raise InvalidInput(f"unknown action {action!r}")
        if ask is None:
            owners = [p for p in await self.store.list_people() if p.relation == OWNER_RELATION]
            if not owners:
                raise NotFound("no créateur to ask (add Ludo with `axi people add`)")
            ask = owners[0].id
        person = await self.store.get_person(ask)
        _, routes = await self.notifier.routes_for(person)
        record, _ = await self.store.create_confirmation(
            action=action, texte=text, payload=payload, choix=[c for c, _ in choices],
            labels=[label for _, label in choices], demande_a=person.id,
            demande_par=requested_by, expire_le=self.clock() + expires_in,
            routes=[(r.canal, r.adresse) for r in routes])
        log.info("confirmation #%s (%s) asked of %s", record.id, action, person.personne)
        return record

    async def answer(self, claim: Claim, who: Interlocutor, data: str) -> str:
        """Settle the confirmation a button names, in the claim's transaction; returns
        the French text for the person who pressed it."""
        parsed = parse_button(data)
        if parsed is None:
            return "Je ne reconnais pas ce bouton."
        confirmation_id, choice = parsed
        record = await self.store.lock_confirmation(claim, confirmation_id)
        if record is None or who.person is None or who.person.id != record.demande_a:
            # somebody else's question, or a forged one: nothing happens, nothing said
            log.warning("confirmation #%s answered by someone not asked (%s:%s)",
                        confirmation_id, who.channel, who.address)
            return "Cette demande ne t'est pas adressée." if who.form == "tu" else \
                "Cette demande ne vous est pas adressée."
        if record.etat != "en_attente":
            return f"Cette demande a déjà été traitée ({_STATE_FR.get(record.etat, record.etat)})."
        if choice not in record.choix:
            return "Ce choix ne fait pas partie de la demande."
        if record.expire_le <= self.clock():
            await self._refused(claim, record, choice)
            await self.store.settle_confirmation(claim, record.id, etat="expiree",
                                                 reponse=choice, resultat=None)
            return "Cette demande a expiré : rien n'a été fait."
        if choice in REFUSALS:
            await self._refused(claim, record, choice)
            await self.store.settle_confirmation(claim, record.id, etat="refusee",
                                                 reponse=choice, resultat=None)
            return "C'est noté : je ne fais rien."
        action = self._actions.get(record.action)
        if action is None:
            await self.store.settle_confirmation(claim, record.id, etat="echouee", reponse=choice,
                                                 resultat="action inconnue")
            return "Je ne sais plus faire cette action : rien n'a été fait."
        try:
            async with claim.session.begin_nested():  # its writes, or none of them
                result = await action(ActionContext(claim, self.store, record, choice))
        except Exception as exc:
            log.exception("confirmed action #%s (%s) failed", record.id, record.action)
            await self.store.settle_confirmation(claim, record.id, etat="echouee",
                                                 reponse=choice, resultat=str(exc)[:500])
            return "L'action a échoué : rien n'a été fait. Anthony peut regarder le journal."
        await self.store.settle_confirmation(claim, record.id, etat="executee", reponse=choice,
                                             resultat=result[:2000])
        return result


    async def _refused(self, claim: Claim, record: ConfirmationRecord, choice: str) -> None:
        let_go = self._let_go.get(record.action)
        if let_go is None:
            return
        try:
            async with claim.session.begin_nested():
                await let_go(ActionContext(claim, self.store, record, choice))
        except Exception:  # the refusal itself still stands
            log.exception("letting go of refused confirmation #%s (%s) failed", record.id,
                          record.action)


_STATE_FR = {"executee": "faite", "refusee": "refusée", "expiree": "expirée",
             "echouee": "échouée"}


# ------------------------------------------------------------------ built-in actions
async def replace_consignes(ctx: ActionContext) -> str:
    """Replace the active inner-circle consignes by the payload's `textes`."""
    texts = [t for t in ctx.payload.get("textes", []) if isinstance(t, str) and t.strip()]
    if not texts:
        raise InvalidInput("no consigne given")
    await ctx.execute("UPDATE consignes SET active = false, maj_le = now() "
                      "WHERE active AND audience = 'interne'", {})
    for t in texts:
        await ctx.execute("INSERT INTO consignes (texte, source) VALUES (:t, :s)",
                          {"t": t.strip()[:4000], "s": f"confirmation:{ctx.confirmation.id}"})
    return f"C'est fait : {len(texts)} consigne(s) remplacent les anciennes."


ADD_CONSIGNE = "consignes.ajouter"


async def add_consigne(ctx: ActionContext) -> str:
    """Add the payload's `texte` as an inner-circle consigne (source: who proposed it)."""
    texte = str(ctx.payload.get("texte") or "").strip()
    if not texte:
        raise InvalidInput("no consigne given")
    await ctx.execute("INSERT INTO consignes (texte, source) VALUES (:t, :s)",
                      {"t": texte[:4000],
                       "s": str(ctx.payload.get("source") or f"confirmation:{ctx.confirmation.id}")[:100]})
    return "C'est fait : la consigne est ajoutée."


PAIRING = "identite.associer"
PAIRING_CHOICES: tuple[tuple[str, str], ...] = (
    ("client", "Client"), ("équipe", "Équipe"), ("bloquer", "Bloquer"))


async def pair_identity(ctx: ActionContext) -> str:
    """Ludo said who an unknown sender is: create the person and their identity (or a
    blocked person, whose messages are then ignored). Payload: canal, adresse, nom."""
    from memory.errors import InvalidInput as BadName
    from memory.people import normalise_name

    canal, adresse = str(ctx.payload["canal"]), str(ctx.payload["adresse"])
    taken = await ctx.execute("SELECT relation_id FROM identites WHERE canal = :c AND adresse = :a",
                              {"c": canal, "a": adresse})
    if taken.scalar() is not None:
        return "Cette adresse est déjà associée à quelqu'un : rien n'a changé."
    try:
        name = normalise_name(str(ctx.payload.get("nom") or ""))
    except BadName:
        name = f"Contact {canal} {adresse}"
    # a name taken up to case and accents ("Ludô" is Ludo to the facts, which match
    # subjects folded): never given to a newcomer, who would speak "for himself" as Ludo
    if (await ctx.execute("SELECT 1 FROM relations WHERE axi_pli(personne) = axi_pli(:n)",
                          {"n": name})).scalar():
        name = f"{name} ({canal} {adresse})"[:200]
    relation = "équipe" if ctx.choice == "équipe" else "client"
    blocked = ctx.choice == "bloquer"
    person_id = (await ctx.execute(
        "INSERT INTO relations (personne, relation, bloque) VALUES (:n, :r, :b) RETURNING id",
        {"n": name, "r": relation, "b": blocked})).scalar_one()
    await ctx.execute("INSERT INTO identites (relation_id, canal, adresse) VALUES (:r, :c, :a)",
                      {"r": person_id, "c": canal, "a": adresse})
    if blocked:
        return f"C'est noté : {name} est bloqué, ses messages seront ignorés."
    return f"C'est noté : {name} est enregistré comme {relation}."


FORGET = "faits.oublier"


async def forget_facts(ctx: ActionContext) -> str:
    """End the validity of the facts listed in the question Ludo accepted (payload `ids`;
    kept, never deleted: what Axi believed and until when stays answerable)."""
    ids = [int(i) for i in ctx.payload.get("ids", []) if str(i).isdigit()]
    if not ids:
        raise InvalidInput("nothing to forget")
    rows = await ctx.execute(
        "UPDATE faits SET valide_jusqu_a = now(), maj_le = now() WHERE valide_jusqu_a IS NULL "
        "AND id = ANY(:ids) RETURNING id", {"ids": ids})
    count = len(rows.all())
    words = ctx.payload.get("texte", "")
    if not count:
        return f"Ces faits sur « {words} » avaient déjà changé : rien n'a été oublié."
    return f"C'est oublié : {count} fait(s) sur « {words} » ne comptent plus."


RELEASE_HELD = "message.repondre"
RELEASE_CHOICES: tuple[tuple[str, str], ...] = (("repondre", "Répondre"), ("non", "Laisser"))


async def release_held(ctx: ActionContext) -> str:
    """Ludo wants a held message answered after all (an email our server did not vouch
    for, an auto-reply…): it goes back to the queue, marked released, and is answered
    like any message from that address — as a stranger's when the address was not
    proved. Payload: message_id."""
    message_id = int(ctx.payload["message_id"])
    row = await ctx.execute(
        "UPDATE messages SET etat = 'en_attente', prochain_essai = NULL, erreur = NULL, "
        "maj_le = now(), metadata = metadata || '{\"libere\": true}'::jsonb "
        "WHERE id = :id AND sens = 'entrant' AND etat = 'retenu' RETURNING adresse",
        {"id": message_id})
    address = row.scalar()
    if address is None:
        return "Ce message n'est plus en attente de décision : rien n'a changé."
    return f"C'est noté : je réponds au message de {address}."


BUILT_IN: dict[str, Action] = {"consignes.remplacer": replace_consignes,
                               ADD_CONSIGNE: add_consigne, PAIRING: pair_identity,
                               FORGET: forget_facts, RELEASE_HELD: release_held}
