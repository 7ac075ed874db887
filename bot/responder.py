"""Step 3 of the spine for one claimed message: identify the sender, apply the policy,
build the context, ask the router, guard the form of address, and commit the reply with
the souvenirs of both turns. A button pressed (a confirmation answered) is settled here
too, without any model. Degraded mode lives here: when no model may answer, the message
waits (postponed in the inbox) and the person gets one short French notice; a message
that no allowed model can ever read is given up with a true explanation, so the
conversation moves on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from zoneinfo import ZoneInfo

from bot import backoff, commands, prompt_builder, tutoiement
from bot.channel import ChunkFn
from bot.confirmations import Confirmations
from bot.embedder import QueryVectors
from bot.facts_extraction import intent
from bot.gathered import (
    Gathered,
    carries_local_only,
    message_as_read,
    sent_turn,
    stays_local,
    supplied_history,
    without_local_only,
)
from bot.inbound import ButtonPressed, event_from_json
from bot.next_prefix import next_prefix
from bot.notices import (
    attachment_notice,
    busy_notice,
    far_too_large_notice,
    local_wait_notice,
    too_large_notice,
    waiting_notice,
)
from bot.policy import (
    CLOUD_READERS,
    OPERATOR,
    PAIRING_CHANNELS,
    TRUSTED_CHANNELS,
    Interlocutor,
    interlocutor,
    model_priority,
)
from bot.recall_prefetch import Recaller
from bot.responder_commands import CommandSteps
from bot.stable_prefix import CUTOFF_KEY, facts_cutoff
from llm.errors import AuthError, LLMError, LocalReserved, LocalTooBusy
from llm.gate import Priority
from llm.router import Router
from llm.types import ChatMessage, Reply
from memory.messages import Claim, StoredMessage
from memory.records import FactRecord, PersonRecord
from memory.store import MemoryStore

log = logging.getLogger(__name__)

HELD = "retenu"
"""The state of a message stored but not answered on Axi's own (`Inbound.hold`)."""

RETRIEVED_SOUVENIRS = 4
LOCAL_WAIT_NOTICE_S = 10.0
"""A message that must wait for the local model is told how long past this many seconds
expected (it sees "typing…" meanwhile)."""
DATA_ITEM_CHARS = 300
HISTORY_MESSAGES = 40
HISTORY_SHARE = 0.8
"""Of the context left by the system part, the history's (the rest: the turn's data and
message). Each move of the window re-reads the kept history (~2,000 tokens, half a minute
on the CPU, bot/next_prefix.py): 0.6 moved it near the tenth exchange, for unused room."""
FALLBACK_CONTEXT_TOKENS = 150_000

PersonOf = Callable[[str, str], int | None]
"""(channel, address) → the relation id an address names directly (the console's
`--as`), else None; given by the composition root from the channels."""


@dataclass(frozen=True)
class Composed:
    messages: list[ChatMessage]
    fits_local: bool
    inputs: prompt_builder.ContextInputs | None = None
    built: prompt_builder.BuiltPrompt | None = None


class Responder(CommandSteps):
    def __init__(self, store: MemoryStore, router: Router, *, num_ctx: int, reply_tokens: int,
                 timezone: str = "Europe/Paris", vectors: QueryVectors | None = None,
                 confirmations: Confirmations | None = None,
                 person_of: PersonOf | None = None):
        self.store = store
        self.router = router
        self.recaller = Recaller(store, limit=RETRIEVED_SOUVENIRS + 4, vectors=vectors)
        self.confirmations = confirmations
        self.person_of = person_of or (lambda channel, address: None)
        self.num_ctx = num_ctx
        self.reply_tokens = reply_tokens
        self.tz = ZoneInfo(timezone)
        self.system_mode: prompt_builder.SystemMode = "system"
        self.on_turn: Callable[[int, list[ChatMessage], str, str, list[ChatMessage] | None,
                                Priority], None] | None = None
        """Told each turn the local model answered (its prompt, raw reply, conversation
        and the next turn's prefix when the history window moves, bot/next_prefix.py):
        the extractor continues that prompt and prepares that prefix (bot/extractor.py)."""
        self.prepared: Callable[[str], Awaitable[None]] | None = None
        """Awaited before a conversation's turn asks for the model: its prefix being read
        ahead, if it is (bot/extractor.py, `prepared`)."""

    def use_first_user_system(self, model: str) -> None:
        """Mistral's Ollama template moves the system message into the LAST [INST] block,
        which would re-evaluate the persona on every turn; send it as a first user turn."""
        if "mistral" in model.lower():
            self.system_mode = "first_user"

    # ------------------------------------------------------------ identify
    async def identify(self, msg: StoredMessage) -> Interlocutor:
        person: PersonRecord | None = None
        if msg.canal in TRUSTED_CHANNELS:
            named = self.person_of(msg.canal, msg.adresse)
            if named is not None:
                person = await self.store.get_person(named)
            else:
                person = await self.store.find_by_identity(msg.canal, msg.adresse) or OPERATOR
        elif msg.verifie:
            person = await self.store.find_by_identity(msg.canal, msg.adresse)
        claimed = False
        if not msg.verifie and msg.canal not in TRUSTED_CHANNELS:  # never that person, but
            owner = await self.store.find_by_identity(msg.canal, msg.adresse)  # their words
            claimed = owner is not None and owner.jamais_hors_serveur  # may stay here
        who = interlocutor(person, channel=msg.canal, address=msg.adresse, verified=msg.verifie,
                           shared=msg.room is not None, claimed_local_only=claimed)
        self.recaller.identified(msg, who)
        return who

    def prefetch(self, msg: StoredMessage) -> None:
        self.recaller.prefetch(msg, self.identify)

    async def close(self) -> None:
        await self.recaller.close()

    # ------------------------------------------------------------ gather
    async def gather(self, msg: StoredMessage, who: Interlocutor) -> Gathered:
        """Everything the prompt needs, read concurrently (independent queries); recall
        was usually started when the message was accepted (prefetch)."""
        private = who.trust == "private"

        async def person_facts() -> list[FactRecord]:
            viewer = who.viewer  # None: a stranger, or a group where everyone would read them
            if viewer is None or not who.relation_id:
                return []
            return await self.store.facts_about(viewer.personne, relation_id=who.relation_id)

        async def related_facts() -> list[FactRecord]:
            if not private:
                return []
            return await self.store.facts_about_people_named_in(
                msg.texte, exclude=who.person.personne if who.person else None, limit=30)

        async def history() -> tuple[list[StoredMessage], int]:
            # the conversation the channel sent with the message, when it did (the site's
            # visitors: several may share one address), else the stored one
            supplied = supplied_history(msg)
            if supplied is not None:
                return supplied
            return await self.store.conversation_history(msg.conversation, current_id=msg.id,
                                                         limit=HISTORY_MESSAGES)

        consignes, own, related, (turns, offset), recalled = await asyncio.gather(
            self.store.list_consignes(inner_circle=private), person_facts(), related_facts(),
            history(), self.recaller.recall_for(msg, who),
        )
        in_history = {h.id for h in turns} | {msg.id}
        retrieved = [r for r in recalled
                     if r.souvenir.metadata.get("message_id") not in in_history
                     and r.souvenir.metadata.get("en_reponse_a") not in in_history][
            :RETRIEVED_SOUVENIRS]
        return Gathered(who=who, consignes=consignes, person_facts=own,
                        related_facts=related, history=turns, history_offset=offset,
                        retrieved=retrieved, now=datetime.now(self.tz))

    # ------------------------------------------------------------ handle
    async def handle(self, claim: Claim, *, live: ChunkFn | None = None) -> None:
        msg = claim.message
        who = await self.identify(msg)
        if who.blocked:
            await self.store.finish_inbound(claim, etat="ignore", relation_id=who.relation_id)
            return
        if msg.metadata.get("retenu") and not msg.metadata.get("libere"):
            # the channel said never answer it on our own (a mail our server did not vouch
            # for, an auto-reply, a sender over its cap): kept for Ludo, who may release it
            await self.store.finish_inbound(claim, etat=HELD, relation_id=who.relation_id)
            return
        event = event_from_json(msg.metadata.get("evenement"))
        if isinstance(event, ButtonPressed):
            await self._settle(claim, who, event)
            return
        if (who.person is None and msg.verifie and msg.canal in PAIRING_CHANNELS
                and not who.shared):  # in a group Axi answers anyone as the public
            await self._stranger(claim, who)
            return
        # a forwarded command is someone else's words: data, never an instruction
        command = None if msg.metadata.get("transfere") else commands.parse(msg.texte)
        asked = command is not None and command.name in commands.ASKED_OF_A_MODEL
        if command is not None and (not asked or not commands.allowed(command, who.person)
                                    or not command.args):
            await self._command(claim, who, command)
            return
        if not msg.texte.strip():  # an attachment alone, or an edit that emptied a message
            files = [a for a in msg.pieces_jointes if a.get("ref") != "original"]  # raw mail
            names = [str(a.get("filename") or "") for a in files]
            if names:
                kept = all(a.get("garde") for a in files)
                await self.store.queue_notice(claim, attachment_notice(who, names, kept=kept),
                                              relation_id=who.relation_id)
            await self.store.finish_inbound(claim, etat="traite", relation_id=who.relation_id)
            return
        gathered = await self.gather(msg, who)
        if who.channel in CLOUD_READERS:  # the reply itself leaves the server
            gathered = without_local_only(gathered)
        must_stay = (who.local_only or bool(msg.metadata.get("local_only"))
                     or (command is not None and command.name == "local"))
        try:
            composed = self.compose(msg, gathered)
        except prompt_builder.PromptTooLarge:
            await self._give_up(claim, who, far_too_large_notice(who), "prompt too large")
            return
        if not composed.fits_local and (must_stay or self.router.remote is None):
            await self._give_up(claim, who, too_large_notice(who, must_stay=must_stay),
                                "prompt too large for the local model")
            return
        withheld = carries_local_only(gathered)
        fallback = None
        if withheld and not must_stay:
            try:
                fallback = self.compose(msg, without_local_only(gathered), for_fallback=True)
            except prompt_builder.PromptTooLarge:
                fallback = None
        stays = must_stay or (withheld and fallback is None)
        priority = model_priority(who)
        if stays or self.router.remote is None:
            await self._say_the_wait(msg, who, composed.messages, priority)
        remote_first = command is not None and command.name == "claude"
        asks_remote = remote_first and not stays and self.router.remote is not None
        if self.prepared is not None and not asks_remote:  # (the fallback needs no prefix)
            await self.prepared(msg.conversation)
        try:
            reply = await self._ask(composed.messages, local_only=stays, fallback=fallback,
                                    live=live, priority=priority, remote_first=remote_first)
        except AuthError as exc:
            log.error("LLM configuration error for message #%s: %s", msg.id, exc)
            await self._wait(claim, who, exc)
            return
        except LLMError as exc:
            log.warning("no model can answer message #%s now: %s", msg.id, exc)
            await self._wait(claim, who, exc)
            return
        # a reply is local-only when local-only content was in the prompt it came from
        reply_local = must_stay or (withheld and reply.local)
        text = await self._guard(reply.text, who, local_only=reply_local)
        raw_reply = reply.text
        kind, _ = intent(msg.texte)
        speaker = who.display_name
        if reply.fallback_reason in (LocalTooBusy.reason, LocalReserved.reason):  # told why
            await self.store.queue_notice(claim, busy_notice(who, reply.fallback_reason),
                                          relation_id=who.relation_id)
        await self.store.finish_inbound(
            claim, etat="traite", relation_id=who.relation_id, reply=text,
            # the turn exactly as the model read it: the next prompt repeats it verbatim,
            # so Ollama reuses its cache past this turn's data block
            inbound_metadata={"tour_envoye": composed.messages[-1].content,
                              CUTOFF_KEY: facts_cutoff(gathered.history, gathered.person_facts,
                                                       gathered.now),
                              "tour_pour": [who.trust, who.relation_id],
                              # its data block held local-only items: never repeated to Claude
                              "tour_local_only": any(stays_local(r) for r in gathered.retrieved)
                              or any(stays_local(f) for f in (*gathered.related_facts,
                                                         *gathered.person_facts)),
                              "local_only": must_stay},
            reply_metadata={"fournisseur": reply.provider, "modele": reply.model,
                            "raison_repli": reply.fallback_reason, "local_only": reply_local},
            souvenirs=[
                {"contenu": msg.texte, "type": "conversation", "source": msg.canal,
                 "timestamp": msg.recu_le,
                 "metadata": {"message_id": msg.id, "auteur": speaker, "sens": "entrant",
                              "extraction": "a_faire", "intention": kind,
                              "local_only": must_stay, "conversation": msg.conversation}},
                {"contenu": text, "type": "conversation", "source": msg.canal,
                 "metadata": {"en_reponse_a": msg.id, "auteur": "Axi", "sens": "sortant",
                              "local_only": reply_local, "conversation": msg.conversation}},
            ],
        )
        if self.on_turn is not None and reply.local and reply.fallback_reason is None:
            # its extraction can continue this very prompt (the model's cache holds it);
            # in a live chat, the next turn's prefix is prepared if the window moves
            try:  # a hint for background work: never in the way of the reply
                following = (next_prefix(composed.inputs, composed.built, text) if live
                             is not None and composed.inputs and composed.built else None)
                self.on_turn(msg.id, composed.messages, raw_reply, msg.conversation, following,
                             priority)
            except Exception:
                log.warning("could not hand turn #%s to background work", msg.id, exc_info=True)

    def compose(self, msg: StoredMessage, g: Gathered, *, for_fallback: bool = False
                ) -> Composed:
        """The prompt (bot.prompt_builder): stable prefix first, the data and the clock last.
        A message too large for the local context is built for the fallback's window
        (`fits_local` False). The fallback's prompt repeats the turns as written, not as
        sent (a sent turn may hold data that must stay here), and says what was withheld."""
        history = [prompt_builder.Turn("user", (None if for_fallback else sent_turn(h, g.who))
                                or h.texte)
                   if h.sens == "entrant" else prompt_builder.Turn("assistant", h.texte)
                   for h in g.history]
        inputs = prompt_builder.ContextInputs(
            message=message_as_read(msg), now=g.now, person=g.who.person, channel=msg.canal,
            shared=g.who.shared,
            consignes=g.consignes, person_facts=g.person_facts, history=history,
            person_facts_until=facts_cutoff(g.history, g.person_facts, g.now),
            history_offset=g.history_offset, recalled=g.retrieved,
            relevant_facts=g.related_facts, form=g.who.form,
            num_ctx=FALLBACK_CONTEXT_TOKENS if for_fallback else self.num_ctx,
            reply_tokens=self.reply_tokens, system_mode=self.system_mode,
            history_share=HISTORY_SHARE,
            max_item_chars=DATA_ITEM_CHARS, timezone=str(self.tz), withheld=for_fallback)
        fits = True
        try:
            built = prompt_builder.build_prompt(inputs)
        except prompt_builder.PromptTooLarge:
            built = prompt_builder.build_prompt(replace(inputs, num_ctx=FALLBACK_CONTEXT_TOKENS))
            fits = False
        return Composed([ChatMessage(m["role"], m["content"])  # type: ignore[arg-type]
                         for m in built.messages], fits_local=fits and not for_fallback,
                        inputs=inputs, built=built)

    async def _guard(self, text: str, who: Interlocutor, *, local_only: bool) -> str:
        """Tutoiement/vouvoiement: fix by rules; ask the model to rewrite when unsure."""
        result = tutoiement.guard_reply(text, who.form)
        if not result.needs_llm_rewrite:
            return result.text
        form = "en tutoyant" if who.form == "tu" else "en vouvoyant"
        try:
            fixed = await self.router.chat([
                ChatMessage.system("Tu réécris un message sans rien changer d'autre que la "
                                   "façon de s'adresser au lecteur."),
                ChatMessage.user(f"Réécris ce message {form} le lecteur. Réponds uniquement "
                                 f"par le message réécrit.\n\n{result.text}"),
            ], task="summary", local_only=local_only, priority=model_priority(who))
        except LLMError as exc:
            log.warning("address rewrite failed, keeping the rule-based text: %s", exc)
            return result.text
        second = tutoiement.guard_reply(fixed.text.strip(), who.form)
        return second.text if fixed.text.strip() else result.text

    async def _ask(self, prompt: list[ChatMessage], *, local_only: bool,
                   fallback: Composed | None, live: ChunkFn | None,
                   remote_first: bool = False, priority: Priority = Priority.CLIENT_LIVE
                   ) -> Reply:
        alt = fallback.messages if fallback is not None else None
        if live is None or remote_first:
            return await self.router.chat(prompt, task="conversation", local_only=local_only,
                                          fallback_messages=alt, remote_first=remote_first,
                                          priority=priority)
        stream = self.router.stream(prompt, task="conversation", local_only=local_only,
                                    fallback_messages=alt, priority=priority)
        async for chunk in stream:
            live(chunk)
        assert stream.reply is not None
        return stream.reply

    async def _say_the_wait(self, msg: StoredMessage, who: Interlocutor,
                            prompt: list[ChatMessage], priority: Priority) -> None:
        """A message that waits for the local model whatever its wait: past a few seconds
        expected, one short notice of how long (sent now, in its own transaction)."""
        wait = self.router.expected_wait(prompt, priority)
        if wait is None or wait < LOCAL_WAIT_NOTICE_S or msg.tentatives:
            return
        try:
            await self.store.queue_outbound(
                canal=msg.canal, adresse=msg.reply_address, conversation=msg.conversation,
                texte=local_wait_notice(who, wait), relation_id=who.relation_id,
                en_reponse_a=msg.id, reference_fil=msg.reference_fil, genre="notice")
        except Exception as exc:  # a courtesy: never in the way of the reply
            log.warning("could not say the expected wait for #%s: %s", msg.id, exc)

    async def _wait(self, claim: Claim, who: Interlocutor, exc: LLMError) -> None:
        msg = claim.message
        meta = {}
        if not msg.metadata.get("avis_envoye"):
            await self.store.queue_notice(claim, waiting_notice(who, exc),
                                          relation_id=who.relation_id)
            meta["avis_envoye"] = True
        await self.store.postpone_inbound(
            claim, delay_s=backoff.WAIT_FOR_MODEL.delay(msg.tentatives + 1),
            erreur=f"{type(exc).__name__}: {exc}"[:2000], metadata=meta)

    async def _give_up(self, claim: Claim, who: Interlocutor, notice: str, reason: str) -> None:
        log.warning("message #%s given up: %s", claim.message.id, reason)
        await self.store.give_up(claim, notice=notice, reason=reason,
                                 relation_id=who.relation_id)
