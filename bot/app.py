"""Axi's lifecycle: open memory, wire the LLM router, the responder, the pipeline, the
extractor, `notify` and confirmations; start, supervise and stop the channels the
composition root (`channels/registry.py`) built; run the background loops. One explicit
`async with Axi(settings, channel_set) as axi:` — no work at import time, and no
channel module imported here: channels arrive as objects honouring `bot.channel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from bot import backoff, commands
from bot.alerts import budget_with_alert
from bot.axis_access import AxisAccessService
from bot.channel import Channel, ChannelServices, ChannelSet, KnownPerson, ReplyOutcome
from bot.config import Settings
from bot.confirmations import BUILT_IN, Confirmations
from bot.digest_summary import make_summarizer
from bot.embedder import QueryVectors, SouvenirEmbedder
from bot.extractor import Extractor
from bot.health import HealthService, Runtime, Supervised, describe
from bot.inbound import Inbound
from bot.jobs_contract import Job, JobServices
from bot.llm_wiring import anthropic_config, call_recorder, embed_config, ollama_config
from bot.maintenance import run_maintenance
from bot.metrics import AxiMetrics
from bot.monitor import PROBE_INTERVAL_S, ComponentMonitor
from bot.notify import Notifier
from bot.pipeline import PARKED_LANES_PER_LANE, Pipeline, conversation_key
from bot.policy import INNER_CIRCLE, sees_private
from bot.quiet_hours import QuietHours
from bot.responder import Responder
from bot.site_access import SiteAccessService
from bot.waiting import wait_for_event_or_stop
from bot.web_access import WebAccessService
from llm.anthropic_chat import AnthropicChat
from llm.embeddings import OllamaEmbedder
from llm.gate import LocalGate
from llm.ollama_chat import OllamaChat
from llm.router import Router
from llm.wait_estimate import measured
from memory import migrate
from memory.database import Database, lost_connection, open_database
from memory.messages import StoredMessage
from memory.store import MemoryStore

log = logging.getLogger(__name__)

ONE_SHOT_TIMEOUT_S = 600.0
STABLE_RUN_S = 300.0
"""A channel loop that ran this long before failing was healthy: its restart backoff
starts over."""


@dataclass
class ChannelState:
    """A supervised channel (or job) as /health shows it (bot/health.py)."""

    state: str = "starting"  # starting, ok, restarting, stopped
    restarts: int = 0
    last_error: str | None = None


class Axi:
    def __init__(self, settings: Settings,
                 channels: ChannelSet | Mapping[str, Channel] | None = None, *,
                 alerting: bool = False, clock: Callable[[], datetime] | None = None):
        self.settings = settings
        self.alerting = alerting
        """Raise alerts for Ludo (the long-running `axi run` does): a one-shot `axi ask`
        would spend the month's alert on a console nobody watches."""
        wiring = channels if isinstance(channels, ChannelSet) else ChannelSet.of(channels or {})
        self.wiring = wiring
        self.channels: dict[str, Channel] = wiring.channels
        self.clock = clock or (lambda: datetime.now(UTC))
        self._stack = AsyncExitStack()
        self.db: Database
        self.store: MemoryStore
        self.router: Router
        self.pipeline: Pipeline
        self.extractor: Extractor
        self.notifier: Notifier
        self.confirmations: Confirmations
        self.embedder: SouvenirEmbedder | None = None
        self.started_at = datetime.now(UTC)
        self._tasks: list[asyncio.Task[Any]] = []
        self.channel_states: dict[str, ChannelState] = {}
        self.jobs: list[Job] = list(wiring.jobs)
        self.job_states: dict[str, ChannelState] = {}
        self.stop_event = asyncio.Event()
        self.metrics = AxiMetrics()
        """This assistant's own Prometheus registry (bot/metrics.py)."""
        self.monitor_interval_s = PROBE_INTERVAL_S
        self.monitor: ComponentMonitor | None = None

    async def __aenter__(self) -> Axi:
        cfg = self.settings
        url = cfg.database_url.get_secret_value() if cfg.database_url else None
        try:
            # each worker lane reads its context with ~5 concurrent queries: keep that many
            # connections pooled, or every message pays for opening new ones; a lane parked
            # at the local model's gate holds one (its message's claim)
            pool = (5 + PARKED_LANES_PER_LANE) * cfg.worker_concurrency + 2
            self.db = await self._stack.enter_async_context(
                open_database(url, cfg.data_dir, pool_size=pool))
            await migrate.require_current(self.db.engine)
            self.store = MemoryStore(self.db)
            fallback = self.wiring.fallback_route
            self.notifier = Notifier(
                self.store, configured=lambda: self.wiring.configured,
                fallback=fallback if fallback is not None else ("console", "-"),
                quiet_hours=QuietHours.parse(cfg.quiet_hours), timezone=cfg.timezone,
                clock=self.clock)
            self.confirmations = Confirmations(self.store, self.notifier, clock=self.clock)
            for name, action in BUILT_IN.items():
                self.confirmations.register(name, action)
            local = await self._stack.enter_async_context(OllamaChat(ollama_config(cfg)))
            remote_cfg = anthropic_config(cfg)
            remote = None if remote_cfg is None else await self._stack.enter_async_context(
                AnthropicChat(remote_cfg))
            self.gate = LocalGate(slots=cfg.local_slots, quiet_s=cfg.background_quiet_s,
                                  background_max_s=cfg.background_max_s,
                                  reserve_s=cfg.local_reserve_s,
                                  spare=cfg.local_caches - cfg.local_slots)
            self.router = Router(
                local, remote, record=call_recorder(self.store, observe=self.metrics.llm_call),
                gate=self.gate,
                rates=lambda task: measured(local.measured_rates(task)),
                max_wait_s=cfg.local_max_wait_s, caches=cfg.local_caches,
                budget_ok=budget_with_alert(
                    lambda: self.store.claude_spend_this_month(timezone=cfg.timezone),
                    cfg.claude_monthly_budget_eur, notify=self.notifier.notify,
                    timezone=cfg.timezone, alerting=lambda: self.alerting))
            embed_cfg = embed_config(cfg)
            embedder = None if embed_cfg is None else OllamaEmbedder(embed_cfg)
            vectors = None
            if embedder is not None:
                embedder = await self._stack.enter_async_context(embedder)
                vectors = QueryVectors(self.store, embedder,
                                       min_similarity=cfg.embed_min_similarity)
            responder = Responder(self.store, self.router, num_ctx=cfg.local_num_ctx,
                                  reply_tokens=local.num_predict_for("conversation"),
                                  timezone=cfg.timezone, vectors=vectors,
                                  confirmations=self.confirmations, person_of=self._person_of)
            responder.use_first_user_system(local.model_for("conversation"))
            self.pipeline = Pipeline(self.store, responder, self.channels,
                                     concurrency=cfg.worker_concurrency,
                                     on_accept=self._someone_wrote, counters=self.metrics)
            self.extractor = Extractor(
                self.store, self.router,
                continuations=local.model_for("extraction") == local.model_for("conversation"),
                prepared_wait_s=cfg.local_max_wait_s)
            responder.on_turn = self.extractor.remember_turn
            responder.prepared = self.extractor.prepared
            pipeline = self.pipeline
            self.embedder = None if embedder is None else SouvenirEmbedder(
                self.store, embedder,
                idle=lambda: pipeline.idle_lanes >= pipeline.concurrency, gate=self.gate)
            self.health_service = HealthService(
                store=self.store, settings=cfg, router=self.router, runtime=self._runtime,
                started_at=self.started_at, clock=self.clock)
            self.services = self._services()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop_event.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for job in reversed([j for j in self.jobs if j.name in self.job_states]):
            with contextlib.suppress(Exception):
                await job.stop()
        for channel in reversed(list(self.channels.values())):
            with contextlib.suppress(Exception):
                await channel.stop()
        if hasattr(self, "pipeline"):
            await self.pipeline.close()
            await self.pipeline.responder.close()
        if hasattr(self, "extractor"):
            await self.extractor.close()
        await self._stack.aclose()

    # ------------------------------------------------------------------ wiring
    async def _someone_wrote(self, messages: Sequence[StoredMessage]) -> None:
        """A known, unblocked person wrote: background work yields the local model now and
        waits for quiet. A stranger or a blocked sender does not count — else anyone writing
        every few seconds would hold back extraction and the veilles' summaries for ever
        (a stranger's one polite answer needs no model)."""
        try:
            for msg in messages:
                if not msg.verifie or msg.metadata.get("evenement"):
                    continue
                person = await self.store.find_by_identity(msg.canal, msg.adresse)
                if person is not None and not person.bloque:
                    self.gate.note_person()
                    return
        except Exception as exc:  # the messages are stored: a hint lost is not an error
            log.warning("could not tell whether a person wrote: %s", exc)

    def _person_of(self, channel: str, address: str) -> int | None:
        resolve = getattr(self.channels.get(channel), "person_of", None)
        return resolve(address) if resolve is not None else None

    async def _identify(self, channel: str, address: str) -> KnownPerson | None:
        person = await self.store.find_by_identity(channel, address)
        if person is None:
            return None
        return KnownPerson(id=person.id, name=person.personne, relation=person.relation or "",
                           blocked=person.bloque, inner_circle=sees_private(person))

    def _services(self) -> ChannelServices:
        return ChannelServices(
            accept=self.pipeline.accept, accept_batch=self.pipeline.accept_batch,
            read_cursor=self.store.read_cursor, identify=self._identify,
            addresses_of=self.store.addresses_on,
            notify=self.notifier.notify, lock=self.store.advisory_lock,
            wait_reply=self.pipeline.wait_reply, health=self.health, clock=self.clock,
            metrics=self.metrics_text, unreachable=lost_connection,
            commands=commands.menus(),
            recent_inbound=lambda channel, address, seconds: self.store.recent_inbound(
                channel, address, seconds, inner_circle=INNER_CIRCLE),
            web=WebAccessService(self.store),
            axis=AxisAccessService(self.store, self.confirmations, self.notifier,
                                   self.pipeline, self.settings),
            site=SiteAccessService(self.store, self.confirmations, self.notifier, self.settings))

    # ------------------------------------------------------------------ loops
    def start_loops(self, *, worker: bool = True, outbox: bool = True,
                    extractor: bool = True, maintenance: bool = True,
                    embeddings: bool = True, monitor: bool = True) -> None:
        """The background loops; the component monitor only when this process alerts
        (`axi run`): it tells Ludo and Anthony when a part of Axi breaks."""
        stop = self.stop_event
        if worker:
            self._tasks.append(asyncio.create_task(self.pipeline.run_worker(stop), name="worker"))
        if outbox:
            self._tasks.append(asyncio.create_task(self.pipeline.run_outbox(stop), name="outbox"))
        if extractor:
            self._tasks.append(asyncio.create_task(self.extractor.run(stop), name="extractor"))
        if maintenance:
            self._tasks.append(asyncio.create_task(run_maintenance(
                self.store, stop, visitor_retention_days=self.settings.visitor_retention_days),
                name="maintenance"))
        if embeddings and self.embedder is not None:
            self._tasks.append(asyncio.create_task(self.embedder.run(stop), name="embeddings"))
        if monitor and self.alerting:
            self.monitor = ComponentMonitor(
                health=self.health, store=self.store, notify=self.notifier.notify,
                clock=self.clock, timezone=self.settings.timezone,
                interval_s=self.monitor_interval_s)
            self._tasks.append(asyncio.create_task(self.monitor.run(stop), name="monitor"))

    async def start_channels(self) -> None:
        """Start every channel (the HTTP server last: the others mount their routes
        first), then supervise each one's receiving loop. A channel that cannot start
        raises here with its own clear error."""
        for name, channel in sorted(self.channels.items(), key=lambda kv: kv[0] == "web"):
            await channel.start(self.services)
            self.channel_states[name] = ChannelState(state="ok")
            self._tasks.append(asyncio.create_task(self._supervise(name, channel),
                                                   name=f"channel-{name}"))

    async def start_jobs(self) -> None:
        """Start the scheduled jobs the composition root built (the veilles' scheduler),
        after the channels (their notifications go out through them), and supervise each
        one's loop like a channel's."""
        services = JobServices(store=self.store, settings=self.settings,
                               notify=self.notifier.notify, lock=self.store.advisory_lock,
                               clock=self.clock, summarize=make_summarizer(self.router))
        for job in self.jobs:
            try:
                await job.start(services)
            except BaseException:
                with contextlib.suppress(Exception):
                    await job.stop()
                raise
            self.job_states[job.name] = ChannelState(state="ok")
            self._tasks.append(asyncio.create_task(
                self._supervise(job.name, job, state=self.job_states[job.name],
                                services=services), name=f"job-{job.name}"))

    async def _supervise(self, name: str, channel: Channel | Job, *,
                         state: ChannelState | None = None, services: Any = None) -> None:
        """Run a channel's (or a job's) loop; when it dies, restart it (stop, then start
        again until start succeeds) with backoff (CHANNEL_RESTART), and show it in /health
        until it runs again. A loop that ran STABLE_RUN_S without failing starts the
        backoff over."""
        state = state or self.channel_states[name]
        services = services if services is not None else self.services
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self.stop_event.is_set():
            began = loop.time()
            try:
                await channel.run()
                return  # a passive channel, or a clean stop
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                state.restarts += 1
                state.state = "restarting"
                self.metrics.error(name)
                state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("channel %s stopped (%s); restart %d", name, state.last_error,
                            state.restarts)
            if loop.time() - began >= STABLE_RUN_S:
                attempt = 0
            while not self.stop_event.is_set():  # until it starts again
                attempt += 1
                await wait_for_event_or_stop(None, self.stop_event,
                                             backoff.CHANNEL_RESTART.delay(attempt))
                if self.stop_event.is_set():
                    return
                try:
                    await channel.stop()
                except Exception as exc:  # a channel that cannot stop may still start
                    log.warning("channel %s did not stop cleanly: %s", name, exc)
                try:
                    await channel.start(services)
                except Exception as exc:
                    state.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    log.warning("channel %s could not restart: %s", name, state.last_error)
                    continue
                state.state = "ok"
                break

    # ------------------------------------------------------------------ one message
    async def answer_one(self, inbound: Inbound, *, timeout_s: float = ONE_SHOT_TIMEOUT_S
                         ) -> ReplyOutcome:
        """`axi ask`: accept a message, answer it here (after the earlier messages of its
        conversation, which this process answers too unless another process is on them),
        deliver its replies on this process's channels, and return what became of it —
        even when another process (`axi run`, a second `axi ask`) answered it. Never
        takes other conversations' messages: a one-shot command does its own work only."""
        message_id = await self.pipeline.accept(inbound)
        conversation = conversation_key(inbound)
        await self.store.make_due(conversation)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if await self.pipeline.process_one(message_id=message_id):
                break
            if await self.pipeline.process_one(conversation=conversation):
                continue  # an earlier message of the conversation, answered here
            outcome = await self.pipeline.wait_reply(message_id, 0.0)
            if outcome.answered or outcome.state != "en_attente":
                break
            if not await self.store.conversation_busy(conversation, message_id=message_id):
                break  # an earlier message waits for a model: so does this one
            # another process is answering an earlier message: wait for it
            await self.pipeline.wait_reply(message_id, min(1.0, deadline - loop.time()))
        # this conversation's replies, in order: earlier ones (answered here just now, or
        # waiting since an outage) go first, so the terminal shows them too
        while await self.pipeline.deliver_one(conversation=conversation):
            pass
        return await self.pipeline.wait_reply(message_id, 0.0)

    def console_inbound(self, text_: str, address: str, *, local_only: bool = False,
                        event: Any = None) -> Inbound:
        return Inbound(channel="console", sender=address, verified=True, text=text_,
                       external_id=f"console-{uuid4()}", received_at=datetime.now(UTC),
                       local_only=local_only, event=event)

    # ------------------------------------------------------------------ health
    async def health(self) -> dict[str, Any]:
        """The health report (bot/health.py; the rules and the 503 rule: bot/health_rules.py)."""
        return await self.health_service.report()

    async def metrics_text(self, accept: str = "") -> tuple[bytes, str]:
        """/metrics: the Prometheus text of this assistant, with the report's gauges."""
        return self.metrics.render(await self.health(), accept)

    def _runtime(self) -> Runtime:
        jobs = {j.name: j for j in self.jobs}

        def seen(states: dict[str, ChannelState], objects: Mapping[str, Any]
                 ) -> dict[str, Supervised]:
            return {name: Supervised(s.state, s.restarts, s.last_error,
                                     describe(objects.get(name)))
                    for name, s in states.items()}

        # a channel's own task ends when its loop is passive: its state says how it is
        stopped = [t.get_name() for t in self._tasks
                   if t.done() and not t.get_name().startswith(("channel-", "job-"))]
        return Runtime(channels=seen(self.channel_states, self.channels),
                       jobs=seen(self.job_states, jobs), stopped_loops=stopped)


def freeze_heap() -> None:
    """Once Axi is up: collect, then take every object alive (settings, models, pools,
    compiled statements, imported modules…) out of the garbage collector's generations.
    A full collection walks them no more: before, one took 70–220 ms (bench/telegram.py)
    and held the interpreter lock all along, so no thread of Axi ran, not even the
    Telegram poller's that shows the "…". Objects created later are collected as usual."""
    gc.collect()
    gc.freeze()
