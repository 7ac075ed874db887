"""Step 3 of the spine for one claimed message: identify the sender, apply the policy,
build the context, ask the router, guard the form of address, and commit the reply with
the souvenirs of both turns. Degraded mode lives here: when no model may answer, the
message waits (postponed in the inbox) and the person gets one short French notice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot import address, context
from bot.channel import ChunkFn
from bot.embedder import QueryVectors
from bot.facts_extraction import intent
from bot.policy import OPERATOR, Interlocutor, interlocutor
from llm.errors import (
    AuthError,
    BudgetExceeded,
    LLMError,
    LocalOnlyUnavailable,
)
from llm.router import Router
from llm.types import ChatMessage, Reply
from memory.messages import Claim, StoredMessage
from memory.records import ConsigneRecord, FactRecord, PersonRecord, Recalled
from memory.store import MemoryStore
from memory.text import query_terms

log = logging.getLogger(__name__)

RETRIEVED_SOUVENIRS = 4
DATA_ITEM_CHARS = 300
HISTORY_MESSAGES = 40
MAX_WAIT_S = 300.0
FALLBACK_CONTEXT_TOKENS = 150_000
MAX_PREFETCHED = 256
MAX_SPECULATING = 2
MAX_KNOWN_SENDERS = 10_000


def wait_backoff(attempt: int) -> float:
    """Seconds before retrying a waiting message: 15 s, 30 s, 60 s… up to 5 minutes."""
    return min(MAX_WAIT_S, 15.0 * (2 ** max(attempt, 0)))


def waiting_notice(who: Interlocutor, exc: LLMError) -> str:
    if isinstance(exc, BudgetExceeded):
        cause = "mon budget de réflexion du mois est épuisé"
    elif isinstance(exc, LocalOnlyUnavailable):
        cause = "mon moteur local est indisponible et ce message ne doit pas quitter le serveur"
    else:
        cause = "mon moteur de réflexion est momentanément indisponible"
    if who.form == "tu":
        return (f"J'ai bien reçu ton message, mais {cause}. "
                "Je te réponds dès que possible, sans que tu aies à le renvoyer.")
    return (f"J'ai bien reçu votre message, mais {cause}. "
            "Je vous réponds dès que possible, sans que vous ayez à le renvoyer.")


@dataclass(frozen=True)
class Gathered:
    who: Interlocutor
    consignes: list[ConsigneRecord]
    person_facts: list[FactRecord]
    related_facts: list[FactRecord]
    history: list[StoredMessage]
    history_offset: int
    retrieved: list[Recalled]
    now: datetime


def carries_local_only(g: Gathered) -> bool:
    """Whether the prompt holds a turn or a souvenir that must never leave the server (a
    message sent local-only, or the reply to one): then the whole prompt stays local."""
    return (any(h.metadata.get("local_only") for h in g.history)
            or any(r.souvenir.metadata.get("local_only") for r in g.retrieved))


def _privacy(who: Interlocutor) -> tuple[bool, int | None]:
    """What recall's filter depends on: private memory allowed, and whose souvenirs."""
    return who.trust == "private", who.relation_id


def _retrieve_exception(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # consumed here; the worker recalls again if it failed


class Responder:
    def __init__(self, store: MemoryStore, router: Router, *, num_ctx: int, reply_tokens: int,
                 timezone: str = "Europe/Paris", vectors: QueryVectors | None = None):
        self._prefetched: dict[int, asyncio.Task[tuple[tuple[bool, int | None],
                                                       list[Recalled]]]] = {}
        self._known_privacy: dict[tuple[str, str, bool], tuple[bool, int | None]] = {}
        """Each sender's privacy filter as last identified: a speculative recall starts
        with it instead of identifying first (the worker checks it, so a stale guess only
        costs a second recall)."""
        self.store = store
        self.router = router
        self.vectors = vectors
        """Hybrid recall (full text + embeddings) once the memory holds vectors; None:
        full text only (AXI_EMBED_MODEL off)."""
        self.num_ctx = num_ctx
        self.reply_tokens = reply_tokens
        self.tz = ZoneInfo(timezone)
        self.system_mode: context.SystemMode = "system"

    def use_first_user_system(self, model: str) -> None:
        """Mistral's Ollama template moves the system message into the LAST [INST] block,
        which would re-evaluate the persona on every turn; send it as a first user turn."""
        if "mistral" in model.lower():
            self.system_mode = "first_user"

    # ------------------------------------------------------------ identify
    async def identify(self, msg: StoredMessage) -> Interlocutor:
        person: PersonRecord | None = None
        if msg.canal == "console":
            if msg.adresse.startswith("personne:"):
                person = await self.store.get_person(int(msg.adresse.split(":", 1)[1]))
            else:
                person = await self.store.find_by_identity("console", msg.adresse) or OPERATOR
        elif msg.verifie:
            person = await self.store.find_by_identity(msg.canal, msg.adresse)
        who = interlocutor(person, channel=msg.canal, address=msg.adresse, verified=msg.verifie)
        if len(self._known_privacy) >= MAX_KNOWN_SENDERS:
            self._known_privacy.clear()
        self._known_privacy[(msg.canal, msg.adresse, msg.verifie)] = _privacy(who)
        return who

    # ------------------------------------------------------------ gather
    async def gather(self, msg: StoredMessage, who: Interlocutor) -> Gathered:
        """Everything the prompt needs, read concurrently (independent queries); recall
        was usually started when the message was accepted (prefetch)."""
        private = who.trust == "private"

        async def person_facts() -> list[FactRecord]:
            if who.person is None or not who.relation_id:
                return []
            return await self.store.facts_about(who.person.personne, relation_id=who.relation_id)

        async def related_facts() -> list[FactRecord]:
            if not private:
                return []
            return await self.store.facts_about_people_named_in(
                msg.texte, exclude=who.person.personne if who.person else None, limit=30)

        consignes, own, related, (history, offset), recalled = await asyncio.gather(
            self.store.list_consignes(inner_circle=private), person_facts(), related_facts(),
            self.store.conversation_history(msg.conversation, current_id=msg.id,
                                            limit=HISTORY_MESSAGES),
            self._recall_for(msg, who),
        )
        in_history = {h.id for h in history} | {msg.id}
        retrieved = [r for r in recalled
                     if r.souvenir.metadata.get("message_id") not in in_history
                     and r.souvenir.metadata.get("en_reponse_a") not in in_history][
            :RETRIEVED_SOUVENIRS]
        return Gathered(who=who, consignes=consignes, person_facts=own,
                        related_facts=related, history=history, history_offset=offset,
                        retrieved=retrieved, now=datetime.now(self.tz))

    # ------------------------------------------------------------ recall
    def _recall(self, msg: StoredMessage, who: Interlocutor) -> Awaitable[list[Recalled]]:
        return self._recall_with(msg, _privacy(who))

    async def _recall_with(self, msg: StoredMessage,
                           privacy: tuple[bool, int | None]) -> list[Recalled]:
        private_ok, relation_id = privacy
        limit = RETRIEVED_SOUVENIRS + 4
        if (self.vectors is None or not query_terms(msg.texte)
                or not await self.vectors.ready()):
            return await self.store.recall(msg.texte, limit=limit, private_ok=private_ok,
                                           visible_to=relation_id, informative_only=True)
        # the same number of full-text candidates as without vectors (searched while the
        # message is embedded), fused (RRF) with as many nearest souvenirs; no neighbour
        # spreading: it seldom changes the few data items a prompt holds, and would cost
        # one more query on the reply's path
        return await self.store.recall_hybrid(
            msg.texte, self.vectors.vector(msg.texte), model=self.vectors.model,
            limit=limit, candidates=limit,
            private_ok=private_ok, visible_to=relation_id, informative_only=True,
            neighbours=0.0, min_similarity=self.vectors.min_similarity)

    def prefetch(self, msg: StoredMessage) -> None:
        """Start recall for a just-accepted message, so that it runs while a worker wakes
        up, claims the message and identifies the sender (recall is the longest read of a
        reply's context). The worker uses the result only if the sender's privacy filter
        is still the same (see _recall_for); otherwise it recalls again. At most
        MAX_SPECULATING run at once: during a burst of messages the workers are busy
        anyway, and every accepted message recalling at once made the inbox 10× slower."""
        async def speculate() -> tuple[tuple[bool, int | None], list[Recalled]]:
            privacy = self._known_privacy.get((msg.canal, msg.adresse, msg.verifie))
            if privacy is None:  # a sender not seen yet: identify first
                privacy = _privacy(await self.identify(msg))
            return privacy, await self._recall_with(msg, privacy)

        if sum(not t.done() for t in self._prefetched.values()) >= MAX_SPECULATING:
            return  # a burst: the workers are busy anyway, and accepting must stay fast
        while len(self._prefetched) >= MAX_PREFETCHED:  # claimed elsewhere: forget the oldest
            self._prefetched.pop(next(iter(self._prefetched))).cancel()
        task = asyncio.get_running_loop().create_task(speculate(), name=f"recall-{msg.id}")
        task.add_done_callback(_retrieve_exception)
        self._prefetched[msg.id] = task

    async def close(self) -> None:
        """Cancel the recalls started for messages no worker here claimed."""
        tasks = list(self._prefetched.values())
        self._prefetched.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _recall_for(self, msg: StoredMessage, who: Interlocutor) -> list[Recalled]:
        task = self._prefetched.pop(msg.id, None)
        if task is not None:
            try:
                privacy, recalled = await task
                if privacy == _privacy(who):
                    return recalled
            except Exception as exc:  # the speculation failed: recall now
                log.debug("prefetched recall of #%s failed: %s", msg.id, exc)
        return await self._recall(msg, who)

    # ------------------------------------------------------------ handle
    async def handle(self, claim: Claim, *, live: ChunkFn | None = None) -> None:
        msg = claim.message
        who = await self.identify(msg)
        if who.blocked:
            await self.store.finish_inbound(claim, etat="ignore", relation_id=who.relation_id)
            return
        gathered = await self.gather(msg, who)
        prompt = self.compose(msg, gathered)
        local_only = who.local_only or bool(msg.metadata.get("local_only")) or carries_local_only(
            gathered)
        try:
            reply = await self._ask(prompt, local_only=local_only, live=live)
        except AuthError as exc:
            log.error("LLM configuration error for message #%s: %s", msg.id, exc)
            await self._wait(claim, who, exc)
            return
        except LLMError as exc:
            log.warning("no model can answer message #%s now: %s", msg.id, exc)
            await self._wait(claim, who, exc)
            return
        text = await self._guard(reply.text, who, local_only=local_only)
        kind, _ = intent(msg.texte)
        speaker = who.display_name
        await self.store.finish_inbound(
            claim, etat="traite", relation_id=who.relation_id, reply=text,
            # the turn exactly as the model read it: the next prompt repeats it verbatim,
            # so Ollama reuses its cache past this turn's data block
            inbound_metadata={"tour_envoye": prompt[-1].content, "local_only": local_only},
            reply_metadata={"fournisseur": reply.provider, "modele": reply.model,
                            "raison_repli": reply.fallback_reason, "local_only": local_only},
            souvenirs=[
                {"contenu": msg.texte, "type": "conversation", "source": msg.canal,
                 "timestamp": msg.recu_le,
                 "metadata": {"message_id": msg.id, "auteur": speaker, "sens": "entrant",
                              "extraction": "a_faire", "intention": kind,
                              "local_only": local_only, "conversation": msg.conversation}},
                {"contenu": text, "type": "conversation", "source": msg.canal,
                 "metadata": {"en_reponse_a": msg.id, "auteur": "Axi", "sens": "sortant",
                              "local_only": local_only, "conversation": msg.conversation}},
            ],
        )

    def compose(self, msg: StoredMessage, g: Gathered) -> list[ChatMessage]:
        """The prompt (bot.context): stable prefix first, the data and the clock last.
        A message too large for the local context is built for the fallback's window;
        the router then sends it to Claude (or makes it wait, for local-only people)."""
        inputs = context.ContextInputs(
            message=msg.texte, now=g.now, person=g.who.person, channel=msg.canal,
            consignes=g.consignes, person_facts=g.person_facts,
            history=[context.Turn("user", h.metadata.get("tour_envoye") or h.texte)
                     if h.sens == "entrant" else context.Turn("assistant", h.texte)
                     for h in g.history],
            history_offset=g.history_offset, recalled=g.retrieved,
            relevant_facts=g.related_facts, form=g.who.form, num_ctx=self.num_ctx,
            reply_tokens=self.reply_tokens, system_mode=self.system_mode,
            max_item_chars=DATA_ITEM_CHARS,
            timezone=str(self.tz))
        try:
            built = context.build_prompt(inputs)
        except context.PromptTooLarge:
            built = context.build_prompt(replace(inputs, num_ctx=FALLBACK_CONTEXT_TOKENS))
        return [ChatMessage(m["role"], m["content"]) for m in built.messages]  # type: ignore[arg-type]

    async def _guard(self, text: str, who: Interlocutor, *, local_only: bool) -> str:
        """Tutoiement/vouvoiement: fix by rules; ask the model to rewrite when unsure."""
        result = address.guard_reply(text, who.form)
        if not result.needs_llm_rewrite:
            return result.text
        form = "en tutoyant" if who.form == "tu" else "en vouvoyant"
        try:
            fixed = await self.router.chat([
                ChatMessage.system("Tu réécris un message sans rien changer d'autre que la "
                                   "façon de s'adresser au lecteur."),
                ChatMessage.user(f"Réécris ce message {form} le lecteur. Réponds uniquement "
                                 f"par le message réécrit.\n\n{result.text}"),
            ], task="summary", local_only=local_only)
        except LLMError as exc:
            log.warning("address rewrite failed, keeping the rule-based text: %s", exc)
            return result.text
        second = address.guard_reply(fixed.text.strip(), who.form)
        return second.text if fixed.text.strip() else result.text

    async def _ask(self, prompt: list[ChatMessage], *, local_only: bool,
                   live: ChunkFn | None) -> Reply:
        if live is None:
            return await self.router.chat(prompt, task="conversation", local_only=local_only)
        stream = self.router.stream(prompt, task="conversation", local_only=local_only)
        async for chunk in stream:
            live(chunk)
        assert stream.reply is not None
        return stream.reply

    async def _wait(self, claim: Claim, who: Interlocutor, exc: LLMError) -> None:
        msg = claim.message
        meta = {}
        if not msg.metadata.get("avis_envoye"):
            await self.store.queue_notice(claim, waiting_notice(who, exc),
                                          relation_id=who.relation_id)
            meta["avis_envoye"] = True
        await self.store.postpone_inbound(claim, delay_s=wait_backoff(msg.tentatives),
                                          erreur=f"{type(exc).__name__}: {exc}"[:2000],
                                          metadata=meta)
