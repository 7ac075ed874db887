"""Background fact extraction, never on a reply's critical path.

Conversation turns are queued in the database (souvenir metadata `extraction = a_faire`);
this loop claims them one at a time, asks the router for JSON validated against
`EXTRACTION_SCHEMA` (the extraction model; retries then fallback per policy, but never
off the server for a local-only person), adds the facts with supersession and their
source souvenir, and honours "oublie que …" for the people allowed to ask it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from bot.facts_extraction import EXTRACTION_SCHEMA, extraction_prompt, parse
from bot.policy import OPERATOR, may_change_memory
from bot.policy import interlocutor as make_interlocutor
from llm.errors import LLMError
from llm.router import Router
from memory.extraction_queue import MAX_EXTRACTION_ATTEMPTS
from memory.records import PersonRecord
from memory.store import MemoryStore

log = logging.getLogger(__name__)


class Extractor:
    def __init__(self, store: MemoryStore, router: Router):
        self.store = store
        self.router = router
        self.wake = asyncio.Event()

    async def _speaker(self, relation_id: int | None, source: str | None) -> PersonRecord | None:
        if relation_id:
            with contextlib.suppress(Exception):
                return await self.store.get_person(relation_id)
        return OPERATOR if source == "console" else None

    async def extract_one(self) -> bool:
        """Process the next queued souvenir. False when the queue is empty."""
        async with self.store.claim_for_extraction() as item:
            if item is None:
                return False
            claim, souvenir = item
            meta = souvenir.metadata
            kind = meta.get("intention", "none")
            person = await self._speaker(souvenir.relation_id, souvenir.source)
            speaker = meta.get("auteur") or (person.personne if person else "Inconnu")
            reply = await self.store.replies_text(meta.get("message_id"))
            prompt = extraction_prompt(speaker=speaker, message=souvenir.contenu, reply=reply,
                                       kind=kind)
            try:
                result = await self.router.chat_json(
                    prompt, EXTRACTION_SCHEMA, task="extraction",
                    local_only=bool(meta.get("local_only")))
            except LLMError as exc:
                attempts = int(meta.get("extraction_essais", 0)) + 1
                state = "echec" if attempts >= MAX_EXTRACTION_ATTEMPTS else "a_faire"
                log.warning("fact extraction of souvenir #%s failed (%s)", souvenir.id, exc)
                await self.store.finish_extraction(claim, souvenir.id, state=state,
                                                   detail={"extraction_erreur": str(exc)[:300]})
                return True
            facts, forgets = parse(result.data, kind=kind)
            who = make_interlocutor(person, channel=souvenir.source or "", address="",
                                    verified=True)
            added = forgotten = 0
            for f in facts:
                rid = person.id if person and person.id and _about(f.sujet, person) else None
                await self.store.add_fact(
                    f.sujet, f.predicat, f.objet, confiance=f.confiance,
                    source_souvenir_id=souvenir.id, relation_id=rid, multi_valued=f.multiple)
                added += 1
            if forgets and may_change_memory(who):
                for g in forgets:
                    forgotten += len(await self.store.forget_facts_matching(
                        g.sujet, g.predicat, g.objet))
            await self.store.finish_extraction(
                claim, souvenir.id, state="faite",
                detail={"faits_ajoutes": added, "faits_oublies": forgotten})
        return True

    async def run(self, stop: asyncio.Event, *, idle_s: float = 2.0) -> None:
        while not stop.is_set():
            try:
                busy = await self.extract_one()
            except Exception as exc:  # keep the loop alive; the item stays queued
                log.warning("extractor loop error: %s", exc)
                busy = False
            if not busy:
                waiters = [asyncio.ensure_future(self.wake.wait()),
                           asyncio.ensure_future(stop.wait())]
                await asyncio.wait(waiters, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED)
                for w in waiters:
                    w.cancel()
                self.wake.clear()


def _about(subject: str, person: PersonRecord) -> bool:
    from memory.text import fold

    return fold(subject).strip() == fold(person.personne).strip()
