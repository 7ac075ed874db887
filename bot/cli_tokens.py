"""`axi tokens create|list|revoke`: the bearer tokens of the HTTP API (issue 11, item 1).

Why a command of its own: a token is how Ludo's web chat, Axis and the agency's site prove
who they are, and it must be printed exactly once — on stdout alone, so that a script can
capture it (`TOKEN=$(axi tokens create Ludo)`), the explanation on stderr. Only its hash is
stored (memory/tokens.py); `list` never shows either.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Annotated, Any

import typer

from bot.cli_support import err, fail, out, print_json, print_table, run_with_store
from bot.policy import may_administer
from memory.store import MemoryStore
from memory.tokens import SCOPES, NewToken, TokenRecord

tokens_app = typer.Typer(help="Bearer tokens of the HTTP API (web chat, Axis, the site).",
                         no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
_WHOLE_NUMBER = re.compile(r"\s*[+-]?[0-9]+\s*")


def _scope(value: str) -> str:
    scope = value.strip().lower()
    if scope not in SCOPES:
        fail(f"unknown scope {value[:100]!r}; use one of: {', '.join(SCOPES)}")
    return scope


def _when(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value is not None else ""


def _json(t: TokenRecord) -> dict[str, Any]:
    return {"id": t.id, "person_id": t.relation_id, "person": t.personne, "scope": t.portee,
            "name": t.nom, "created_at": t.cree_le.isoformat(),
            "last_used_at": t.utilise_le.isoformat() if t.utilise_le else None,
            "expires_at": t.expire_le.isoformat() if t.expire_le else None,
            "revoked_at": t.revoque_le.isoformat() if t.revoque_le else None,
            "oauth_client": t.client_oauth}


@tokens_app.command("create")
def tokens_create(
    person: Annotated[str, typer.Argument(help="Whose token: a name or an id, as `axi people "
                                               "show` takes it.")],
    scope: Annotated[str, typer.Option(help="chat (web chat and /api), axis (MCP, /briefing, "
                                            "/memory), site, or admin (the details of "
                                            "/health and /metrics; Ludo or an "
                                            "administrateur only).")] = "chat",
    name: Annotated[str | None, typer.Option(help="A label to recognise it, e.g. "
                                                  "'téléphone de Ludo'.")] = None,
) -> None:
    """Create a token and print it once (stdout: the token alone)."""
    chosen = _scope(scope)
    if re.fullmatch(r"\s*[0-9]{19,}\s*", person):  # int() of thousands of digits raises
        fail(f"no person #{person.strip()[:20]}…; see `axi people list`")

    async def work(store: MemoryStore) -> tuple[bool, NewToken]:
        who = await store.get_person(person)
        if chosen == "admin" and not may_administer(who.relation):
            fail(f"an admin token is only for the créateur or an administrateur; "
                 f"{who.personne} is {who.relation or 'without relation'}")
        return who.bloque, await store.create_token(who.id, scope=chosen, name=name)

    blocked, new = run_with_store(work)
    sys.stdout.write(new.secret + "\n")
    sys.stdout.flush()
    t = new.record
    label = f" {t.nom!r}" if t.nom else ""
    err.print(f"Token #{t.id}{label} ({t.portee}) for {t.personne}. Store it now: it will not "
              "be shown again (only its hash is kept).", markup=False, highlight=False)
    if blocked:
        err.print(f"Note: {t.personne} is blocked; the token is refused until they are "
                  "unblocked.", markup=False, highlight=False)


@tokens_app.command("list")
def tokens_list(
    all_: Annotated[bool, typer.Option("--all", help="Also revoked and expired tokens.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """The tokens (never the token itself, nor its hash)."""
    tokens = run_with_store(lambda s: s.list_tokens(include_revoked=all_))
    if json_out:
        print_json([_json(t) for t in tokens])
        return
    print_table("Tokens", ["id", "person", "scope", "name", "created", "last used", "expires",
                           "revoked"],
                [(t.id, t.personne, t.portee + (" (oauth)" if t.client_oauth else ""),
                  t.nom or "", _when(t.cree_le), _when(t.utilise_le), _when(t.expire_le),
                  _when(t.revoque_le)) for t in tokens])


@tokens_app.command("revoke", context_settings={"ignore_unknown_options": True})
def tokens_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id "
                                                                "(see `axi tokens list`).")],
) -> None:
    """Revoke a token: it stops working at once (it stays listed with --all)."""
    if not _WHOLE_NUMBER.fullmatch(token_id):
        fail(f"a token id is a whole number (see `axi tokens list`), not {token_id[:100]!r}")
    wanted = int(token_id)

    async def work(store: MemoryStore) -> tuple[bool, TokenRecord]:
        before = {t.id: t for t in await store.list_tokens(include_revoked=True)}.get(wanted)
        done = await store.revoke_token(wanted)
        return before is not None and before.revoque_le is not None, done

    already, t = run_with_store(work)
    label = f" {t.nom!r}" if t.nom else ""
    if already:
        out.print(f"Token #{t.id}{label} ({t.portee}) of {t.personne} was already revoked on "
                  f"{_when(t.revoque_le)}.", markup=False, highlight=False)
    else:
        out.print(f"Revoked token #{t.id}{label} ({t.portee}) of {t.personne}.", markup=False,
                  highlight=False)
