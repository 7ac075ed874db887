"""The core's side of the Axis channel (bot/axis_contract.AxisAccess): what Axis — Ludo's
Claude.ai assistant, Axi's "big brother", NOT Axi — may read and do over MCP and the
earlier `/briefing` and `/memory` endpoints, and the mailbox Axi writes to for Axis.

What Axis sees (the choice, in one place): everything Axis reads goes to Anthropic's
cloud, exactly as a prompt sent to the Claude fallback would. So Axis reads what the
fallback may read for Ludo — his private memory (consignes, souvenirs, facts, claims
attributed) since Axis works for him in his own Claude.ai — and never what must stay on
the server: a souvenir or fact that bot/gathered.stays_local keeps local (the very rule
the responder applies before a fallback), nor anything linked to a person whose messages
never leave the server (`jamais_hors_serveur`). Talking to Axi (`parler_a_axi`) goes
through the pipeline like any message: there bot/policy applies (relation `axis` is not
the inner circle), and a reply marked local-only is never handed over.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

from bot.axis_connect import CONNECT, AxisOAuthService, approve_connection, refuse_connection
from bot.axis_contract import AxisRefused, MemoryUpdate
from bot.axis_text import (
    action_label,
    consignes_markdown,
    fact_line,
    parse_consignes,
    short,
    souvenir_line,
    when,
)
from bot.channel import Delivery
from bot.confirmations import ADD_CONSIGNE, Confirmations
from bot.gathered import stays_local
from bot.inbound import Inbound
from bot.policy import OWNER_RELATION
from bot.web_contract import TokenGrant
from memory.errors import InvalidInput, NotFound
from memory.records import FactRecord, Recalled, SouvenirRecord
from memory.store import MemoryStore
from memory.text import InvalidText, clean_content

log = logging.getLogger(__name__)

MAX_TALK_CHARS = 8000
RECENT_HOURS = 72
WITHHELD = ("Axi a répondu, mais sa réponse s'appuie sur des informations qui ne quittent "
            "jamais le serveur : elle reste chez Axi (Ludo peut la lire). Reformule sans ce "
            "sujet si tu as besoin d'une réponse ici.")


def may_leave(item: Recalled | FactRecord, local_people: set[int]) -> bool:
    """Whether Axis may read this souvenir or fact: what the Claude fallback may see."""
    if stays_local(item):
        return False
    linked = item.relation_id if isinstance(item, FactRecord) else item.souvenir.relation_id
    return linked is None or linked not in local_people


def _recalled(s: SouvenirRecord) -> Recalled:
    return Recalled(souvenir=s, relevance=0.0, score=0.0)


class AxisAccessService:
    def __init__(self, store: MemoryStore, confirmations: Confirmations, notifier: Any,
                 pipeline: Any, settings: Any):
        self.store, self.confirmations, self.notifier = store, confirmations, notifier
        self.pipeline, self.settings = pipeline, settings
        self.tz = ZoneInfo(getattr(settings, "timezone", "Europe/Paris"))
        self.oauth = AxisOAuthService(store, confirmations, clock=confirmations.clock)
        confirmations.register(CONNECT, approve_connection, on_refusal=refuse_connection)
        self._awaiting: set[int] = set()
        """Messages whose reply a tool call is waiting for: it returns the reply itself."""

    async def _local_people(self) -> set[int]:
        return {p.id for p in await self.store.list_people() if p.jamais_hors_serveur}

    # ------------------------------------------------------------------ talking
    async def talk(self, caller: TokenGrant, message: str, timeout_s: float) -> str:
        text = message.strip()
        if not text:
            raise AxisRefused("Le message est vide.")
        if len(text) > MAX_TALK_CHARS:
            raise AxisRefused(f"Message trop long : au plus {MAX_TALK_CHARS} caractères.")
        inbound = Inbound(channel=caller.channel, sender=caller.address, verified=True,
                          text=text, external_id=f"mcp-{uuid4()}", received_at=datetime.now(UTC))
        message_id = await self.pipeline.accept(inbound)
        self._awaiting.add(message_id)
        try:
            outcome = await self.pipeline.wait_reply(message_id, timeout_s)
            if outcome.reply is not None and outcome.reply_id is not None:
                # still awaited here: the outbox leaves this reply to the call
                return await self._hand_over(message_id, outcome.reply_id, outcome.reply)
        finally:
            self._awaiting.discard(message_id)
        # read again once no longer awaited: a reply the outbox skipped meanwhile is here
        found = await self.store.reply_outcome(message_id)
        if found.reply is not None and found.reply_id is not None:
            return await self._hand_over(message_id, found.reply_id, found.reply)
        said = "".join(f"\nAxi a fait savoir : {n}" for n in found.notices[-2:])
        if found.state == "en_attente" or outcome.state == "en_attente":
            return (f"Axi n'a pas encore répondu (message n°{message_id}) : sa réponse "
                    f"arrivera dans ta boîte (outil lire_messages).{said}")
        return f"Axi ne répondra pas à ce message (n°{message_id}, état {found.state}).{said}"

    async def _hand_over(self, message_id: int, reply_id: int, text: str) -> str:
        """One rule: Axis gets a reply in one place only. Returned by the call, it is in
        the mailbox already read, in one statement (the outbox's later delivery is then a
        no-op); if the outbox left it there first, unread — a reply committed as the call
        stopped waiting — the mailbox is where Axis reads it, and the call says so."""
        reply = await self.store.get_message(reply_id)
        answer = WITHHELD if reply.metadata.get("local_only") else text
        handed = await self.store.mailbox_handed_over(
            answer, source=f"réponse au message n°{message_id}", cle=f"message:{reply.id}")
        if handed is None:
            return (f"Axi a répondu (message n°{message_id}) : sa réponse est dans ta "
                    "boîte (outil lire_messages).")
        return answer

    async def deliver(self, delivery: Delivery) -> str:
        if delivery.in_reply_to is not None and delivery.in_reply_to in self._awaiting:
            return f"axis-appel-{delivery.message_id}"  # the tool call returns it
        try:
            stored = await self.store.get_message(delivery.message_id)
            local = bool(stored.metadata.get("local_only"))
        except NotFound:
            local = False
        text = WITHHELD if local else delivery.text
        if delivery.subject and not local:
            text = f"{delivery.subject}\n\n{text}"
        if delivery.kind == "confirmation" and delivery.choices and not local:
            text += "\n(Choix possibles : " + ", ".join(c for c, _ in delivery.choices) + ".)"
        source = {"reply": f"réponse au message n°{delivery.in_reply_to}",
                  "notice": f"avis sur le message n°{delivery.in_reply_to}"
                  if delivery.in_reply_to else "avis",
                  "push": "Axi", "confirmation": "question d'Axi"}.get(delivery.kind, "Axi")
        box_id = await self.store.mailbox_post(text, source=source,
                                               cle=f"message:{delivery.message_id}")
        return f"axis-boite-{box_id}"

    # ------------------------------------------------------------------ reading
    async def search(self, query: str, limit: int) -> str:
        limit = max(1, min(int(limit), 25))
        try:
            found = await self.store.recall(query, limit=limit * 3, private_ok=True)
        except InvalidInput as exc:
            raise AxisRefused("Recherche impossible : requête vide ou trop longue.") from exc
        local = await self._local_people()
        kept = [r for r in found if may_leave(r, local)][:limit]
        if not kept:
            return f"Rien trouvé dans la mémoire d'Axi pour « {short(query, 100)} »."
        return "Souvenirs d'Axi :\n" + "\n".join(souvenir_line(r.souvenir, self.tz) for r in kept)

    async def facts(self, subject: str) -> str:
        subject = " ".join(subject.split())
        if not subject or len(subject) > 200:
            raise AxisRefused("Donne un sujet (un nom, un lieu…), 200 caractères au plus.")
        found = await self.store.facts_about(subject, include_claims=True, limit=60)
        if not found:
            found = await self.store.facts_mentioning(subject, limit=40)
        local = await self._local_people()
        kept = [f for f in found if may_leave(f, local)]
        if not kept:
            return f"Axi ne connaît aucun fait sur « {short(subject, 100)} »."
        return f"Ce qu'Axi sait sur « {short(subject, 100)} » :\n" + "\n".join(
            fact_line(f, self.tz) for f in kept)

    async def briefing(self) -> str:
        now = datetime.now(self.tz)
        local = await self._local_people()
        parts = [f"Briefing d'Axi — {now:%d/%m/%Y %H:%M} (heure de Paris)"]
        consignes = await self.store.list_consignes(inner_circle=True)
        parts.append("Consignes en vigueur :\n" + ("\n".join(
            f"- {short(c.texte, 1000)}" + (" (pour tous)" if c.audience == "tous" else "")
            for c in consignes) or "Aucune."))
        recent = [s for s in await self.store.recent_souvenirs(hours=RECENT_HOURS, limit=40)
                  if may_leave(_recalled(s), local)][:12]
        parts.append(f"Événements récents ({RECENT_HOURS // 24} derniers jours) :\n" + (
            "\n".join(souvenir_line(s, self.tz) for s in recent) or "Rien de notable."))
        parts.append(await self._open_items(local))
        parts.append("État :\n" + await self._status())
        unread = await self.store.mailbox_unread()
        parts.append(f"Boîte d'Axis : {unread} message(s) non lu(s) (outil lire_messages).")
        return "\n\n".join(parts) + "\n"

    async def _open_items(self, local: set[int]) -> str:
        lines = ["En attente :"]
        pending = await self.store.list_confirmations(pending_only=True, limit=20)
        lines.append(f"- Questions attendant la réponse de Ludo : {len(pending)}")
        lines.extend(  # what is asked, never the question's text (it may quote anything)
            f"  - n°{c.id} : {action_label(c.action)} (posée le "
            f"{when(c.cree_le, self.tz)}, expire le {when(c.expire_le, self.tz)})"
            for c in pending[:10])
        held = await self.store.held_messages(limit=10)
        lines.append(f"- Messages retenus, sans réponse automatique : {len(held)}")
        for m in held:
            # verified or not: an unverified message from a never-cloud person's address
            # (a failed DMARC, a forward) is most likely theirs, and stays on the server
            person = await self.store.find_by_identity(m.canal, m.adresse)
            secret = m.metadata.get("local_only") or (person is not None and person.id in local)
            shown = "(contenu gardé sur le serveur)" if secret else short(m.texte, 160)
            lines.append(f"  - n°{m.id} de {m.canal}:{short(m.adresse, 80)} (reçu le "
                         f"{when(m.recu_le, self.tz)}) : {shown}")
        return "\n".join(lines)

    async def _status(self) -> str:
        pending = await self.store.pending_counts()
        stuck = await self.store.stuck_count()
        line = (f"Messages en attente : {pending.get('entrant:en_attente', 0)} (bloqués : "
                f"{stuck}) ; envois en attente : {pending.get('sortant:a_envoyer', 0)}.")
        router = getattr(getattr(self.pipeline, "responder", None), "router", None)
        if router is not None:
            state = {"closed": "disponible", "open": "indisponible",
                     "half_open": "en cours de vérification"}.get(router.breaker.state,
                                                                  router.breaker.state)
            spent = await self.store.claude_spend_this_month(timezone=str(self.tz))
            claude = "configuré" if router.remote is not None else "non configuré"
            line += (f"\nModèle local : {state}. Repli Claude : {claude} ; dépensé ce mois : "
                     f"{spent:.2f} €.")
        return line

    async def read_mailbox(self, unread_only: bool) -> str:
        items = await self.store.mailbox_list(unread_only=unread_only, limit=50)
        if not items:
            return "Aucun message non lu." if unread_only else "La boîte est vide."
        lines = ["Messages d'Axi pour toi (acquitte-les avec acquitter_messages) :"]
        for item in items:
            read = "" if item.lu_le is None else ", lu"
            lines.append(f"- n°{item.id} ({when(item.cree_le, self.tz)}, "
                         f"{item.source or 'Axi'}{read}) :\n{short(item.texte, 4000)}")
        return "\n".join(lines)

    async def acknowledge(self, ids: Sequence[int]) -> str:
        count = await self.store.mailbox_acknowledge(list(ids))
        return f"{count} message(s) marqué(s) comme lu(s)."

    # ------------------------------------------------------------------ writing
    async def add_consigne(self, caller: TokenGrant, text: str) -> str:
        """A consigne is in every inner-circle prompt from then on: Axis (whose own input
        may carry someone's injected words) only proposes it, and Ludo accepts it with a
        button; his own request adds it at once."""
        source = f"axis:{caller.person_name}"[:100]
        try:
            texte = clean_content(text, what="consigne", limit=4000)
        except InvalidText as exc:
            raise AxisRefused("Consigne refusée : vide ou trop longue (4000 caractères au "
                              "plus).") from exc
        if caller.relation == OWNER_RELATION:
            record = await self.store.add_consigne(texte, source=source)
            return f"Consigne n°{record.id} ajoutée (pour l'équipe, pas pour les clients)."
        try:
            asked = await self.confirmations.ask(
                ADD_CONSIGNE, f"{caller.person_name} propose d'ajouter cette consigne :\n"
                f"« {short(texte, 1500)} »\nD'accord ?",
                {"texte": texte, "source": source}, requested_by=caller.person_id)
        except (NotFound, InvalidInput) as exc:
            raise AxisRefused("Personne ne peut valider cette consigne : Ludo n'est pas "
                              "encore enregistré auprès d'Axi.") from exc
        return (f"Demande envoyée à Ludo (n°{asked.id}) : la consigne s'appliquera après "
                "son accord.")

    async def add_note(self, caller: TokenGrant, text: str) -> str:
        try:
            record = await self.store.remember(
                text, type="note", source="axis",
                metadata={"auteur": caller.person_name, "via": "axis"})
        except InvalidInput as exc:
            raise AxisRefused("Note refusée : vide ou trop longue.") from exc
        return f"Note n°{record.id} enregistrée dans la mémoire d'Axi."

    async def consignes_markdown(self) -> str:
        return consignes_markdown(await self.store.list_consignes(inner_circle=True))

    async def replace_consignes(self, caller: TokenGrant, markdown: str) -> MemoryUpdate:
        """Replace the internal consignes by the Markdown's: at once when Ludo asks it
        himself, else after his accord. A bullet identical to a consigne meant for
        everyone leaves that one as it is (the replacement touches internal ones only)."""
        texts = parse_consignes(markdown)
        for_all = {" ".join(c.texte.split()) for c in await self.store.list_consignes()
                   if c.audience == "tous"}
        texts = [t for t in texts if " ".join(t.split()) not in for_all]
        if not texts:
            raise AxisRefused("Rien à remplacer : ces consignes sont déjà celles pour tous.")
        if caller.relation == OWNER_RELATION:
            count = await self.store.replace_inner_consignes(
                texts, source=f"axis:{caller.person_name}")
            return MemoryUpdate(replaced=True, count=count,
                                message=f"Consignes remplacées : {count} en vigueur.")
        listed = "\n".join(f"- {short(t, 200)}" for t in texts[:15])
        more = f"\n… et {len(texts) - 15} autre(s)" if len(texts) > 15 else ""
        try:
            record = await self.confirmations.ask(
                "consignes.remplacer",
                f"{caller.person_name} propose de remplacer les consignes par ces "
                f"{len(texts)} consigne(s) :\n{listed}{more}\nD'accord ?",
                {"textes": texts}, requested_by=caller.person_id)
        except (NotFound, InvalidInput) as exc:
            raise AxisRefused("Personne ne peut valider ce remplacement : Ludo n'est pas "
                              "encore enregistré auprès d'Axi.") from exc
        return MemoryUpdate(replaced=False, count=len(texts), confirmation_id=record.id,
                            message=f"Demande envoyée à Ludo (n°{record.id}) : les "
                            f"{len(texts)} consigne(s) remplaceront les actuelles après son "
                            "accord.")
