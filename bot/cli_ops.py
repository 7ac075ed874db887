"""`axi confirm` and `axi inbox`: the operator's hands on what waits.

`axi confirm list` shows the pending confirmations; `axi confirm answer ID CHOICE --as
PERSON` answers one from the terminal, as the person asked, through the inbox like a
Telegram button would (usable before Telegram exists). `axi inbox list` shows pending and
stuck messages; `axi inbox drop ID` gives one up and tells its sender.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from bot.cli_support import fail, out, print_json, print_table, run, run_with_store, settings, short
from bot.tutoiement import form_for
from memory.messages import StoredMessage
from memory.store import MemoryStore

confirm_app = typer.Typer(help="Confirmations waiting for someone's accord.", no_args_is_help=True)
inbox_app = typer.Typer(help="Messages waiting in the inbox.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
@confirm_app.command("list")
def confirm_list(
    all_: Annotated[bool, typer.Option("--all", help="Also the settled ones.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Pending confirmations (with --all: the recent ones, whatever their state)."""
    async def work(store: MemoryStore) -> list:  # type: ignore[type-arg]
        found = await store.list_confirmations(pending_only=not all_)
        people = {p.id: p.personne for p in await store.list_people()}
        return [(c, people.get(c.demande_a, f"#{c.demande_a}")) for c in found]

    rows = run_with_store(work)
    if json_out:
        print_json([{"id": c.id, "action": c.action, "text": c.texte, "choices": c.choix,
                     "asked": who, "state": c.etat, "answer": c.reponse,
                     "expires_at": c.expire_le.isoformat()} for c, who in rows])
        return
    print_table("Confirmations", ["id", "action", "asked", "choices", "state", "expires", "text"],
                [(c.id, c.action, who, "/".join(c.choix), c.etat,
                  f"{c.expire_le:%Y-%m-%d %H:%M}", short(c.texte, 60)) for c, who in rows])


@confirm_app.command("answer")
def confirm_answer(
    confirmation_id: int,
    choice: str,
    as_: Annotated[str, typer.Option("--as", help="The person asked (name or id).")],
) -> None:
    """Answer a confirmation as the person asked, through the inbox (exactly like a
    button pressed on Telegram): the action runs once, after an accepting choice."""
    from bot.app import Axi
    from bot.cli_chat import configure_logging, console_address
    from bot.inbound import ButtonPressed
    from channels.registry import for_terminal
    from memory.confirmations import button_data

    choice = choice.strip().lower()
    if not choice or len(choice) > 100 or ":" in choice:
        fail(f"not a choice: {choice!r}")
    cfg = settings()
    configure_logging(cfg, quiet=True)
    wiring = for_terminal(cfg, sys.stdout)

    async def main() -> int:
        async with Axi(cfg, wiring) as axi:
            before = await axi.store.get_confirmation(confirmation_id)
            if before is None:
                fail(f"no confirmation #{confirmation_id}")
                return 1
            address = await console_address(axi, as_)
            event = ButtonPressed(button_data(confirmation_id, choice))
            await axi.answer_one(axi.console_inbound("", address, event=event))
            after = await axi.store.get_confirmation(confirmation_id)
            # success only when THIS answer settled it (the reason otherwise was printed)
            done = (before.etat == "en_attente" and after is not None
                    and after.etat in ("executee", "refusee") and after.reponse == choice)
            return 0 if done else 1

    raise typer.Exit(run(main()))


@inbox_app.command("list")
def inbox_list(json_out: JsonOpt = False) -> None:
    """Inbound messages not answered yet, oldest first; `stuck` ones need a look."""
    entries = run_with_store(lambda store: store.list_inbox())
    now = datetime.now(UTC)
    if json_out:
        print_json([{"id": e.message.id, "channel": e.message.canal,
                     "address": e.message.adresse, "received_at": e.message.recu_le.isoformat(),
                     "attempts": e.message.tentatives, "error": e.message.erreur,
                     "next_try": e.message.prochain_essai.isoformat()
                     if e.message.prochain_essai else None,
                     "stuck": e.stuck, "text": e.message.texte[:200]} for e in entries])
        return
    from memory.inbox_admin import age_text

    print_table("Inbox", ["id", "channel", "from", "age", "attempts", "stuck", "error", "text"],
                [(e.message.id, e.message.canal, e.message.adresse,
                  age_text(e.message.recu_le, now), e.message.tentatives,
                  "yes" if e.stuck else "", short(e.message.erreur or "", 40),
                  short(e.message.texte, 50)) for e in entries])


@inbox_app.command("drop")
def inbox_drop(message_id: int) -> None:
    """Give up a pending message: it leaves the queue (its conversation moves on) and its
    sender is told, in French, that it was set aside."""
    from bot.notices import dropped_notice


    async def work(store: MemoryStore) -> int:
        msg = await store.get_message(message_id)
        await store.drop_inbound(message_id, dropped_notice(await _form_of(store, msg)))
        return msg.id

    dropped = run_with_store(work)
    out.print(f"Dropped message #{dropped}; its sender will be told.")


async def _form_of(store: MemoryStore, msg: StoredMessage) -> str:
    """tu or vous for the sender of a message, found as the responder finds them."""
    from channels.registry import console_person

    person_id = msg.relation_id
    if person_id is None and msg.canal == "console":
        person_id = console_person(msg.adresse)
        if person_id is None:
            return "tu"  # the local operator
    if person_id is None and msg.verifie:
        found = await store.find_by_identity(msg.canal, msg.adresse)
        person_id = found.id if found is not None else None
    if person_id is None:
        return "vous"
    person = await store.get_person(person_id)
    return form_for(person.relation, person.comment_interagir)
