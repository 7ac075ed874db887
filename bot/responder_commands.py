"""Step 3's answers that need no model: a command (/statut, /souvenirs, /oublie…), an
unknown sender's one polite answer and Ludo's pairing question, and a button pressed
(a confirmation settled).

Why apart from bot/responder.py: these are answered by rules and memory alone, never by
the router, and that file was past 500 lines. `Responder` inherits them (CommandSteps).
"""

from __future__ import annotations

import logging
from zoneinfo import ZoneInfo

from bot import commands
from bot.confirmations import FORGET, PAIRING, PAIRING_CHOICES, Confirmations
from bot.inbound import ButtonPressed
from bot.notices import STRANGER_NOTICE, pairing_question
from bot.policy import Interlocutor
from llm.router import Router
from memory.errors import InvalidInput, NotFound
from memory.messages import Claim
from memory.store import MemoryStore

log = logging.getLogger(__name__)

FORGET_BATCH = 20
"""Facts one /oublie question ends at most (its payload lists their ids)."""


class CommandSteps:
    """The answers without a model, for bot.responder.Responder."""

    store: MemoryStore
    router: Router
    confirmations: Confirmations | None
    tz: ZoneInfo

    async def _command(self, claim: Claim, who: Interlocutor, command: commands.Command
                       ) -> None:
        """A command: answered here, without the model (a refusal when not allowed)."""
        if not commands.allowed(command, who.person):
            answer = commands.refusal(command, who.form)
        elif who.shared and command.name in commands.PRIVATE_ONLY:
            answer = commands.not_in_a_group(command, who.form)
        elif commands.SPECS[command.name].needs_args and not command.args:
            answer = commands.missing_args(command)
        elif command.name in ("start", "aide"):
            answer = commands.help_text(who.person)
        elif command.name == "statut":
            answer = await self._status()
        elif command.name == "souvenirs":
            found = await self.store.recall(command.args, limit=5, private_ok=True)
            answer = ("Rien trouvé dans ma mémoire." if not found else
                      "Ce que je retrouve :\n" + "\n".join(
                          f"- {r.souvenir.timestamp.astimezone(self.tz):%d/%m/%Y} : "
                          f"{' '.join(r.souvenir.contenu.split())[:200]}" for r in found))
        elif command.name == "consignes":
            listed = await self.store.list_consignes(inner_circle=True)
            answer = ("Aucune consigne en vigueur." if not listed else
                      "Consignes en vigueur :\n" + "\n".join(
                          f"- {c.texte}" + (" (pour tous)" if c.audience == "tous" else "")
                          for c in listed))
        elif command.name == "axis":
            answer = await self._ask_axis(claim, who, command.args)
        else:  # oublie: only after Ludo's accord, as every action with side effects
            answer = await self._ask_to_forget(who, command.args)
        await self.store.queue_notice(claim, answer, relation_id=who.relation_id)
        await self.store.finish_inbound(claim, etat="traite", relation_id=who.relation_id)

    async def _ask_axis(self, claim: Claim, who: Interlocutor, question: str) -> str:
        """`/axis question`: a question Axi leaves in Axis's mailbox (what Axis reads goes
        to Anthropic's cloud: never a message that must stay on the server)."""
        if who.local_only or claim.message.metadata.get("local_only"):
            return ("Ce message doit rester sur le serveur : je ne le transmets pas à Axis "
                    "(il vit chez Anthropic).")
        assert self.confirmations is not None
        axis = await self.store.ensure_axis_person()
        await self.confirmations.notifier.notify(
            axis, f"Question de {who.display_name} : {question}",
            key=f"axis:question:{claim.message.id}", kind="notice")
        return "C'est transmis à Axis : il le trouvera dans sa boîte à sa prochaine visite."

    async def _ask_to_forget(self, who: Interlocutor, words: str) -> str:
        """List what `/oublie words` would end, and ask before doing it."""
        assert who.person is not None and self.confirmations is not None
        # claims too: a lie a client told reaches Ludo's prompts (attributed) and must be
        # his to end, or forgetting it would end the true fact and keep the lie
        found = await self.store.facts_mentioning(words, limit=FORGET_BATCH + 1,
                                                  include_claims=True)
        left = ""
        if len(found) > FORGET_BATCH:  # said, or Ludo believes it all forgotten
            found = found[:FORGET_BATCH]
            left = (f"\nD'autres faits parlent encore de « {words} » : je n'en oublie que "
                    f"{FORGET_BATCH} à la fois, relance /oublie ensuite.")
        if not found:
            return (f"Je n'ai aucun fait qui parle de « {words} » (mots entiers, au moins "
                    "trois lettres) : rien à oublier.")
        listed = "\n".join(f"- {f.sujet} {f.predicat} {f.objet}"
                           + (f" (selon {f.selon})" if f.selon else "") for f in found[:10])
        more = f"\n… et {len(found) - 10} autre(s)" if len(found) > 10 else ""
        await self.confirmations.ask(
            FORGET, f"Tu m'as demandé d'oublier « {words} ». Je mettrais fin à ces faits "
            f"(ils restent dans l'historique) :\n{listed}{more}{left}\nD'accord ?",
            {"texte": words, "ids": [f.id for f in found]}, ask=who.person.id,
            requested_by=who.relation_id)
        return "Je te demande confirmation avant d'oublier quoi que ce soit."

    async def _status(self) -> str:
        pending = await self.store.pending_counts()
        stuck = await self.store.stuck_count()
        spent = await self.store.claude_spend_this_month(timezone=str(self.tz))
        local = {"closed": "disponible", "open": "indisponible (je réessaie bientôt)",
                 "half_open": "en cours de vérification"}.get(self.router.breaker.state,
                                                              self.router.breaker.state)
        claude = "configuré" if self.router.remote is not None else "non configuré"
        waiting = max(0, pending.get("entrant:en_attente", 0) - 1)  # not this /statut
        return (f"Messages en attente : {waiting} "
                f"(bloqués : {stuck}) ; envois en attente : "
                f"{pending.get('sortant:a_envoyer', 0)}.\nModèle local : {local}. "
                f"Repli Claude : {claude} ; dépensé ce mois : {spent:.2f} €.")

    async def _stranger(self, claim: Claim, who: Interlocutor) -> None:
        """An unknown sender on a paired channel: one polite answer, nothing from memory,
        and Ludo asked who they are (once: later messages wait, stored, unanswered)."""
        msg = claim.message
        if self.confirmations is not None:
            pending = await self.store.pending_confirmation_about(PAIRING, "adresse", msg.adresse)
            if pending is not None:
                await self.store.finish_inbound(claim, etat="ignore", relation_id=None)
                return
            try:
                await self.confirmations.ask(
                    PAIRING, pairing_question(msg.canal, msg.adresse,
                                              msg.metadata.get("nom_affiche"), msg.texte),
                    {"canal": msg.canal, "adresse": msg.adresse,
                     "nom": msg.metadata.get("nom_affiche") or ""},
                    choices=PAIRING_CHOICES)
            except (NotFound, InvalidInput) as exc:  # no créateur yet: the answer still goes
                log.warning("cannot ask who %s:%s is: %s", msg.canal, msg.adresse, exc)
        await self.store.queue_notice(claim, STRANGER_NOTICE, relation_id=None)
        await self.store.finish_inbound(claim, etat="traite", relation_id=None)

    async def _settle(self, claim: Claim, who: Interlocutor, event: ButtonPressed) -> None:
        """A button pressed: settle the confirmation it names (no model involved)."""
        if self.confirmations is None:
            answer = "Je ne peux pas traiter cette réponse ici."
        else:
            answer = await self.confirmations.answer(claim, who, event.data)
        await self.store.queue_notice(claim, answer, relation_id=who.relation_id)
        await self.store.finish_inbound(claim, etat="traite", relation_id=who.relation_id)
