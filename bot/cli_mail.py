"""`axi mail`: the mail Axi stored but did not answer on its own, and Ludo's way to have
one answered.

A mail our server did not vouch for (no dmarc=pass from our authserv-id), an auto-reply,
a list, a bounce or a sender over its hourly cap is HELD (bot/responder.py): answering it
could mail whoever was impersonated, or feed a loop. `axi mail suspects` lists them with
their reason; `axi mail answer ID` asks Ludo (a confirmation, on his channel) whether Axi
should answer it after all — never a mail's text, and never this command alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from bot.cli_support import fail, out, print_json, print_table, run, run_with_store, settings, short

mail_app = typer.Typer(help="Mail held for Ludo's decision.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@mail_app.command("suspects")
def mail_suspects(json_out: JsonOpt = False,
                  limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100) -> None:
    """Held mail, newest first, with why Axi did not answer it."""
    held = run_with_store(lambda store: store.held_messages("email", limit=limit))
    if json_out:
        print_json([{"id": m.id, "from": m.adresse, "verified": m.verifie,
                     "received_at": m.recu_le.isoformat(), "reason": m.metadata.get("retenu"),
                     "text": m.texte[:300]} for m in held])
        return
    if not held:
        out.print("No held mail.")
        return
    from memory.inbox_admin import age_text

    now = datetime.now(UTC)
    print_table("Held mail", ["id", "from", "age", "reason", "text"],
                [(m.id, m.adresse, age_text(m.recu_le, now),
                  short(str(m.metadata.get("retenu") or ""), 60), short(m.texte, 50))
                 for m in held])


@mail_app.command("answer")
def mail_answer(message_id: Annotated[int, typer.Argument(min=1)]) -> None:
    """Ask Ludo (a confirmation on his channel) whether Axi should answer a held mail."""
    from bot.app import Axi
    from bot.confirmations import RELEASE_CHOICES, RELEASE_HELD

    cfg = settings()

    async def main() -> int:
        async with Axi(cfg) as axi:
            held = {m.id: m for m in await axi.store.held_messages("email", limit=10_000)}
            msg = held.get(message_id)
            if msg is None:
                fail(f"message {message_id} is not a held mail (see `axi mail suspects`)")
            assert msg is not None and axi.confirmations is not None
            why = str(msg.metadata.get("retenu") or "")
            warning = ("" if msg.verifie else " Attention : notre serveur n'a pas authentifié "
                       "l'expéditeur, la réponse partira à cette adresse, qui n'est peut-être "
                       "pas celle de l'auteur.")
            asked = await axi.confirmations.ask(
                RELEASE_HELD, f"Répondre au courriel de {msg.adresse} (#{msg.id}, retenu : "
                f"{why}) ?\n« {short(msg.texte, 300)} »{warning}", {"message_id": msg.id},
                choices=RELEASE_CHOICES)
            return asked.id

    confirmation = run(main())
    out.print(f"Asked Ludo (confirmation #{confirmation}); the mail is answered if he accepts.")
