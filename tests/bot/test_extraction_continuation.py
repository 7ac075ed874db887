"""A turn's fact extraction continues that turn's exact prompt (issue: one CPU, one
model): the local model evaluates only the instruction, its cached prefix survives for
the conversation's next turn, and the continuation — which holds the conversation's
private data — never leaves the server."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.app import Axi
from bot.config import DEFAULT_LOCAL_MODEL
from bot.prompt_builder import ContextInputs, build_prompt
from bot.stable_prefix import CUTOFF_KEY, RENEW_AFTER, facts_cutoff
from memory.database import Database
from memory.records import FactRecord, PersonRecord
from tests.bot.conftest import assistant, extract_all, say
from tests.bot.test_pipeline import RecordingChannel, make_settings
from tests.conftest import empty_tables
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.cpu_model import CpuConfig
from tests.fakes.cpu_ollama import CpuOllama
from tests.fakes.ollama_server import FakeOllama

FACT = {"sujet": "Ludo", "predicat": "habite à", "objet": "Peyrebrune", "confiance": 0.9}


def scripted(body: dict[str, Any]) -> str:
    if body.get("format"):
        return json.dumps({"faits": [FACT]})
    return "Noté, Peyrebrune."


@pytest.fixture
async def axi(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> AsyncIterator[Axi]:
    async with assistant(db, database_url, test_data_dir, ollama_server, anthropic_server,
                         reply=scripted, fallback_reply=json.dumps({"faits": []})) as app:
        yield app


def _bodies(ollama: FakeOllama, *, json_format: bool) -> list[dict[str, Any]]:
    return [b for b in ollama.chat_bodies if bool(b.get("format")) == json_format]


async def test_the_extraction_is_a_strict_extension_of_the_turns_prompt(
        axi: Axi, ollama_server: FakeOllama) -> None:
    await say(axi, "1001", "J'habite à Peyrebrune depuis dix ans.")
    [turn] = _bodies(ollama_server, json_format=False)
    await extract_all(axi)
    [extraction] = _bodies(ollama_server, json_format=True)
    asked = extraction["messages"]
    assert asked[:len(turn["messages"])] == turn["messages"]  # the same prompt, verbatim
    assert asked[len(turn["messages"])] == {"role": "assistant", "content": "Noté, Peyrebrune."}
    assert len(asked) == len(turn["messages"]) + 2
    assert "Consigne interne" in asked[-1]["content"] and "Ludo" in asked[-1]["content"]
    assert extraction["model"] == turn["model"]
    assert extraction["options"]["num_ctx"] == turn["options"]["num_ctx"]
    facts = await axi.store.facts_about("Ludo")
    assert [(f.predicat, f.objet) for f in facts] == [("habite à", "Peyrebrune")]
    assert axi.extractor.continued == 1


async def test_an_earlier_turn_not_extracted_yet_continues_the_latest_turn(
        axi: Axi, ollama_server: FakeOllama) -> None:
    """Two turns before any extraction: the first one's prompt may have left the server's
    cache (the history window moved, other prompts took its slot), the latest one's is
    there — so both continue the latest prompt and reply, the first quoting its message
    and its own reply."""
    await say(axi, "1001", "J'habite à Peyrebrune depuis dix ans.")
    await say(axi, "1001", "Et je joue au golf le samedi.")
    _, latest = _bodies(ollama_server, json_format=False)
    await extract_all(axi)
    extractions = _bodies(ollama_server, json_format=True)
    assert len(extractions) == 2 and axi.extractor.continued == 2
    for asked in (e["messages"] for e in extractions):
        assert asked[:len(latest["messages"])] == latest["messages"]
        assert len(asked) == len(latest["messages"]) + 2
    earlier = next(e["messages"][-1]["content"] for e in extractions
                   if "Peyrebrune depuis" in e["messages"][-1]["content"])
    assert "message plus ancien" in earlier and "[données — ta réponse]\nNoté, Peyrebrune." \
        in earlier


async def test_the_continuation_never_reaches_the_fallback(
        axi: Axi, ollama_server: FakeOllama, anthropic_server: FakeAnthropic) -> None:
    """The local model fails the continuation: the minimal prompt goes instead (it may
    fall back, under the usual rules), never the conversation's prompt."""
    await say(axi, "1001", "J'habite à Peyrebrune depuis dix ans.")
    [turn] = _bodies(ollama_server, json_format=False)
    system = turn["messages"][0]["content"]
    ollama_server.stop()
    await extract_all(axi)
    assert anthropic_server.bodies, "the minimal extraction did not fall back"
    sent = json.dumps(anthropic_server.bodies, ensure_ascii=False)
    assert "Peyrebrune" in sent  # the minimal prompt: the message and the reply
    assert system[:200] not in sent and "Consigne interne" not in sent


async def test_no_continuation_when_extraction_has_its_own_model(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    await empty_tables(db)
    ollama_server.models.append("qwen2.5:3b-instruct")
    ollama_server.reply = scripted
    cfg = make_settings(ollama_server, None, database_url, test_data_dir,
                        AXI_LOCAL_EXTRACTION_MODEL="qwen2.5:3b-instruct")
    async with Axi(cfg, {"telegram": RecordingChannel("telegram")}) as app:
        await app.store.add_person("Ludo", relation="créateur",
                                   identities=[("telegram", "1001")])
        await say(app, "1001", "J'habite à Peyrebrune depuis dix ans.")
        await extract_all(app)
    [extraction] = _bodies(ollama_server, json_format=True)
    assert extraction["model"] == "qwen2.5:3b-instruct" and len(extraction["messages"]) == 2
    assert app.extractor.continued == 0


async def test_on_the_cpu_server_the_next_turn_still_finds_its_prefix(
        db: Database, database_url: str | None, test_data_dir: Path) -> None:
    """Measured on the simulated CPU Ollama: the extraction evaluates only its instruction
    (and what the chat template adds), and Ludo's next turn reuses the whole previous
    turn from the cache — even though the extraction taught Axi a fact about Ludo (it
    goes with the next turn's data, not into his system prompt: bot/stable_prefix.py)."""
    cpu = CpuOllama(CpuConfig(time_scale=0.0005, load_s=0.0, system_last=False))
    cpu.models = [DEFAULT_LOCAL_MODEL]
    cpu.start()
    try:
        async with assistant(db, database_url, test_data_dir, cpu, None,
                             reply=lambda body: "Noté, Peyrebrune.") as app:
            cpu.json_reply = json.dumps({"faits": [FACT]})
            await say(app, "1001", "J'habite à Peyrebrune depuis dix ans, près de Vergt.")
            await extract_all(app)
            await say(app, "1001", "Et que sais-tu de la longère de Vergt ?")
        first, extraction, second = cpu.records
        assert extraction.cached_tokens >= first.prompt_tokens, "the turn's prompt was not reused"
        assert extraction.evaluated_tokens < 300  # the instruction (~230 tokens) and the reply
        assert [f.objet for f in await app.store.facts_about("Ludo")] == ["Peyrebrune"]
        assert second.cached_tokens >= first.prompt_tokens  # the next turn kept its prefix
        assert second.evaluated_tokens < second.prompt_tokens - first.prompt_tokens + 60
    finally:
        cpu.stop()


def _fact(id_: int, objet: str) -> FactRecord:
    now = datetime.now(UTC)
    return FactRecord(id=id_, sujet="Ludo", predicat="aime", objet=objet, confiance=0.9,
                      source_souvenir_id=None, cree_le=now, maj_le=now, valide_depuis=now,
                      valide_jusqu_a=None, remplace_par=None, relation_id=1, public=False)


def test_facts_learnt_during_the_conversation_go_last_not_in_the_system_prompt() -> None:
    ludo = PersonRecord(id=1, personne="Ludo", relation="créateur", comment_interagir=None,
                        details={}, cree_le=None, bloque=False,  # type: ignore[arg-type]
                        jamais_hors_serveur=False)
    facts = [_fact(3, "le golf"), _fact(9, "la pêche")]
    now = datetime.now(UTC)
    built = build_prompt(ContextInputs(message="Salut", now=now, person=ludo,
                                       person_facts=facts, person_facts_until=3))
    system, last = built.messages[0]["content"], built.messages[-1]["content"]
    assert "le golf" in system and "la pêche" not in system
    assert "la pêche" in last
    fresh = build_prompt(ContextInputs(message="Salut", now=now, person=ludo,
                                       person_facts=facts))
    assert "la pêche" in fresh.messages[0]["content"]
    # the cut-off: the previous turn's while it is recent, else the newest fact
    turn = type("T", (), {"sens": "entrant", "metadata": {CUTOFF_KEY: 3},
                          "recu_le": now - timedelta(minutes=5)})()
    assert facts_cutoff([turn], facts, now) == 3
    assert facts_cutoff([turn], facts, now + RENEW_AFTER) == 9
    assert facts_cutoff([], facts, now) == 9
