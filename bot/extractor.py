"""Background fact extraction, never on a reply's critical path.

Conversation turns are queued in the database (souvenir metadata `extraction = a_faire`);
this loop claims them one at a time, asks the router for JSON validated against
`EXTRACTION_SCHEMA` (the extraction model; retries then fallback per policy, but never
off the server for a local-only person), adds the facts with supersession and their
source souvenir, and honours "oublie que …" for the people allowed to ask it.

Who may assert what (bot/policy.py): only a conversation turn that a known person sent
from a verified address (or the local console) speaks for that person. Their statements
about themselves, and the inner circle's about anyone, become facts; everything else — a
client about someone else, an unverified stranger, a forwarded message (metadata
`transfere`), any souvenir that is not such a turn (an email body, a web page, an import)
— is stored only as a claim attributed to its speaker ("selon Mme Durand (client)").

The local model's gate (llm/gate.py) runs this as background work: only when the
conversations are quiet, and preempted as soon as a person writes (the item is rolled
back, untouched, and runs again later). Except hot work, done as soon as nobody waits for
the model (llm/gate.py's HOT), because the server's cache holds its prompt now and will
not for long (other conversations take the caches): a recent turn's extraction as a
continuation of its prompt (it evaluates only the instruction, ~200 tokens, instead of
the turn's data, reply and instruction once the cache moved on), and the next turn's
prefix when the history window moves (bot/responder.py: else Ludo's next message waits
for the whole kept history to be read again, ~30 s on the CPU).

A failed item is retried later (bot/backoff.py's EXTRACTION), not at once. An item goes
to Claude at most once: after a failure in which the router fell back, or one that was
the model's own (invalid JSON or schema from a model that answered), its retries stay on
the local model, then it is given up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from bot.backoff import EXTRACTION
from bot.facts_extraction import (
    EXTRACTION_SCHEMA,
    continuation_prompt,
    extraction_prompt,
    parse,
)
from bot.policy import (
    OPERATOR,
    TRUSTED_CHANNELS,
    asserts_fact,
    attribution,
    may_change_memory,
    same_person,
    sees_private,
    speaks_for_others,
)
from bot.policy import interlocutor as make_interlocutor
from bot.waiting import wait_for_event_or_stop
from llm.errors import BudgetExceeded, InvalidStructuredOutput, LLMError, LocalOnlyUnavailable
from llm.gate import HOT, LocalGate, Preempted, Priority
from llm.router import Router
from llm.types import ChatMessage
from memory.extraction_queue import MAX_EXTRACTION_ATTEMPTS
from memory.records import PersonRecord, SouvenirRecord
from memory.store import MemoryStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speaker:
    """Who said a souvenir, as far as Axi can tell."""

    person: PersonRecord | None  # who sent it, from a verified address (or the console)
    own_words: bool  # their own turn: not forwarded, not a document or a page
    name: str  # as the extraction prompt calls them
    channel: str | None

    @property
    def verified(self) -> bool:
        """Their word counts as theirs: a known person's own turn."""
        return self.person is not None and self.own_words

    @property
    def attribution(self) -> str:
        return attribution(self.person, self.name, self.channel, own_words=self.own_words)


def model_fault(exc: BaseException) -> bool:
    """The model answered, but not JSON matching the schema (at the end of the chain of
    causes: the router may have turned it into 'no fallback allowed')."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, InvalidStructuredOutput):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def fell_back(exc: BaseException, *, remote: bool, local_only: bool) -> bool:
    """Whether the failed call went to the fallback model: it is configured, the call was
    allowed to leave the server, and the error is not the router refusing to fall back
    (those are raised from the local failure, or say so by their type)."""
    if not remote or local_only or isinstance(exc, LocalOnlyUnavailable | BudgetExceeded):
        return False
    return not isinstance(exc.__cause__, LLMError)


HOT_FOR_S = 600.0
"""A turn remembered this recently likely still has its prompt in one of the server's
caches (one per recent conversation): its extraction and its warm-up are hot work."""
HOT_ATTEMPTS = 3
"""Hot work preempted this many times waits for quiet like the rest."""
HOT_MISSES = 5
"""A remembered turn not found in the queue this many times (polls) is not hot work."""
CONTINUATIONS_KEPT = 64
"""Turns whose exact prompt is kept for their extraction (in memory: after a restart an
item is extracted from the minimal prompt, as before)."""


@dataclass(frozen=True)
class Turn:
    """A turn as the local model lived it: the prompt it read and the reply it wrote."""

    prompt: list[ChatMessage]
    reply: str
    at: float = 0.0  # time.monotonic() when the turn was answered
    conversation: str | None = None
    earlier_reply: str | None = None  # re-based on a later turn (`prompt`): its own reply


class Extractor:
    def __init__(self, store: MemoryStore, router: Router, *, continuations: bool = True,
                 prepared_wait_s: float = 120.0):
        self.store = store
        self.router = router
        self.prepared_wait_s = prepared_wait_s
        """The longest a turn waits for its prefix being read ahead (`prepared`): the app
        sets AXI_LOCAL_MAX_WAIT."""
        self.wake = asyncio.Event()
        self.continuations = continuations
        """Extract a turn as a continuation of its own prompt (the local model evaluates
        only the instruction): on when extraction runs on the conversation's model."""
        self._turns: collections.OrderedDict[int, Turn] = collections.OrderedDict()
        self._warm: collections.OrderedDict[str, Turn] = collections.OrderedDict()
        self._ahead: dict[str, asyncio.Future[None]] = {}  # inner circle's, read now
        self._tries: collections.Counter[object] = collections.Counter()  # hot work preempted
        self._misses: collections.Counter[int] = collections.Counter()
        self.continued = 0
        self.foreseen = 0  # next prefixes handed over (the history window moves)
        self.warmed = 0  # ... read into the server's cache

    def remember_turn(self, message_id: int, prompt: list[ChatMessage], reply: str,
                      conversation: str | None = None,
                      next_prefix: list[ChatMessage] | None = None,
                      priority: Priority | None = None) -> None:
        """The responder hands over a turn the local model answered (before any rewrite of
        its reply: the model's cache holds what it wrote), and the next turn's prefix when
        the history window moves (None: it extends this turn's prompt). The inner circle's
        (`priority` INNER_LIVE) is read at once, at their priority (`prepared`)."""
        if not self.continuations:
            return
        now = time.monotonic()
        if conversation is not None:
            self._rebase(conversation, prompt, reply, now)
        self._turns[message_id] = Turn(list(prompt), reply, now, conversation)
        while len(self._turns) > CONTINUATIONS_KEPT:
            self._turns.popitem(last=False)
        if conversation is not None:
            self._warm.pop(conversation, None)  # the older prefix is this turn's, read
            if next_prefix is not None:
                self.foreseen += 1
                if priority is Priority.INNER_LIVE:
                    self._read_ahead(conversation, list(next_prefix))
                else:
                    self._warm[conversation] = Turn(list(next_prefix), "", now)
        self.wake.set()

    def _rebase(self, conversation: str, prompt: list[ChatMessage], reply: str,
                now: float) -> None:
        """Earlier turns of this conversation not extracted yet continue this newer turn's
        prompt and reply from now on — the prefix the server holds for the conversation —
        quoting their message and reply: their own prompt has often left the cache (the
        history window moved, or other prompts took its slot), and then the continuation
        read it all again (700 to 3,000 tokens, half the extractions of a busy day)."""
        for mid, turn in list(self._turns.items()):
            if turn.conversation == conversation:
                self._turns[mid] = Turn(list(prompt), reply, now, conversation,
                                        turn.reply if turn.earlier_reply is None
                                        else turn.earlier_reply)

    def _read_ahead(self, conversation: str, prefix: list[ChatMessage]) -> None:
        """The inner circle's next prefix, read now as the inner circle's own request: the
        person is reading the reply and typing (20–90 s), and as background work it rarely
        found the model free before the next message (clients' replies and their other
        conversations hold it) — then the next turn re-read ~2,000 tokens, half a minute.
        A stream, so nothing but the inner circle's is read beside it (llm/gate.py); it
        goes before clients' replies waiting, as a turn of theirs would."""
        self._ahead = {k: t for k, t in self._ahead.items() if not t.done()}
        self._ahead[conversation] = asyncio.ensure_future(self._warm_ahead(conversation,
                                                                           prefix))

    async def _warm_ahead(self, key: str, prefix: list[ChatMessage]) -> None:
        try:
            async for _ in self.router.stream(prefix, task="warm", local_only=True,
                                              priority=Priority.INNER_LIVE):
                pass
        except LLMError as exc:
            log.info("reading the next prefix of %s ahead failed: %s", key, exc)
        else:
            self.warmed += 1

    async def close(self) -> None:
        """Stop the prefixes being read ahead (Axi stops: nobody will write next)."""
        tasks = [t for t in self._ahead.values() if not t.done()]
        self._ahead.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task

    async def prepared(self, conversation: str) -> None:
        """Wait for this conversation's next prefix being read ahead (`_read_ahead`), if
        it is: its turn then finds it in the server's cache. Asked at once instead, the
        turn would land on another of the server's slots and read the same ~2,000 tokens
        beside it, both at half speed (Ollama reads a prompt to its end). At most
        `prepared_wait_s`: a read-ahead not done by then is dropped."""
        task = self._ahead.pop(conversation, None)
        if task is None or task.done():
            return
        try:  # a quicker start is never worth a wait without end: bounded, then dropped
            await asyncio.wait_for(asyncio.shield(task), self.prepared_wait_s)
        except TimeoutError:
            task.cancel()
            log.warning("the next prefix of %s was not read ahead within %.0f s: its turn "
                        "goes on without it", conversation, self.prepared_wait_s)
        except Exception:  # (the read-ahead logs its own failure)
            pass

    def _hot_work(self) -> Callable[[], Awaitable[bool]] | None:
        """The next hot work (the next turn's prefix first: a person will wait for it),
        None when there is none."""
        now = time.monotonic()
        if len(self._tries) > 4 * CONTINUATIONS_KEPT:
            self._tries = collections.Counter({k: n for k, n in self._tries.items()
                                               if k in self._turns or k in self._warm})
            self._misses = collections.Counter({k: n for k, n in self._misses.items()
                                                if k in self._turns})
        for key, turn in list(self._warm.items()):
            if now - turn.at > HOT_FOR_S or self._tries[key] >= HOT_ATTEMPTS:
                del self._warm[key]
                continue
            return lambda: self._warm_up(key, turn.prompt)
        for mid, turn in self._turns.items():
            if now - turn.at <= HOT_FOR_S and self._tries[mid] < HOT_ATTEMPTS:
                return lambda: self._extract_hot(mid)
        return None

    async def _warm_up(self, key: str, prefix: list[ChatMessage]) -> bool:
        """The next turn's prefix read into the server's cache (local only: it is the
        conversation; one token generated, dropped)."""
        try:
            await self.router.chat(prefix, task="warm", local_only=True,
                                   priority=Priority.BACKGROUND)
        except Preempted:
            self._tries[key] += 1
            raise
        except LLMError as exc:
            log.info("warming the next prefix of %s failed: %s", key, exc)
        else:
            self.warmed += 1
        if self._warm.get(key) is not None and self._warm[key].prompt == prefix:
            del self._warm[key]
        return True

    async def _extract_hot(self, message_id: int) -> bool:
        """False (nothing done: wait a moment) while the turn is not committed yet: the
        responder hands it over before its transaction ends."""
        try:
            found = await self.extract_one(message_id=message_id)
        except Preempted:
            self._tries[message_id] += 1
            raise
        if not found:
            self._misses[message_id] += 1
            if self._misses[message_id] >= HOT_MISSES:  # done elsewhere, or not due
                self._tries[message_id] = HOT_ATTEMPTS
            return False
        if message_id in self._turns:  # extracted from the minimal prompt: not hot again
            self._tries[message_id] = HOT_ATTEMPTS
        return True

    async def _continued(self, message_id: Any, *, speaker: str, message: str,
                         kind: Any) -> Any:
        """The extraction as a continuation of the turn's prompt, local only (it holds the
        conversation's private data); None when there is none or the local model could
        not do it (then the minimal prompt goes, under the usual rules)."""
        turn = self._turns.get(message_id) if isinstance(message_id, int) else None
        if turn is None:
            return None
        try:
            result = await self.router.chat_json(
                continuation_prompt(turn.prompt, turn.reply, speaker=speaker, message=message,
                                    kind=kind, earlier_reply=turn.earlier_reply),
                EXTRACTION_SCHEMA, task="extraction", local_only=True, retries=0)
        except Preempted:
            raise
        except LLMError as exc:
            log.info("extraction of #%s as a continuation failed (%s): minimal prompt",
                     message_id, exc)
            self._turns.pop(message_id, None)
            return None
        self._turns.pop(message_id, None)
        self.continued += 1
        return result

    async def _speaker(self, souvenir: SouvenirRecord) -> Speaker:
        """The speaker of a souvenir: a person only for the inbound turn they sent from a
        verified address; their own words unless it was forwarded."""
        meta = souvenir.metadata
        given = str(meta.get("auteur") or "")
        turn = (souvenir.type == "conversation" and meta.get("sens") == "entrant"
                and meta.get("message_id") is not None)
        if not turn:  # an email body, a web page, an import: nobody's own statement
            return Speaker(None, False, given or "Inconnu", souvenir.source)
        msg = None
        with contextlib.suppress(Exception):
            msg = await self.store.get_message(int(meta["message_id"]))
        if msg is None or msg.sens != "entrant":
            return Speaker(None, False, given or "Inconnu", souvenir.source)
        own = not (meta.get("transfere") or msg.metadata.get("transfere"))
        person: PersonRecord | None = None
        if msg.verifie or msg.canal in TRUSTED_CHANNELS:
            if msg.relation_id:
                with contextlib.suppress(Exception):
                    person = await self.store.get_person(msg.relation_id)
            elif msg.canal in TRUSTED_CHANNELS:
                person = OPERATOR  # the local terminal, as no one in particular
        if person is None:
            return Speaker(None, own, given or "Interlocuteur inconnu", msg.canal)
        return Speaker(person, own, person.personne, msg.canal)

    async def extract_one(self, *, message_id: int | None = None) -> bool:
        """Process the next queued souvenir that is due, or only one of inbound message
        `message_id` (what a one-shot command such as `axi ask` did itself). False when
        there is none."""
        async with self.store.claim_for_extraction(message_id=message_id) as item:
            if item is None:
                return False
            claim, souvenir = item
            meta = souvenir.metadata
            kind = meta.get("intention", "none")
            speaker = await self._speaker(souvenir)
            reply, reply_local = await self.store.reply_of(meta.get("message_id"))
            prompt = extraction_prompt(speaker=speaker.name, message=souvenir.contenu,
                                       reply=reply, kind=kind)
            # what the prompt holds decides where it may go: the message's flag, and the
            # reply's (made from local-only content, it must not reach Claude either)
            content_local = bool(meta.get("local_only")) or reply_local
            local_only = content_local or bool(meta.get("extraction_locale"))
            try:
                result = await self._continued(meta.get("message_id"), speaker=speaker.name,
                                               message=souvenir.contenu, kind=kind)
                if result is None:
                    result = await self.router.chat_json(
                        prompt, EXTRACTION_SCHEMA, task="extraction", local_only=local_only)
            except Preempted:
                raise  # a person needed the model: rolled back, the item stays as it was
            except LLMError as exc:
                await self._failed(claim, souvenir, exc, local_only=local_only)
                return True
            facts, forgets = parse(result.data, kind=kind)
            who = make_interlocutor(speaker.person if speaker.verified else None,
                                    channel=souvenir.source or "", address="", verified=True)
            added = claimed = forgotten = 0
            selon = speaker.attribution
            names: list[str] | None = None  # the people Axi knows, read when needed
            for f in facts:
                person = speaker.person
                asserted = asserts_fact(person, f.sujet, verified=speaker.verified)
                if asserted and person is not None and not sees_private(person):
                    if names is None:
                        names = [p.personne for p in await self.store.list_people()]
                    asserted = not speaks_for_others(person, f"{f.predicat} {f.objet}", names)
                if asserted:
                    assert person is not None
                    own = same_person(f.sujet, person)
                    await self.store.add_fact(
                        person.personne if own and person.id else f.sujet, f.predicat, f.objet,
                        confiance=f.confiance, source_souvenir_id=souvenir.id,
                        relation_id=person.id if own and person.id else None,
                        multi_valued=f.multiple, local_only=content_local)
                    added += 1
                else:
                    await self.store.add_fact(
                        f.sujet, f.predicat, f.objet, confiance=f.confiance,
                        source_souvenir_id=souvenir.id, selon=selon, multi_valued=True,
                        local_only=content_local)
                    claimed += 1
            if forgets and may_change_memory(who):
                for g in forgets:
                    forgotten += len(await self.store.forget_facts_matching(
                        g.sujet, g.predicat, g.objet))
            await self.store.finish_extraction(
                claim, souvenir.id, state="faite",
                detail={"faits_ajoutes": added, "dires_ajoutes": claimed,
                        "faits_oublies": forgotten})
        return True

    async def _failed(self, claim: Any, souvenir: SouvenirRecord, exc: LLMError, *,
                      local_only: bool) -> None:
        """Count the attempt; retry after a backoff (on the local model only once the
        fallback was tried or the model itself was at fault), or give up."""
        attempts = int(souvenir.metadata.get("extraction_essais", 0)) + 1
        stay_local = local_only or model_fault(exc) or fell_back(
            exc, remote=self.router.remote is not None, local_only=local_only)
        give_up = attempts >= MAX_EXTRACTION_ATTEMPTS
        log.warning("fact extraction of souvenir #%s failed (attempt %s%s): %s", souvenir.id,
                    attempts, ", given up" if give_up else "", exc)
        detail: dict[str, Any] = {"extraction_erreur": f"{type(exc).__name__}: {exc}"[:300]}
        if stay_local:
            detail["extraction_locale"] = True
        await self.store.finish_extraction(
            claim, souvenir.id, state="echec" if give_up else "a_faire", detail=detail,
            retry_in_s=None if give_up else EXTRACTION.delay(attempts))

    async def _may_start(self, gate: LocalGate, *, hot: bool) -> bool:
        """Claim nothing while people talk: wait until background work may start (hot
        work: until nobody waits for the model). False when a turn was handed over
        meanwhile (`wake`): there may be hot work to do first."""
        self.wake.clear()
        quiet = asyncio.ensure_future(gate.until_quiet(hot=hot))
        if hot:
            await quiet
            return True
        woken = asyncio.ensure_future(self.wake.wait())
        try:
            done, _ = await asyncio.wait({quiet, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            quiet.cancel()
        return quiet in done

    async def run(self, stop: asyncio.Event, *, idle_s: float = 2.0) -> None:
        gate = self.router.gate
        while not stop.is_set():
            try:
                hot = self._hot_work() if gate is not None else None
                if gate is not None and not await self._may_start(gate, hot=hot is not None):
                    continue  # hot work came while waiting for quiet: it goes first
                if hot is not None:
                    token = HOT.set(True)
                    try:
                        busy = await hot()
                    finally:
                        HOT.reset(token)
                else:
                    busy = await self.extract_one()
            except Preempted as exc:
                log.debug("fact extraction yields to a person: %s", exc)
                continue  # the item is still queued; wait for quiet again
            except Exception as exc:  # keep the loop alive; the item stays queued
                log.warning("extractor loop error: %s", exc)
                busy = False
            if not busy:
                await wait_for_event_or_stop(self.wake, stop, idle_s)
