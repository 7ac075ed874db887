"""Axi's lifecycle: open memory, wire the LLM router, the responder, the pipeline, the
extractor and the channels, run their loops, and stop them cleanly. One explicit
`async with Axi(settings, channels) as axi:` — no work at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import text

from bot.alerts import budget_with_alert
from bot.channel import Channel
from bot.config import Settings
from bot.embedder import QueryVectors, SouvenirEmbedder
from bot.extractor import Extractor
from bot.inbound import Inbound
from bot.llm_wiring import anthropic_config, call_recorder, embed_config, ollama_config
from bot.maintenance import run_maintenance
from bot.pipeline import Pipeline, conversation_key
from bot.responder import Responder
from llm.anthropic_chat import AnthropicChat
from llm.embeddings import OllamaEmbedder
from llm.ollama_chat import OllamaChat
from llm.router import Router
from memory import migrate
from memory.database import Database, open_database
from memory.store import MemoryStore

log = logging.getLogger(__name__)


class Axi:
    def __init__(self, settings: Settings, channels: Mapping[str, Channel] | None = None, *,
                 alerting: bool = False):
        self.settings = settings
        self.alerting = alerting
        """Raise alerts for Ludo (the long-running `axi run` does): a one-shot `axi ask`
        would spend the month's alert on a console nobody watches."""
        self.channels: dict[str, Channel] = dict(channels or {})
        self._stack = AsyncExitStack()
        self.db: Database
        self.store: MemoryStore
        self.router: Router
        self.pipeline: Pipeline
        self.extractor: Extractor
        self.embedder: SouvenirEmbedder | None = None
        self.started_at = datetime.now(UTC)
        self._tasks: list[asyncio.Task[Any]] = []
        self.stop_event = asyncio.Event()

    async def __aenter__(self) -> Axi:
        cfg = self.settings
        url = cfg.database_url.get_secret_value() if cfg.database_url else None
        try:
            # each worker lane reads its context with ~5 concurrent queries: keep that many
            # connections pooled, or every message pays for opening new ones
            pool = 5 * cfg.worker_concurrency + 2
            self.db = await self._stack.enter_async_context(
                open_database(url, cfg.data_dir, pool_size=pool))
            await migrate.require_current(self.db.engine)
            self.store = MemoryStore(self.db)
            local = await self._stack.enter_async_context(OllamaChat(ollama_config(cfg)))
            remote_cfg = anthropic_config(cfg)
            remote = None if remote_cfg is None else await self._stack.enter_async_context(
                AnthropicChat(remote_cfg))
            self.router = Router(
                local, remote, record=call_recorder(self.store),
                budget_ok=budget_with_alert(self.store, cfg.claude_monthly_budget_eur,
                                            timezone=cfg.timezone,
                                            channels=lambda: list(self.channels),
                                            alerting=lambda: self.alerting))
            embed_cfg = embed_config(cfg)
            embedder = None if embed_cfg is None else OllamaEmbedder(embed_cfg)
            vectors = None
            if embedder is not None:
                embedder = await self._stack.enter_async_context(embedder)
                vectors = QueryVectors(self.store, embedder,
                                       min_similarity=cfg.embed_min_similarity)
            responder = Responder(self.store, self.router, num_ctx=cfg.local_num_ctx,
                                  reply_tokens=local.num_predict_for("conversation"),
                                  timezone=cfg.timezone, vectors=vectors)
            responder.use_first_user_system(local.model_for("conversation"))
            self.pipeline = Pipeline(self.store, responder, self.channels,
                                     concurrency=cfg.worker_concurrency)
            self.extractor = Extractor(self.store, self.router)
            pipeline = self.pipeline
            self.embedder = None if embedder is None else SouvenirEmbedder(
                self.store, embedder,
                idle=lambda: pipeline.idle_lanes >= pipeline.concurrency)
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
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.stop()
        if hasattr(self, "pipeline"):
            await self.pipeline.responder.close()
        await self._stack.aclose()

    # ------------------------------------------------------------------ loops
    def start_loops(self, *, worker: bool = True, outbox: bool = True,
                    extractor: bool = True, maintenance: bool = True,
                    embeddings: bool = True) -> None:
        stop = self.stop_event
        if worker:
            self._tasks.append(asyncio.create_task(self.pipeline.run_worker(stop), name="worker"))
        if outbox:
            self._tasks.append(asyncio.create_task(self.pipeline.run_outbox(stop), name="outbox"))
        if extractor:
            self._tasks.append(asyncio.create_task(self.extractor.run(stop), name="extractor"))
        if maintenance:
            self._tasks.append(asyncio.create_task(run_maintenance(self.store, stop),
                                                   name="maintenance"))
        if embeddings and self.embedder is not None:
            self._tasks.append(asyncio.create_task(self.embedder.run(stop), name="embeddings"))

    async def start_channels(self) -> None:
        for channel in self.channels.values():
            await channel.start(self.pipeline.accept)

    # ------------------------------------------------------------------ one message
    def console_inbound(self, text_: str, address: str, *, local_only: bool = False) -> Inbound:
        return Inbound(channel="console", sender=address, verified=True, text=text_,
                       external_id=f"console-{uuid4()}", received_at=datetime.now(UTC),
                       local_only=local_only)

    async def answer_now(self, inbound: Inbound, *, rounds: int = 50) -> int:
        """Accept a message, work the queue until it is handled, deliver its replies.
        Returns the message id. Older pending messages of the same conversation go first."""
        message_id = await self.pipeline.accept(inbound)
        await self.store.make_due(conversation_key(inbound))
        for _ in range(rounds):
            if await self.pipeline.process_one(message_id=message_id):
                break
            if not await self.pipeline.process_one():
                break
        while await self.pipeline.deliver_one(replying_to=message_id):
            pass
        return message_id

    # ------------------------------------------------------------------ health
    async def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"status": "ok", "since": self.started_at.isoformat()}
        try:
            async with self.db.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            report["database"] = "ok"
            report["pending"] = await self.store.pending_counts()
        except Exception as exc:
            report["status"] = "error"
            report["database"] = f"error: {type(exc).__name__}"
        report["llm_local"] = self.router.breaker.state
        report["llm_fallback"] = "configured" if self.router.remote is not None else "none"
        dead = [t.get_name() for t in self._tasks if t.done()]
        if dead:
            report["status"] = "error"
            report["stopped_loops"] = dead
        return report
