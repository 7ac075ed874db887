"""The terminal channel: `axi ask` and `axi chat` type into the inbox as the local
operator (or `--as` a person) and read Axi's replies here. Interactive, it streams the
reply as it is generated; under `axi run` (no terminal) it only logs replies."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from bot.channel import AcceptFn, ChunkFn, Delivery

log = logging.getLogger(__name__)

OPERATOR_ADDRESS = "operateur"


def person_address(relation_id: int) -> str:
    """The console address that speaks as a given person (`axi ask --as NAME`)."""
    return f"personne:{relation_id}"


class ConsoleChannel:
    name = "console"

    def __init__(self, out: TextIO | None = None, *, interactive: bool = True,
                 stream: bool = False):
        self.out = out or sys.stdout
        self.interactive = interactive
        self.stream = stream
        self._streamed: dict[str, list[str]] = {}
        self.delivered: list[Delivery] = []

    async def start(self, accept: AcceptFn) -> None:
        return None

    async def stop(self) -> None:
        return None

    def live(self, conversation: str) -> ChunkFn | None:
        if not (self.interactive and self.stream):
            return None

        def show(chunk: str) -> None:
            self._streamed.setdefault(conversation, []).append(chunk)
            self.out.write(chunk)
            self.out.flush()

        return show

    async def send(self, delivery: Delivery) -> str | None:
        self.delivered.append(delivery)
        if not self.interactive:
            log.info("console reply #%s to %s: %s", delivery.message_id, delivery.address,
                     delivery.text[:200])
            return f"console-{delivery.message_id}"
        if delivery.notice:  # a stream that broke off before this notice is not a reply
            self._streamed.pop(delivery.conversation, None)
        if not delivery.notice and delivery.conversation in self._streamed:
            shown = "".join(self._streamed.pop(delivery.conversation)).strip()
            self.out.write("\n")
            if shown != delivery.text.strip():
                # the tu/vous guard rewrote what was streamed: show what was kept
                self.out.write(f"(reformulé) {delivery.text}\n")
        else:
            self.out.write(delivery.text + "\n")
        self.out.flush()
        return f"console-{delivery.message_id}"
