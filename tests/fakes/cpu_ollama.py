"""A loopback Ollama that costs what a CPU server costs: a realistic model of the server.

`FakeOllama` (tests/fakes/ollama_server.py) answers at once, which tells nothing about
latency. Axi runs Mistral 7B on a CPU (~60 prompt tokens/s, ~9 generated tokens/s), where
what matters is what Ollama keeps between requests: one KV cache per slot
(OLLAMA_NUM_PARALLEL), reused for the longest common token prefix, lost when another
conversation takes the slot, when the model is reloaded for another `num_ctx`, or when
`keep_alive` runs out. This server simulates that, on a scaled clock (`time_scale=0.01`:
a simulated 100 s takes 1 s), speaking the real HTTP API so the real `ollama` client and
Axi's code can be measured against it (tests and bench/):

    server = CpuOllama(CpuConfig(num_parallel=2, time_scale=0.01)); server.start()
    ... ollama.AsyncClient(host=server.url) ...
    server.records          # one RequestRecord per request: slot, queue, tokens, timings
    print(server.stats().summary())

The model (pure parts, and the choices' sources, in tests/fakes/cpu_model.py):
- prompt = the messages fitted to num_ctx as Ollama does (oldest messages dropped,
  system kept; then the runner's cut keeping num_keep tokens and the end), rendered
  through Mistral's template as Ollama ships it: the system prompt sits in the LAST user
  message, so it is evaluated again at every turn (`system_last=False`: first message).
- one scheduler admits requests in arrival order (as Ollama's); a model not loaded, or
  loaded with another num_ctx, is (re)loaded once its runner is idle (`load_s`, caches
  emptied); at most `max_loaded_models` runners; an idle runner past its keep_alive is
  gone. Then the request waits FIFO for a slot; `slot_policy` says which free slot it
  takes: "ollama" (default; Ollama < 0.30: the longest common prefix, so sequential
  conversations evict each other even with several slots), "ollama-multiuser"
  (OLLAMA_MULTIUSER_CACHE=1) or "llama-server" (Ollama >= 0.30, which runs GGUF models on
  llama.cpp's server: similarity, then least recently used, and a RAM prompt cache that
  brings an evicted conversation back).
- time to first token = queue + load + (prompt - cached) / prompt_rate; then one token
  per 1/gen_rate; the generated tokens join the slot's cache, so the next turn of the
  conversation reuses its reply too. /api/embed costs tokens / embed_rate on its own runner.
- reported durations are simulated nanoseconds. `prompt_eval_count` is the whole prompt,
  cached part included, as Ollama reports it since mid-2024 (ollama/ollama#5371; #16428
  restored it for llama-server); `count_cached=False` reports only the evaluated tokens,
  as Ollama 0.1.x did (and omitted it when all was cached). `prompt_eval_cached_count`
  (ollama#17943, 2026) is sent unless `report_cached=False`. NOTE: `ollama.ChatResponse`
  (client 0.6.3) is a pydantic model that DROPS unknown fields: it keeps done_reason,
  total_duration, load_duration, prompt_eval_count, prompt_eval_duration, eval_count and
  eval_duration, not prompt_eval_cached_count: read the raw NDJSON or `server.records`.
- the reply: `reply` (a string or callable(body) -> str; default: `reply_tokens` tokens),
  or `json_reply` for a request with `format`. Of FakeOllama's switches only `models`,
  `fail_status`/`fail_message` and `embedding` apply; `requests` records bodies as there.

Not modelled: CPU contention between slots or models (each runs at full rate), context
shift details (a reply overflowing num_ctx with `context_shift` leaves only num_keep
tokens usable in the cache), images, tool calls, embed inputs spread over slots.
Change `config` before the first request; `reset()` restores the constructor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.cpu_model import (
    CpuConfig,
    CpuStats,
    Msg,
    PromptCache,
    RequestRecord,
    Slot,
    cached_prefix,
    choose_slot,
    default_reply,
    fit_messages,
    render,
    tokenize,
    truncate,
)
from tests.fakes.ollama_server import FakeOllama, ReplyScript, _now


def keep_alive_seconds(value: Any, default: float) -> float:
    """Ollama's keep_alive: seconds as a number, or a Go duration ("30m", "1h30m", "-1")."""
    if value is None or value == "":
        return default
    try:
        seconds = float(value)
    except ValueError:
        units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        parts = re.findall(r"([\d.]+)(ms|h|m|s)", str(value))
        seconds = sum(float(n) * units[u] for n, u in parts)
        seconds = -seconds if str(value).strip().startswith("-") else seconds
    return math.inf if seconds < 0 else seconds


class Runner:
    """A model loaded with one num_ctx: its slots and their FIFO queue."""

    def __init__(self, model: str, num_ctx: int, cfg: CpuConfig, now: float):
        self.model, self.num_ctx, self.cfg = model, num_ctx, cfg
        self.slots = [Slot(i) for i in range(max(cfg.num_parallel, 1))]
        ram = cfg.ram_cache_tokens
        ram = num_ctx * len(self.slots) if ram is None else ram
        self.ram = PromptCache(ram) if ram > 0 and cfg.slot_policy == "llama-server" else None
        self.free = list(self.slots)
        self.waiters: deque[tuple[list[str], asyncio.Future[Slot]]] = deque()
        self.active = 0  # admitted requests not finished (running or waiting for a slot)
        self.idle = asyncio.Event()
        self.idle.set()
        self.last_used = now
        self.expires_at = math.inf

    def _take(self, tokens: list[str]) -> Slot:
        slot = choose_slot(self.cfg, self.slots, self.free, tokens, self.ram)
        self.free.remove(slot)
        return slot

    async def acquire(self, tokens: list[str]) -> Slot:
        if self.free and not self.waiters:
            return self._take(tokens)
        future: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        entry = (tokens, future)
        self.waiters.append(entry)
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())
            elif entry in self.waiters:
                self.waiters.remove(entry)
            raise

    def release(self, slot: Slot) -> None:
        self.free.append(slot)
        while self.waiters and self.free:
            tokens, future = self.waiters.popleft()
            if not future.done():
                future.set_result(self._take(tokens))


@dataclass
class _Job:
    """A chat or generate request, prepared before it queues."""

    body: dict[str, Any]
    record: RequestRecord
    keep_alive_s: float
    num_keep: int
    tokens: list[str]  # the prompt, fitted to num_ctx
    generated: list[str]  # the reply's tokens as they enter the cache
    pieces: list[str]  # the same as streamed text (joined: the reply)
    done_reason: str


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


class CpuOllama(FakeOllama):
    def __init__(self, config: CpuConfig | None = None):
        self._initial = config or CpuConfig()
        self._uses = itertools.count(1)
        super().__init__()  # calls reset()

    # ------------------------------------------------------------------ control
    def reset(self) -> None:
        super().reset()
        self.config = replace(self._initial)
        self.reply: ReplyScript = self._default_reply
        """The chat reply: a string or callable(body) -> str (default: reply_tokens long)."""
        self.json_reply: ReplyScript = "{}"
        """The reply to a request with `format` (JSON mode or a schema)."""
        self.records: list[RequestRecord] = []
        self._t0 = time.monotonic()
        self._unload_all()

    def start(self) -> None:
        if not self.server.running:
            self._unload_all()  # a restarted server has lost its models and caches
        super().start()

    def _unload_all(self) -> None:
        self._runners: dict[str, Runner] = {}
        self._sched_lock = asyncio.Lock()  # bound to the server's loop at first use

    def stats(self) -> CpuStats:
        return CpuStats.of(self.records)

    def now(self) -> float:
        """Simulated seconds since the last reset()."""
        return (time.monotonic() - self._t0) / self.config.time_scale

    def _default_reply(self, body: dict[str, Any]) -> str:
        return default_reply(self.config.reply_tokens)

    # ------------------------------------------------------------------ scheduling
    async def _sleep_until(self, sim_t: float) -> None:
        delay = self._t0 + sim_t * self.config.time_scale - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    def _new_record(self, kind: str, body: dict[str, Any], num_ctx: int) -> RequestRecord:
        model = body.get("model", "")
        model = model if ":" in model else f"{model}:latest"
        record = RequestRecord(len(self.records), kind, model, num_ctx,
                               bool(body.get("stream", True)) and kind != "embed", self.now())
        self.records.append(record)
        return record

    async def _admit(self, record: RequestRecord, embed: bool) -> Runner:
        """Ollama's scheduler: one request at a time, in arrival order."""
        async with self._sched_lock:
            cfg, ready = self.config, self.now()
            for name, runner in list(self._runners.items()):  # keep_alive ran out
                if runner.active == 0 and self.now() >= runner.expires_at:
                    del self._runners[name]
            current = self._runners.get(record.model)
            if current is None or current.num_ctx != record.num_ctx:
                if current is not None:  # another num_ctx: reload once in-flight work ends
                    await current.idle.wait()
                    del self._runners[record.model]
                while len(self._runners) >= max(cfg.max_loaded_models, 1):
                    victim = min(self._runners.values(),
                                 key=lambda r: (not r.idle.is_set(), r.last_used))
                    await victim.idle.wait()
                    del self._runners[victim.model]
                record.loaded = True
                record.load_s = cfg.embed_load_s if embed else cfg.load_s
                ready = self.now() + record.load_s
                await self._sleep_until(ready)
                current = Runner(record.model, record.num_ctx, replace(cfg), ready)
                self._runners[record.model] = current
            current.active += 1
            current.idle.clear()
            current.last_used = ready
            record.load_duration_s = ready - record.arrival_s
            return current

    @asynccontextmanager
    async def _occupy(self, record: RequestRecord, tokens: list[str], keep_alive_s: float,
                      embed: bool = False) -> AsyncIterator[tuple[Slot, float]]:
        """Admitted, then holding a slot: the request's whole stay on the server. Yields the
        slot and the simulated start: when the model was ready and the slot's previous
        request ended (model time, so that the wall clock's jitter does not accumulate)."""
        runner = await self._admit(record, embed)
        try:
            slot = await runner.acquire(tokens)
            try:
                slot.last_used = next(self._uses)
                record.slot = slot.index
                start = max(record.arrival_s + record.load_duration_s, slot.free_at)
                record.queue_s = max(0.0, start - record.arrival_s - record.load_s)
                yield slot, start
            finally:
                runner.release(slot)
        finally:
            runner.active -= 1
            runner.expires_at = self.now() + keep_alive_s
            if runner.active == 0:
                runner.idle.set()

    # ------------------------------------------------------------------ chat / generate
    def _prepare(self, body: dict[str, Any], kind: str, messages: list[Msg] | None,
                 raw_prompt: str | None = None) -> _Job:
        cfg = self.config
        options = body.get("options") or {}
        num_ctx = int(options.get("num_ctx") or cfg.default_num_ctx)
        num_keep = int(options.get("num_keep", cfg.default_num_keep))
        num_predict = int(options.get("num_predict", -1))
        record = self._new_record(kind, body, num_ctx)
        if messages is not None:
            fitted = fit_messages(messages, num_ctx, system_last=cfg.system_last)
            full = render(fitted, system_last=cfg.system_last)
            record.truncated = len(fitted) < len(messages)
        else:
            full = tokenize(raw_prompt or "")
        tokens = truncate(full, num_ctx, num_keep)
        record.truncated = record.truncated or len(tokens) < len(full)
        record.prompt_tokens = len(tokens)
        script = self.json_reply if body.get("format") else self.reply
        text = script(body) if callable(script) else script
        generated = tokenize(" " + text) if text else []
        cap, reason = len(generated), "stop"
        if 0 <= num_predict < cap:
            cap, reason = num_predict, "length"
        if not cfg.context_shift and num_ctx - len(tokens) < cap:
            cap, reason = max(num_ctx - len(tokens), 0), "length"
        generated = generated[:cap]
        pieces = list(generated)
        if pieces:
            pieces[0] = pieces[0][1:]  # the space the template puts before the reply
        keep_alive = keep_alive_seconds(body.get("keep_alive"), cfg.default_keep_alive_s)
        return _Job(body, record, keep_alive, num_keep, tokens, generated, pieces, reason)

    async def _run(self, job: _Job) -> AsyncIterator[str]:
        """The reply's pieces, each at its simulated time."""
        cfg, record = self.config, job.record
        async with self._occupy(record, job.tokens, job.keep_alive_s) as (slot, start):
            cached = cached_prefix(slot, job.tokens)
            slot.tokens = job.tokens[:cached]  # the diverging rest is discarded
            record.cached_tokens = cached
            record.evaluated_tokens = len(job.tokens) - cached
            record.prompt_eval_s = record.evaluated_tokens / cfg.prompt_rate
            first = start + record.prompt_eval_s
            for i, piece in enumerate(job.pieces):
                await self._sleep_until(first + i / cfg.gen_rate)
                record.eval_tokens = i + 1
                yield piece
            record.eval_s = len(job.pieces) / cfg.gen_rate
            await self._sleep_until(first + record.eval_s)
            held = job.tokens + job.generated
            if len(held) > record.num_ctx:  # the context shifted: the rest is misaligned
                held = job.tokens[:job.num_keep]
            slot.tokens, slot.free_at = held, first + record.eval_s
            record.done_reason = job.done_reason
            record.finished_s = self.now()

    def _final_chunk(self, job: _Job, key: str) -> dict[str, Any]:
        record, cfg = job.record, self.config
        final: dict[str, Any] = {
            "model": job.body.get("model", ""), "created_at": _now(),
            key: {"role": "assistant", "content": ""} if key == "message" else "",
            "done": True, "done_reason": job.done_reason,
            "total_duration": _ns(record.total_s),
            "load_duration": _ns(record.load_duration_s),
            "prompt_eval_count": record.prompt_tokens if cfg.count_cached
            else record.evaluated_tokens,
            "prompt_eval_duration": _ns(record.prompt_eval_s),
            "eval_count": record.eval_tokens,
            "eval_duration": _ns(record.eval_s),
        }
        if cfg.report_cached:
            final["prompt_eval_cached_count"] = record.cached_tokens
        return final

    async def _respond(self, job: _Job, key: str, request: Request) -> Response:
        def part(piece: str) -> dict[str, Any]:
            content = {"role": "assistant", "content": piece} if key == "message" else piece
            return {"model": job.body.get("model", ""), "created_at": _now(),
                    key: content, "done": False}

        if not job.record.stream:
            async def collect() -> str:
                return "".join([piece async for piece in self._run(job)])

            # like Ollama, a client that goes away cancels its request (and frees the slot)
            work = asyncio.ensure_future(collect())
            while not (await asyncio.wait({work}, timeout=0.005))[0]:
                if await request.is_disconnected():
                    work.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await work
                    return Response(status_code=499)
            text = work.result()
            final = self._final_chunk(job, key)
            final[key] = part(text)[key]
            return JSONResponse(final)

        async def lines() -> AsyncIterator[bytes]:
            async for piece in self._run(job):
                yield (json.dumps(part(piece)) + "\n").encode()
            yield (json.dumps(self._final_chunk(job, key)) + "\n").encode()
        return StreamingResponse(lines(), media_type="application/x-ndjson")

    def _refuse(self, body: dict[str, Any]) -> Response | None:
        if self.fail_status is not None:
            return JSONResponse({"error": self.fail_message}, status_code=self.fail_status)
        model = body.get("model", "")
        return None if self.has_model(model) else self._not_found(model)

    async def chat(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refuse(body)
        if refused is not None:
            return refused
        messages = [(m.get("role", "user"), m.get("content") or "")
                    for m in body.get("messages") or []]
        if not messages:  # Ollama's way to load (or, with keep_alive 0, unload) a model
            return await self._load_only(body)
        return await self._respond(self._prepare(body, "chat", messages), "message", request)

    async def generate(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refuse(body)
        if refused is not None:
            return refused
        if body.get("raw"):
            job = self._prepare(body, "generate", None, body.get("prompt", ""))
        else:
            system = [("system", body["system"])] if body.get("system") else []
            job = self._prepare(body, "generate", [*system, ("user", body.get("prompt", ""))])
        return await self._respond(job, "response", request)

    async def _load_only(self, body: dict[str, Any]) -> Response:
        options = body.get("options") or {}
        record = self._new_record("load", body, int(options.get("num_ctx")
                                                    or self.config.default_num_ctx))
        keep_alive = keep_alive_seconds(body.get("keep_alive"), self.config.default_keep_alive_s)
        async with self._occupy(record, [], keep_alive):
            record.finished_s = self.now()
        record.done_reason = "unload" if keep_alive == 0 else "load"
        return JSONResponse({"model": body.get("model", ""), "created_at": _now(),
                             "message": {"role": "assistant", "content": ""}, "done": True,
                             "done_reason": record.done_reason})

    # ------------------------------------------------------------------ embed
    async def embed(self, request: Request) -> Response:
        body = await self._record(request)
        refused = self._refuse(body)
        if refused is not None:
            return refused
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        options = body.get("options") or {}
        num_ctx = int(options.get("num_ctx") or self.config.default_num_ctx)
        counts = [max(len(tokenize(text)), 1) for text in inputs]
        if body.get("truncate") is False and any(n > num_ctx for n in counts):
            return JSONResponse({"error": "input exceeds maximum context length"},
                                status_code=400)
        record = self._new_record("embed", body, num_ctx)
        record.prompt_tokens = record.evaluated_tokens = sum(min(n, num_ctx) for n in counts)
        record.truncated = any(n > num_ctx for n in counts)
        keep_alive = keep_alive_seconds(body.get("keep_alive"), self.config.default_keep_alive_s)
        async with self._occupy(record, [], keep_alive, embed=True) as (slot, start):
            record.prompt_eval_s = record.prompt_tokens / self.config.embed_rate
            slot.free_at = start + record.prompt_eval_s
            await self._sleep_until(slot.free_at)
            record.done_reason, record.finished_s = "stop", self.now()
        if self.embedding is not None:
            vectors = [self.embedding(t) for t in inputs]
        else:
            vectors = [[((len(t) + i) % 7) / 7.0 for i in range(8)] for t in inputs]
        return JSONResponse({"model": body.get("model", ""), "embeddings": vectors,
                             "total_duration": _ns(record.total_s),
                             "load_duration": _ns(record.load_duration_s),
                             "prompt_eval_count": record.prompt_tokens})

    def _app(self) -> Starlette:
        app = super()._app()
        app.router.routes.append(Route("/api/generate", self.generate, methods=["POST"]))
        return app


# ---------------------------------------------------------------------- fixtures
FAST = 0.005
"""The tests' clock: a simulated second takes 5 ms."""
StartCpu = Callable[..., CpuOllama]


@pytest.fixture
def cpu_servers() -> Iterator[StartCpu]:
    """Start simulated CPU servers with CpuConfig changes (default: the tests' fast clock,
    no load time); all stopped after the test."""
    servers: list[CpuOllama] = []

    def start(**changes: Any) -> CpuOllama:
        server = CpuOllama(replace(CpuConfig(time_scale=FAST, load_s=0.0), **changes))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
