"""`axi people forget PERSON|ADDRESS` and `axi people purge-visitors`: erasing personal
data for good (RGPD; issue 11, item 6). The erasing itself is memory/forget.py.

Why the confirmation is typed here: DESIGN wants Ludo's accord before memories are
forgotten at someone's request through a chat; this command is the operator's own action
on the server (the operator is trusted), so the accord is typing `yes` at the terminal
after reading what will go — or `--yes` in a script. Without a terminal and without
`--yes` nothing is erased. The command registers itself on `axi people`.
"""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer

from bot.cli_memory import people_app
from bot.cli_support import err, fail, out, print_json, run_with_store, settings
from memory.forget import Erased, ForgetTarget
from memory.store import MemoryStore

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ANSWERS = frozenset({"yes", "oui"})


def _need_terminal(yes: bool, what: str) -> None:
    if not yes and not sys.stdin.isatty():
        fail(f"{what} erases data for good: not confirmed; pass --yes to confirm without "
             "a terminal", code=2)


def _typed_yes(question: str) -> None:
    """The operator reads what goes and types yes (anything else: nothing happens)."""
    err.print(f"{question} Type yes to continue: ", end="", markup=False, highlight=False)
    answer = sys.stdin.readline()
    if answer.strip().lower() not in ANSWERS:
        fail("cancelled; nothing was erased")


@people_app.command("forget")
def people_forget(
    who: Annotated[str, typer.Argument(
        metavar="PERSON|ADDRESS",
        help="A person (name or id), or an address: email@domain, telegram:ID, visiteur-… "
             "(a site visitor), web:personne-3…")],
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Erase a person's souvenirs, facts, messages, files, addresses, tokens, confirmations
    and contact requests for good (RGPD), and the person; or what an address left."""
    _need_terminal(yes, "forgetting")

    async def work(store: MemoryStore) -> tuple[ForgetTarget, Erased]:
        target = await store.forget_target(who)
        if not yes:
            preview = await store.forget(target, dry_run=True)
            if preview.total:
                _typed_yes(f"This erases {target.describe()} for good: {preview.in_words()}.")
        return target, await store.forget(target)

    target, erased = run_with_store(work)
    if json_out:
        print_json({"target": target.describe(),
                    "person_id": target.person.id if target.person else None,
                    "erased": erased.to_json()})
    elif erased.total:
        out.print(f"Erased {target.describe()}: {erased.in_words()}.", markup=False,
                  highlight=False)
    else:
        out.print(f"Nothing to erase for {target.describe()}: no message, souvenir, fact or "
                  "contact request holds it.", markup=False, highlight=False)


@people_app.command("purge-visitors")
def people_purge_visitors(
    days: Annotated[str | None, typer.Option(
        help="Older than this many days (default AXI_VISITOR_RETENTION_DAYS).")] = None,
    yes: YesOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Erase now what the site's visitors left (chats, contact requests) past the retention;
    `axi run` does it by itself once a day."""
    if days is None:
        keep = settings().visitor_retention_days
    elif re.fullmatch(r"\s*[0-9]{1,5}\s*", days) and 1 <= int(days) <= 36_500:
        keep = int(days)
    else:
        fail(f"--days is a whole number of days from 1 to 36500, not {days[:100]!r}")
    _need_terminal(yes, "purging visitors' data")

    async def work(store: MemoryStore) -> Erased:
        if not yes:
            preview = await store.purge_visitor_data(keep, dry_run=True)
            if preview.total:
                _typed_yes(f"This erases the site visitors' data older than {keep} days for "
                           f"good: {preview.in_words()}.")
        return await store.purge_visitor_data(keep)

    erased = run_with_store(work)
    if json_out:
        print_json({"older_than_days": keep, "erased": erased.to_json()})
    else:
        out.print(f"Visitors' data older than {keep} days: erased {erased.in_words()}.",
                  markup=False, highlight=False)
