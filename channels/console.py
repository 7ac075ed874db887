"""The terminal channel: `axi ask` and `axi chat` type into the inbox as the local
operator (or `--as` a person) and read Axi's replies here. Interactive, it streams the
reply as it is generated; under `axi run` (no terminal) it only logs what it is given
(replies to console messages, and notifications nobody else could receive).

Its addresses are its own business: `operateur` is whoever runs `axi`, `personne:<id>`
speaks as a known person; the core learns who that is through `person_of`.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from bot.channel import ChannelServices, ChunkFn, Delivery

log = logging.getLogger(__name__)

OPERATOR_ADDRESS = "operateur"
_PERSON_PREFIX = "personne:"


def person_address(relation_id: int) -> str:
    """The console address that speaks as a given person (`axi ask --as NAME`)."""
    return f"{_PERSON_PREFIX}{relation_id}"


class ConsoleChannel:
    name = "console"
    repeatable_send = True  # a log line (or a line on the terminal) shown again
    fallback_address = OPERATOR_ADDRESS
    """Where a notification goes when its person has no usable channel."""

    def __init__(self, out: TextIO | None = None, *, interactive: bool = True,
                 stream: bool = False):
        self.out = out or sys.stdout
        self.interactive = interactive
        self.stream = stream
        self._streamed: dict[str, list[str]] = {}
        self.delivered: list[Delivery] = []

    def person_of(self, address: str) -> int | None:
        """The person a console address speaks as, or None (the operator)."""
        return self.person_of_address(address)

    @staticmethod
    def person_of_address(address: str) -> int | None:
        digits = address[len(_PERSON_PREFIX):]
        if address.startswith(_PERSON_PREFIX) and digits.isascii() and digits.isdigit():
            return int(digits)
        return None

    async def start(self, services: ChannelServices) -> None:
        return None

    async def run(self) -> None:
        return None  # nothing to receive: `axi ask`/`axi chat` accept directly

    async def stop(self) -> None:
        return None

    def live(self, conversation: str, thread_ref: str | None = None) -> ChunkFn | None:
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
            log.info("console %s #%s to %s: %s", delivery.kind, delivery.message_id,
                     delivery.address, delivery.text[:500])
            return f"console-{delivery.message_id}"
        self.show(delivery)
        return f"console-{delivery.message_id}"

    def show(self, delivery: Delivery) -> None:
        """Print a reply or a notice, once, taking a streamed reply into account."""
        if delivery.kind != "reply":  # a stream that broke off before a notice is no reply
            self._streamed.pop(delivery.conversation, None)
        if delivery.kind == "reply" and delivery.conversation in self._streamed:
            shown = "".join(self._streamed.pop(delivery.conversation)).strip()
            self.out.write("\n")
            if shown != delivery.text.strip():
                # the tu/vous guard rewrote what was streamed: show what was kept
                self.out.write(f"(reformulé) {delivery.text}\n")
        else:
            self.out.write(delivery.text + "\n")
        self.out.flush()
