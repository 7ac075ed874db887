"""The Axis channel as the outbox sees it: a channel named "axis" whose `send` leaves
the delivery in the Axis mailbox (`services.axis.deliver`).

Why: Axi cannot call Axis (Axis lives in Claude.ai and calls Axi over MCP). So whatever
the outbox has for the Axis person — a `notify("Axis", …)` push or notice, a question, a
reply to a message of Axis's that was not ready within its tool call — is written to the
mailbox, which Axis reads with `lire_messages`. The core decides what may be written
there (never local-only content) and keeps a retried send from posting twice.
"""

from __future__ import annotations

from typing import Any

from bot.channel import ChannelServices, ChunkFn, Delivery, SendError


class AxisChannel:
    name = "axis"
    repeatable_send = True  # the mailbox key makes a second post a no-op

    def __init__(self) -> None:
        self.services: ChannelServices | None = None

    async def start(self, services: ChannelServices) -> None:
        self.services = services

    async def run(self) -> None:
        return None  # passive: Axis comes to Axi over MCP

    async def send(self, delivery: Delivery) -> str | None:
        axis = self.services.axis if self.services is not None else None
        if axis is None:
            raise SendError("the Axis channel is not started")
        try:
            return await axis.deliver(delivery)
        except Exception as exc:  # the database is down: the outbox retries later
            raise SendError(f"Axis mailbox unavailable: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        return None

    def live(self, conversation: str, thread_ref: str | None = None) -> ChunkFn | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"mailbox": "boite_axis"}
