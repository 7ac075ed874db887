"""Axi's Prometheus metrics (issue 13 §2), through the official client library.

Why this shape: one `CollectorRegistry` per `Axi` (never the library's global default
registry), so several assistants in one process (the tests) never clash. Counters are
incremented where things happen, each in one place: LLM calls and tokens by the router's
call recorder (bot/llm_wiring.py: every attempt passes there), messages by the pipeline
(accepted in, sent out), errors where the core sees them (a message that failed, a send
that failed, a channel or job loop that died, an LLM call that failed). Gauges that live
in the database (queue depths, the oldest waiting message) and each component's state
are set from the health report (bot/health.py) at scrape time, so /metrics and /health
never disagree.

Exposed: axi_queue_depth{queue}, axi_oldest_waiting_seconds{queue},
axi_llm_calls_total{provider,task,outcome}, axi_llm_tokens_total{provider,task,kind},
axi_llm_latency_seconds{provider,task} (histogram), axi_messages_total{channel,direction},
axi_errors_total{component}, axi_component_ok{component}, axi_operation_age_seconds{kind,
repository}, and the process' own figures (CPU, memory, file descriptors).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import choose_encoder

from bot import health_rules as rules
from llm.types import CallRecord

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
"""From a cached short answer to a long reply written by a 7B model on the CPU."""


class Counters(Protocol):
    """What the pipeline counts (bot/pipeline.py), without knowing Prometheus."""

    def message(self, channel: str, direction: str) -> None: ...

    def error(self, component: str) -> None: ...


class NoCounters:
    def message(self, channel: str, direction: str) -> None:
        pass

    def error(self, component: str) -> None:
        pass


class AxiMetrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        self.llm_calls = Counter("axi_llm_calls", "LLM calls (attempts) by provider, task "
                                 "and outcome (ok, error)", ["provider", "task", "outcome"],
                                 registry=registry)
        self.llm_tokens = Counter("axi_llm_tokens", "LLM tokens by provider, task and kind "
                                  "(prompt, completion)", ["provider", "task", "kind"],
                                  registry=registry)
        self.llm_latency = Histogram("axi_llm_latency_seconds", "LLM call latency as Axi "
                                     "saw it", ["provider", "task"], buckets=LATENCY_BUCKETS_S,
                                     registry=registry)
        self.messages = Counter("axi_messages", "Messages accepted (in) and sent (out) by "
                                "channel", ["channel", "direction"], registry=registry)
        self.errors = Counter("axi_errors", "Errors by component", ["component"],
                              registry=registry)
        self.queue_depth = Gauge("axi_queue_depth", "Messages waiting per queue (read from "
                                 "the database at scrape time)", ["queue"], registry=registry)
        self.oldest_waiting = Gauge("axi_oldest_waiting_seconds", "Age of the oldest "
                                    "waiting message per queue (0: empty)", ["queue"],
                                    registry=registry)
        self.component_ok = Gauge("axi_component_ok", "1 when the component is ok, 0 when "
                                  "degraded, broken or unknown (disabled ones are absent)",
                                  ["component"], registry=registry)
        self.operation_age = Gauge("axi_operation_age_seconds", "Age of the last good backup "
                                   "or verification per repository", ["kind", "repository"],
                                   registry=registry)

    # ------------------------------------------------------------------ counting
    def llm_call(self, call: CallRecord) -> None:
        """One attempt of the router (the call recorder passes every one here)."""
        provider, task = call.provider, call.task
        self.llm_calls.labels(provider, task, "ok" if call.ok else "error").inc()
        if call.tokens_in:
            self.llm_tokens.labels(provider, task, "prompt").inc(call.tokens_in)
        if call.tokens_out:
            self.llm_tokens.labels(provider, task, "completion").inc(call.tokens_out)
        self.llm_latency.labels(provider, task).observe(max(0, call.latency_ms) / 1000)
        if not call.ok:
            self.error(f"llm_{provider}")

    def message(self, channel: str, direction: str) -> None:
        self.messages.labels(channel, direction).inc()

    def error(self, component: str) -> None:
        self.errors.labels(component).inc()

    # ------------------------------------------------------------------ scrape
    def observe_health(self, report: Mapping[str, Any]) -> None:
        """Set the scrape-time gauges from a health report."""
        components = report.get("components") or {}
        queues = components.get("queues") or {}
        self.queue_depth.clear()
        self.oldest_waiting.clear()
        for name, depth in (queues.get("depths") or {}).items():
            self.queue_depth.labels(name).set(depth)
        for name, age in (queues.get("oldest_waiting_s") or {}).items():
            self.oldest_waiting.labels(name).set(age or 0.0)
        self.component_ok.clear()
        self.operation_age.clear()
        for path, leaf in rules.walk(components):
            if leaf["status"] != rules.DISABLED:
                self.component_ok.labels(path).set(1 if leaf["status"] == rules.OK else 0)
            if path.startswith(("backup.", "verify.")) and leaf.get("age_hours") is not None:
                kind, repository = path.split(".", 1)
                self.operation_age.labels(kind, repository).set(leaf["age_hours"] * 3600)

    def render(self, report: Mapping[str, Any], accept: str = "") -> tuple[bytes, str]:
        """The exposition text (format negotiated from the Accept header) and its type."""
        self.observe_health(report)
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type
