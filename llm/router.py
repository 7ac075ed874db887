"""Local first, Claude when it must: the only place where LLM retries and fallbacks live.

The router tries the local model (unless its circuit breaker is open), falls back to the
remote model on the errors that mean "local cannot answer this now" (down, timeout,
prompt too large, model missing, invalid structured output after retries), and refuses to
fall back when the message must never leave the server, when no remote is configured, or
when the monthly Claude budget is spent. Every attempt is handed to `record`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from llm.breaker import CircuitBreaker
from llm.budget import claude_cost_eur
from llm.errors import (
    BudgetExceeded,
    InvalidStructuredOutput,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    LocalOnlyUnavailable,
    LocalReserved,
    LocalTooBusy,
    ModelNotFound,
    PromptTooLarge,
)
from llm.gate import LocalGate, Preempted, Priority, Ticket
from llm.protocol import ChatModel, ChatStream, JsonSchema
from llm.structured import correction_messages, parse_structured
from llm.tokens import estimate_messages
from llm.types import CallRecord, ChatMessage, Reply, StructuredReply
from llm.wait_estimate import Rates, cached_guess_any, expected_wait_s, request_costs

log = logging.getLogger(__name__)

RecordFn = Callable[[CallRecord], Awaitable[object]]
RatesFn = Callable[[str], Rates | None]
BudgetFn = Callable[[], Awaitable[bool]]
T = TypeVar("T")

# Errors after which the remote model may answer instead.
FALLBACK_ERRORS: tuple[type[LLMError], ...] = (
    LLMUnavailable, LLMTimeout, PromptTooLarge, ModelNotFound, InvalidStructuredOutput,
)
# ... and, in `_local_first`, a person's request preempted then found too busy (llm/gate.py)
LOCAL_FIRST_ERRORS: tuple[type[LLMError], ...] = (*FALLBACK_ERRORS, LocalTooBusy)
# Errors that say the local server is unhealthy (they count for the circuit breaker).
HEALTH_ERRORS: tuple[type[LLMError], ...] = (LLMUnavailable, LLMTimeout, ModelNotFound)
CIRCUIT_OPEN = "circuit_open"
ASKED = "demande"  # the person asked for the remote model (e.g. Telegram's /claude)
ERROR_TEXT_LIMIT = 500


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT]


class Router:
    def __init__(self, local: ChatModel, remote: ChatModel | None, *,
                 record: RecordFn | None = None, budget_ok: BudgetFn | None = None,
                 clock: Callable[[], float] = time.monotonic, breaker_threshold: int = 3,
                 breaker_cooldown_s: float = 60.0, gate: LocalGate | None = None,
                 rates: RatesFn | None = None, max_wait_s: float | None = None,
                 caches: int = 1):
        self.local = local
        self.remote = remote
        self.gate = gate
        """Every local attempt takes a turn here (llm/gate.py): people before background."""
        self.rates = rates
        self.max_wait_s = max_wait_s
        """A person who may use the fallback and would wait longer than this for the local
        model's first token gets the fallback (reason "local_busy"); a client, while the
        gate keeps the model for the inner circle, too (reason "local_reserved")."""
        self._recent_local: deque[list[ChatMessage]] = deque(maxlen=max(caches, 1))
        """What the local model read last, as many prompts as the server keeps caches
        (AXI_LOCAL_CACHES): the wait estimate's guess of what is cached."""
        self._record = record
        self.budget_ok = budget_ok
        self.breaker = CircuitBreaker(threshold=breaker_threshold,
                                      cooldown_s=breaker_cooldown_s, clock=clock)

    # ------------------------------------------------------------------ bookkeeping
    async def _log(self, record: CallRecord) -> None:
        if self._record is None:
            return
        try:
            await self._record(record)
        except Exception:  # the call log must never break a reply (an outage of the
            # log's database is one line, said by the recorder: bot/llm_wiring.py)
            log.warning("could not record an LLM call", exc_info=True)

    def _is_local(self, model: ChatModel) -> bool:
        return model is self.local

    async def _log_success(self, reply: Reply, task: str, reason: str | None,
                           *, ok: bool = True, error: str | None = None,
                           queue_ms: int = 0) -> None:
        cost = (
            claude_cost_eur(reply.model, reply.tokens_in, reply.tokens_out)
            if reply.provider == "anthropic" else 0.0
        )
        await self._log(CallRecord(
            provider=reply.provider, model=reply.model, task=task, tokens_in=reply.tokens_in,
            tokens_out=reply.tokens_out, latency_ms=reply.latency_ms, ok=ok, error=error,
            fallback_reason=reason, cost_eur=cost, timings=reply.timings, queue_ms=queue_ms,
        ))

    async def _log_failure(self, model: ChatModel, task: str, start: float,
                           exc: BaseException, reason: str | None) -> None:
        await self._log(CallRecord(
            provider=model.provider, model=model.model_for(task), task=task,
            latency_ms=int((time.perf_counter() - start) * 1000), ok=False,
            error=_error_text(exc), fallback_reason=reason,
        ))

    def _health(self, model: ChatModel, exc: BaseException | None) -> None:
        if not self._is_local(model):
            return
        if exc is None:
            self.breaker.success()
        elif isinstance(exc, HEALTH_ERRORS):
            self.breaker.failure()
        else:
            self.breaker.release()

    async def _failed(self, model: ChatModel, task: str, start: float, exc: BaseException,
                      reason: str | None) -> None:
        """An attempt ended in an error: tell the breaker, record it."""
        self._health(model, exc)
        await self._log_failure(model, task, start, exc, reason)

    # ------------------------------------------------------------------ model time
    def expected_wait(self, messages: list[ChatMessage], priority: Priority,
                      task: str = "conversation") -> float | None:
        """Seconds until the local model's first token for this prompt (None: unknown,
        no gate or no measured rates yet)."""
        rates = self.rates(task) if self.rates is not None else None
        if self.gate is None or rates is None:
            return None
        return expected_wait_s(
            self.gate.ahead_of(priority), own_prompt_tokens=estimate_messages(
                {"role": m.role, "content": m.content} for m in messages),
            own_cached=cached_guess_any(messages, self._recent_local), rates=rates,
            now=self.gate.now(), slots=self.gate.slots)

    def _costs(self, messages: list[ChatMessage], task: str) -> dict[str, float | None]:
        """The gate's estimates of a local request: its whole time, its prompt's read."""
        rates = self.rates(task) if self.rates is not None else None
        if rates is None:
            return {"cost_s": None, "read_s": None}
        return request_costs(estimate_messages({"role": m.role, "content": m.content}
                                               for m in messages),
                             cached_guess_any(messages, self._recent_local), rates)

    async def _too_busy(self, messages: list[ChatMessage], priority: Priority,
                        local_only: bool, task: str) -> LocalTooBusy | None:
        """The local model is too busy for this person, or kept for the inner circle
        (llm/gate.py, the reserve) while this is a client, and they may use the fallback."""
        if (local_only or self.remote is None
                or priority not in (Priority.INNER_LIVE, Priority.CLIENT_LIVE)):
            return None  # an email waits: nobody watches it live
        busy: LocalTooBusy | None = None
        reserved = (self.gate.reserved_s() if self.gate is not None
                    and priority is Priority.CLIENT_LIVE else 0.0)
        if reserved > 0:
            busy = LocalReserved(f"the local model is kept for the inner circle for ~"
                                 f"{reserved:.0f} s more (AXI_LOCAL_RESERVE_S="
                                 f"{self.gate.reserve_s if self.gate else 0:.0f} s)")
        elif self.max_wait_s is not None:
            wait = self.expected_wait(messages, priority, task)
            if wait is not None and wait > self.max_wait_s:
                busy = LocalTooBusy(f"~{wait:.0f} s of waiting for the local model "
                                    f"(AXI_LOCAL_MAX_WAIT={self.max_wait_s:.0f} s)")
        if busy is None:
            return None
        if self.budget_ok is not None and not await self.budget_ok():
            return None  # no fallback to give: the person waits for the local model
        log.info("local model %s: fallback", busy)
        return busy

    # ------------------------------------------------------------------ the decision
    async def _local_first(
        self,
        local: Callable[[], Awaitable[T]],
        remote: Callable[[ChatModel, str], Awaitable[T]],
        *,
        local_only: bool,
        remote_first: bool = False,
        busy: LocalTooBusy | None = None,
    ) -> T:
        """The retry-then-fallback sequence, for every kind of call: `local()` (unless the
        breaker is open), and on an error that means "local cannot answer this now",
        `remote(model, reason)` if falling back is allowed. Each side records its own
        attempts; `local()` does its own retries (structured output). `remote_first`: the
        person asked for the remote model (same rules: never for local-only content, never
        past the budget)."""
        if remote_first:
            return await remote(await self._check_fallback(ASKED, None, local_only), ASKED)
        if busy is not None:  # checked by _too_busy: the fallback is allowed
            return await remote(await self._check_fallback(busy.reason, busy, local_only),
                                busy.reason)
        cause: LLMError | None = None
        reason = CIRCUIT_OPEN
        if self.breaker.allow():
            try:
                return await local()
            except LOCAL_FIRST_ERRORS as exc:
                cause, reason = exc, exc.reason
        fallback = await self._check_fallback(reason, cause, local_only)
        return await remote(fallback, reason)

    async def _check_fallback(self, reason: str, cause: BaseException | None,
                              local_only: bool) -> ChatModel:
        """The remote model, if falling back is allowed; otherwise the right error."""
        detail = (f"{cause}" if cause is not None
                  else "the remote model was asked for" if reason == ASKED
                  else "circuit breaker open")
        if local_only:
            raise LocalOnlyUnavailable(
                f"local model failed ({reason}: {detail}) and this message must never leave "
                "the server: it waits for the local model"
            ) from cause
        if self.remote is None:
            raise LLMUnavailable(
                f"local model failed ({reason}: {detail}) and no fallback is configured "
                "(set ANTHROPIC_API_KEY to allow Claude as a fallback)"
            ) from cause
        if self.budget_ok is not None and not await self.budget_ok():
            raise BudgetExceeded(
                f"local model failed ({reason}: {detail}) and the monthly Claude budget "
                "is spent (AXI_CLAUDE_MONTHLY_BUDGET): no fallback until next month"
            ) from cause
        return self.remote

    # ------------------------------------------------------------------ preemption
    async def _gated(self, priority: Priority, call: Callable[[], Awaitable[T]],
                     costs: dict[str, float | None]) -> T:
        """`call()` in a turn at the gate; a person's request preempted by someone who goes
        first (llm/gate.py, `yields_to`) is asked again, keeping its place: nothing was
        shown of it, so it is answered once. Background work's Preempted goes up (its
        item stays queued)."""
        assert self.gate is not None
        seq = self.gate.place()
        try:
            while True:
                try:
                    return await self.gate.run(priority, call, seq=seq, **costs)
                except Preempted as exc:
                    if priority is Priority.BACKGROUND:
                        raise
                    self.breaker.release()
                    log.info("%s request preempted (%s): asked again",
                             priority.name.lower(), exc)
        finally:
            self.gate.forget(seq)

    # ------------------------------------------------------------------ one attempt
    async def _attempt(
        self,
        model: ChatModel,
        messages: list[ChatMessage],
        task: str,
        *,
        json_schema: JsonSchema | None = None,
        validate: bool = False,
        reason: str | None = None,
        priority: Priority = Priority.CLIENT_LIVE,
    ) -> tuple[Reply, Any]:
        """One call to one model, recorded; with `validate`, the answer is parsed against
        json_schema and an invalid one is recorded as a failure. A local call waits for
        its turn at the gate (background work may be preempted: Preempted, not recorded)."""
        asked = start = time.perf_counter()

        async def call() -> Reply:
            nonlocal start
            start = time.perf_counter()  # the model's time, not the queue's
            if self._is_local(model):
                self._recent_local.append(list(messages))
            return await model.chat(messages, task=task, json_schema=json_schema)

        try:
            if self.gate is not None and self._is_local(model):
                reply = await self._gated(priority, call, self._costs(messages, task))
            else:
                reply = await call()
        except Preempted:
            self.breaker.release()
            raise
        except Exception as exc:
            await self._failed(model, task, start, exc, reason)
            raise
        except BaseException:  # cancelled: says nothing about the server's health
            if self._is_local(model):
                self.breaker.release()
            raise
        self._health(model, None)
        data: Any = None
        if validate and json_schema is not None:
            try:
                data = parse_structured(reply.text, json_schema)
            except InvalidStructuredOutput as exc:
                await self._log_success(reply, task, reason, ok=False, error=_error_text(exc),
                                        queue_ms=int((start - asked) * 1000))
                raise
        await self._log_success(reply, task, reason, queue_ms=int((start - asked) * 1000))
        return replace(reply, fallback_reason=reason), data

    # ------------------------------------------------------------------ chat
    async def chat(
        self,
        messages: list[ChatMessage],
        *,
        task: str = "conversation",
        json_schema: JsonSchema | None = None,
        local_only: bool = False,
        fallback_messages: list[ChatMessage] | None = None,
        remote_first: bool = False,
        priority: Priority = Priority.CLIENT_LIVE,
    ) -> Reply:
        """`fallback_messages`: the prompt the remote model gets instead of `messages`
        (the caller left out what must never leave the server). `priority`: the turn a
        local call takes at the gate."""
        async def ask(model: ChatModel, reason: str | None = None) -> Reply:
            prompt = messages if reason is None or fallback_messages is None else fallback_messages
            reply, _ = await self._attempt(model, prompt, task, json_schema=json_schema,
                                           reason=reason, priority=priority)
            return reply

        busy = None if remote_first else await self._too_busy(messages, priority, local_only,
                                                               task)
        return await self._local_first(lambda: ask(self.local), ask, local_only=local_only,
                                       remote_first=remote_first, busy=busy)

    async def chat_json(
        self,
        messages: list[ChatMessage],
        schema: JsonSchema,
        *,
        retries: int = 2,
        task: str = "extraction",
        local_only: bool = False,
        priority: Priority = Priority.BACKGROUND,
    ) -> StructuredReply:
        """A JSON answer validated against `schema`: local (1 + retries attempts, each
        retry told what was wrong), then one remote attempt per the fallback policy."""

        async def ask_local() -> StructuredReply:
            conversation = list(messages)
            for attempt in range(max(retries, 0) + 1):
                try:
                    reply, data = await self._attempt(
                        self.local, conversation, task, json_schema=schema, validate=True,
                        priority=priority)
                    return StructuredReply(data=data, reply=reply)
                except InvalidStructuredOutput as exc:
                    if attempt >= retries or not self.breaker.allow():
                        raise
                    conversation = [*conversation, *correction_messages(exc.text, exc)]
            raise AssertionError("unreachable: the last attempt returns or raises")

        async def ask_remote(model: ChatModel, reason: str) -> StructuredReply:
            reply, data = await self._attempt(model, list(messages), task, json_schema=schema,
                                              validate=True, reason=reason)
            return StructuredReply(data=data, reply=reply)

        return await self._local_first(ask_local, ask_remote, local_only=local_only)

    # ------------------------------------------------------------------ streaming
    def stream(
        self, messages: list[ChatMessage], *, task: str = "conversation", local_only: bool = False,
        fallback_messages: list[ChatMessage] | None = None,
        priority: Priority = Priority.CLIENT_LIVE,
    ) -> ChatStream:
        """Chunks from local; from remote only if local fails before its first chunk.
        A failure after text was sent raises LLMUnavailable (text is never duplicated).
        `fallback_messages`: the remote's prompt, as in `chat`. A local stream holds its
        turn at the gate until it is read to the end (never preempted)."""
        return ChatStream(lambda out: self._produce(out, messages, task, local_only,
                                                    fallback_messages or messages, priority))

    async def _produce(
        self, out: ChatStream, messages: list[ChatMessage], task: str, local_only: bool,
        remote_messages: list[ChatMessage], priority: Priority,
    ) -> AsyncIterator[str]:
        async def open_local() -> _OpenStream:
            """Local's stream up to its first chunk: a failure before it may fall back;
            preempted before it (llm/gate.py), it is asked again at its place."""
            seq = self.gate.place() if self.gate is not None else None
            try:
                while True:
                    ticket = None
                    if self.gate is not None:
                        ticket = await self.gate.acquire(
                            priority, seq=seq, stream=True, **self._costs(messages, task))
                    self._recent_local.append(list(messages))
                    start = time.perf_counter()
                    inner = self.local.stream(messages, task=task)
                    try:  # until it is shown, the turn may yield (llm/gate.py)
                        first: str | None = await (
                            inner.__anext__() if ticket is None or self.gate is None
                            else self.gate.until_watched(ticket, inner.__anext__))
                    except StopAsyncIteration:
                        first = None
                    except Preempted as exc:
                        try:
                            await inner.aclose()
                        finally:
                            if ticket is not None and self.gate is not None:
                                self.gate.release(ticket)
                        self.breaker.release()
                        busy = await self._too_busy(messages, priority, local_only, task)
                        if busy is not None:  # a client who may have the fallback gets it now
                            raise busy from exc
                        log.info("%s stream preempted (%s): asked again", priority.name.lower(),
                                 exc)
                        continue
                    except BaseException as exc:
                        if ticket is not None and self.gate is not None:
                            self.gate.release(ticket)
                        if isinstance(exc, Exception):
                            await self._failed(self.local, task, start, exc, None)
                        raise
                    return _OpenStream(self.local, inner, first, start, None, ticket)
            finally:  # answered, sent to the fallback or given up: not asked again
                if seq is not None and self.gate is not None:
                    self.gate.forget(seq)

        async def open_remote(model: ChatModel, reason: str) -> _OpenStream:
            return _OpenStream(model, model.stream(remote_messages, task=task), None,
                               time.perf_counter(), reason)

        busy = await self._too_busy(messages, priority, local_only, task)
        opened = await self._local_first(open_local, open_remote, local_only=local_only,
                                         busy=busy)
        async with aclosing(self._follow(opened, task)) as relay:
            async for chunk in relay:
                yield chunk
        assert opened.inner.reply is not None
        out.finish(replace(opened.inner.reply, fallback_reason=opened.reason))

    async def _follow(self, opened: _OpenStream, task: str) -> AsyncGenerator[str, None]:
        """Relay a stream to the end, recording it; a failure once text has gone out
        becomes LLMUnavailable."""
        model, inner, reason = opened.model, opened.inner, opened.reason
        sent = False
        finished = False
        try:
            if opened.first is not None:
                sent = True
                yield opened.first
            async for chunk in inner:
                sent = True
                yield chunk
            finished = True
        except LLMError as exc:
            finished = True
            await self._failed(model, task, opened.start, exc, reason)
            if sent and not isinstance(exc, LLMUnavailable):
                raise LLMUnavailable(f"the reply stream broke after it started: {exc}") from exc
            raise
        finally:
            if not finished and self._is_local(model):
                self.breaker.release()  # abandoned or cancelled mid-stream
            try:
                await inner.aclose()
            finally:
                if opened.ticket is not None and self.gate is not None:
                    self.gate.release(opened.ticket)
        if inner.reply is None:
            raise LLMUnavailable("stream ended without a final reply")
        self._health(model, None)
        waited = opened.ticket.waited_s if opened.ticket is not None else 0.0
        await self._log_success(inner.reply, task, reason, queue_ms=int(waited * 1000))


@dataclass(frozen=True)
class _OpenStream:
    """A stream that has started: which model, its first chunk (if already read), when it
    started, and why it is the fallback (None for local)."""

    model: ChatModel
    inner: ChatStream
    first: str | None
    start: float
    reason: str | None
    ticket: Ticket | None = None  # the local model's turn, given back when the stream ends
