"""The terminal channel: what the person sees when replies are streamed, then stored."""

from __future__ import annotations

import io

from bot.channel import Delivery
from channels.console import ConsoleChannel


def delivery(text: str, *, notice: bool = False) -> Delivery:
    return Delivery(message_id=7, channel="console", address="operateur",
                    conversation="console:operateur", text=text, in_reply_to=6,
                    thread_ref=None, kind="notice" if notice else "reply")


async def test_streamed_reply_is_not_printed_twice() -> None:
    out = io.StringIO()
    console = ConsoleChannel(out, interactive=True, stream=True)
    show = console.live("console:operateur")
    assert show is not None
    for chunk in ("Salut, ", "tu vas bien ?"):
        show(chunk)
    assert await console.send(delivery("Salut, tu vas bien ?")) == "console-7"
    assert out.getvalue() == "Salut, tu vas bien ?\n"


async def test_a_reply_rewritten_after_streaming_shows_the_kept_text() -> None:
    out = io.StringIO()
    console = ConsoleChannel(out, interactive=True, stream=True)
    show = console.live("console:operateur")
    assert show is not None
    show("Bonjour, vous allez bien ?")
    await console.send(delivery("Bonjour, tu vas bien ?"))
    assert out.getvalue() == ("Bonjour, vous allez bien ?\n"
                              "(reformulé) Bonjour, tu vas bien ?\n")
    # the next streamed reply starts clean
    show("Oui.")
    await console.send(delivery("Oui."))
    assert out.getvalue().endswith("Oui.\n") and out.getvalue().count("(reformulé)") == 1


async def test_a_stream_cut_short_by_a_notice_leaves_no_trace() -> None:
    out = io.StringIO()
    console = ConsoleChannel(out, interactive=True, stream=True)
    show = console.live("console:operateur")
    assert show is not None
    show("Je commen")  # the model died mid-stream
    await console.send(delivery("J'ai bien reçu ton message.", notice=True))
    show("Voici.")
    await console.send(delivery("Voici."))
    assert "(reformulé)" not in out.getvalue() and out.getvalue().endswith("Voici.\n")


async def test_notices_and_non_streamed_replies_are_printed_whole() -> None:
    out = io.StringIO()
    console = ConsoleChannel(out, interactive=True, stream=False)
    assert console.live("console:operateur") is None
    await console.send(delivery("J'ai bien reçu ton message.", notice=True))
    await console.send(delivery("Voici la réponse."))
    assert out.getvalue() == "J'ai bien reçu ton message.\nVoici la réponse.\n"
