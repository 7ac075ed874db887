"""Ollama's own account of each call (issue 9, "know the real server"): the real `ollama`
client against the simulated CPU server (tests/fakes/cpu_ollama.py), whose every request is
recorded as it really ran (`server.records`). The cached count is read from the raw final
chunk (the library drops it), estimated when the server does not send it, and reaches the
call log and `axi llm status`'s figures."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import ollama
import pytest

from bot.config import DEFAULT_LOCAL_MODEL
from bot.llm_wiring import call_recorder
from llm.config import OllamaConfig
from llm.ollama_chat import OllamaChat
from llm.ollama_timings import (
    MIN_SAMPLE_TOKENS,
    MeasuredRates,
    RateMeter,
    TimingsClient,
    read_timings,
)
from llm.router import Router
from llm.types import ChatMessage, Reply
from memory.store import MemoryStore
from tests.fakes.cpu_model import RequestRecord
from tests.fakes.cpu_ollama import CpuOllama, StartCpu
from tests.llm.conftest import Recorder

SCALE = 0.002  # a simulated second takes 2 ms
QUESTIONS = ["Quelles passoires la veille DPE a-t-elle trouvées cette semaine au Bugue ?",
             "Et à Vergt, combien de maisons classées F ou G depuis lundi ?",
             "Prépare-moi la liste des propriétaires à contacter en priorité."]

Make = StartCpu


@pytest.fixture
def make(cpu_servers: StartCpu) -> StartCpu:
    """A simulated CPU server with the system prompt first, so that a conversation's next
    turn extends its previous prompt; with CpuConfig changes."""
    return lambda **changes: cpu_servers(**{"system_last": False, "time_scale": SCALE,
                                            **changes})


def local_for(server: CpuOllama) -> OllamaChat:
    return OllamaChat(OllamaConfig(model=DEFAULT_LOCAL_MODEL, host=server.url, num_ctx=4096,
                                   timeout_s=30.0))


async def talk(chat: Any, *, stream: bool = False) -> list[Reply]:
    """A three-turn conversation, each turn extending the previous prompt and reply."""
    messages = [ChatMessage.system("Tu es Axi, l'assistant d'ICI Dordogne.")]
    replies = []
    for question in QUESTIONS:
        messages.append(ChatMessage.user(question))
        reply = (await chat.stream(messages).collect() if stream
                 else await chat.chat(messages))
        replies.append(reply)
        messages.append(ChatMessage.assistant(reply.text))
    return replies


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def assert_matches(reply: Reply, record: RequestRecord) -> None:
    """The reply's timings are what the server really did."""
    timings = reply.timings
    assert timings is not None
    assert (timings.cached_tokens, timings.evaluated_tokens) == (
        record.cached_tokens, record.evaluated_tokens)
    assert timings.prompt_tokens == record.prompt_tokens == reply.tokens_in
    assert timings.prompt_ms == ms(record.prompt_eval_s)
    assert timings.generation_ms == ms(record.eval_s)
    assert timings.load_ms == ms(record.load_duration_s)
    assert timings.total_ms == ms(record.total_s)


# ---------------------------------------------------------------------- read from the server
@pytest.mark.parametrize("stream", [False, True])
async def test_cached_count_read_from_the_raw_final_chunk(make: Make, stream: bool) -> None:
    server = make()
    async with local_for(server) as local:
        replies = await talk(local, stream=stream)
        rates = local.measured_rates()
    for reply, record in zip(replies, server.records, strict=True):
        assert_matches(reply, record)
        assert reply.timings is not None and not reply.timings.cached_estimated
    assert replies[0].timings and replies[0].timings.cached_tokens == 0
    later = replies[2].timings
    assert later is not None and later.cached_tokens and later.cached_tokens > 0.8 * (
        later.prompt_tokens)  # the conversation's prefix came from the cache
    assert rates.prompt_tps == pytest.approx(60.0, rel=0.01)
    assert rates.generation_tps == pytest.approx(9.0, rel=0.01)


async def test_rates_are_measured_per_model(make: Make) -> None:
    """A 3B extraction model and the 7B conversation model run at different speeds: each
    has its own measured rates (and its own estimate of the cache)."""
    server = make()
    server.models.append("qwen2.5:3b-instruct")
    config = OllamaConfig(model=DEFAULT_LOCAL_MODEL, host=server.url, num_ctx=4096,
                          extraction_model="qwen2.5:3b-instruct", timeout_s=30.0)
    async with OllamaChat(config) as local:
        await talk(local)
        assert local.measured_rates("extraction") == MeasuredRates(None, None)
        await local.chat([ChatMessage.user(QUESTIONS[0])], task="extraction")
        assert local.measured_rates("extraction").prompt_tps == pytest.approx(60.0, rel=0.01)


async def test_the_library_drops_the_cached_count(make: Make) -> None:
    """Why TimingsClient exists: the plain client's response has no trace of the field."""
    server = make()
    messages = [{"role": "user", "content": "Bonjour"}]
    plain = ollama.AsyncClient(host=server.url)
    keeping = TimingsClient(host=server.url)
    try:
        dropped = await plain.chat(DEFAULT_LOCAL_MODEL, messages)
        kept = await keeping.chat(DEFAULT_LOCAL_MODEL, messages)
    finally:
        await plain.close()
        await keeping.close()
    assert "prompt_eval_cached_count" not in dropped.model_dump()
    assert isinstance(kept, ollama.ChatResponse)
    assert kept.model_extra == {"prompt_eval_cached_count": server.records[1].cached_tokens}
    assert server.records[1].cached_tokens > 0  # the same prompt again


async def test_cached_count_estimated_when_the_server_does_not_report_it(make: Make) -> None:
    server = make(report_cached=False)
    async with local_for(server) as local:
        replies = await talk(local)
    first, *later = zip(replies, server.records, strict=True)
    for reply, record in (first, *later):
        timings = reply.timings
        assert timings is not None and timings.cached_estimated
        assert timings.prompt_tokens == record.prompt_tokens
        # prompt_ms is rounded to the millisecond: at 60 tokens/s, within a token
        assert timings.cached_tokens == pytest.approx(record.cached_tokens, abs=1)
        assert timings.evaluated_tokens == pytest.approx(record.evaluated_tokens, abs=1)
    assert first[0].timings and first[0].timings.cached_tokens == 0  # cold: all evaluated
    assert all(r.timings and r.timings.cached_tokens for r, _ in later)


async def test_an_old_ollama_counting_only_evaluated_tokens(make: Make) -> None:
    """Ollama 0.1.x: prompt_eval_count is what was evaluated, no cached count. The
    evaluated tokens are still right; the cache cannot be seen (estimated at ~0)."""
    server = make(report_cached=False, count_cached=False)
    async with local_for(server) as local:
        replies = await talk(local)
    for reply, record in zip(replies, server.records, strict=True):
        assert reply.timings is not None and reply.timings.cached_estimated
        assert reply.timings.evaluated_tokens == pytest.approx(record.evaluated_tokens, abs=1)
        assert (reply.timings.cached_tokens or 0) <= 1


async def test_the_router_records_the_timings(make: Make) -> None:
    server = make()
    recorder = Recorder()
    async with local_for(server) as local:
        await talk(Router(local, None, record=recorder))
        await talk(Router(local, None, record=recorder), stream=True)
    assert len(recorder.records) == 6
    for call, record in zip(recorder.records, server.records, strict=True):
        assert call.timings is not None
        assert (call.timings.cached_tokens, call.timings.evaluated_tokens) == (
            record.cached_tokens, record.evaluated_tokens)
        assert call.queue_ms == 0  # nothing queued in Axi (no gate here)


async def test_timings_reach_the_call_log_and_the_figures(make: Make, store: MemoryStore) -> None:
    server = make(num_parallel=1)
    async with local_for(server) as local:
        router = Router(local, None, record=call_recorder(store))
        await talk(router)
        await talk(router, stream=True)  # the same conversation again: mostly cached
    [day, *_] = await store.llm_local_status()
    [figures] = day.models
    records = server.records
    assert (day.calls, day.local_calls, day.local_share) == (6, 6, 1.0)
    assert figures.model == DEFAULT_LOCAL_MODEL and figures.calls == figures.timed_calls == 6
    cached = sum(r.cached_tokens for r in records)
    assert figures.cache_share == pytest.approx(cached / sum(r.prompt_tokens for r in records))
    assert figures.cache_estimated_calls == 0
    assert figures.prompt_tps == pytest.approx(60.0, rel=0.02)
    assert figures.generation_tps == pytest.approx(9.0, rel=0.02)
    assert figures.queue_p50_ms == figures.queue_p95_ms == 0


# ---------------------------------------------------------------------- the estimate, pure
def final(count: int | None, prompt_s: float | None, cached: int | None = None,
          eval_count: int = 10, eval_s: float = 1.0) -> Any:
    extra = {} if cached is None else {"prompt_eval_cached_count": cached}
    return SimpleNamespace(
        prompt_eval_count=count, eval_count=eval_count, model_extra=extra,
        prompt_eval_duration=None if prompt_s is None else round(prompt_s * 1e9),
        eval_duration=round(eval_s * 1e9), load_duration=1_000_000,
        total_duration=round(((prompt_s or 0) + eval_s + 0.5) * 1e9))


def test_rate_meter_takes_the_lowest_apparent_rate() -> None:
    meter = RateMeter()
    assert meter.prompt_tps is None and meter.generation_tps is None
    meter.observe_prompt(3000, 1.0, exact=False)  # mostly cached: 3000 tokens/s apparent
    assert meter.prompt_tps == 3000
    meter.observe_prompt(600, 10.0, exact=False)  # cold: the real rate
    meter.observe_prompt(MIN_SAMPLE_TOKENS - 1, 1.0, exact=False)  # too small to trust
    assert meter.prompt_tps == 60
    meter.observe_prompt(100, 2.0, exact=True)  # known cache: the rate itself
    meter.observe_prompt(500, 8.0, exact=True)
    assert meter.prompt_tps == 60  # 600 tokens in 10 s
    meter.observe_generation(90, 10.0)
    assert meter.generation_tps == 9


def test_read_timings_both_ways_of_counting() -> None:
    meter = RateMeter()
    current = read_timings(final(3000, 0.5, cached=2970), meter)
    assert current is not None
    assert (current.evaluated_tokens, current.cached_tokens, current.prompt_tokens) == (
        30, 2970, 3000)
    # a server whose prompt_eval_count is only the evaluated part (cached > count)
    old = read_timings(final(30, 0.5, cached=2970), meter)
    assert old is not None and (old.evaluated_tokens, old.cached_tokens) == (30, 2970)
    assert not old.cached_estimated and old.prompt_ms == 500 and old.generation_ms == 1000


def test_read_timings_estimates_from_the_measured_rate() -> None:
    meter = RateMeter()
    cold = read_timings(final(600, 10.0), meter)  # 60 tokens/s, nothing cached
    assert cold is not None and (cold.evaluated_tokens, cold.cached_tokens) == (600, 0)
    warm = read_timings(final(3000, 0.5), meter)  # 30 tokens evaluated at 60/s
    assert warm is not None and warm.cached_estimated
    assert (warm.evaluated_tokens, warm.cached_tokens) == (30, 2970)
    unknown = read_timings(final(10, 0.2), RateMeter())  # no rate measured yet
    assert unknown is not None and unknown.cached_tokens is None and not unknown.cached_estimated
    assert read_timings(SimpleNamespace(prompt_eval_count=None, prompt_eval_duration=None,
                                        eval_duration=None), meter) is None
