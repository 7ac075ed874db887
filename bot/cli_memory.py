"""`axi people|memory|facts|consignes …`: the operator's hands on Axi's memory.
Human output as tables; `--json` for scripts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from bot.cli_support import (
    confirm,
    out,
    print_json,
    print_table,
    read_text_argument,
    run_with_store,
    short,
)
from memory.consignes import Audience
from memory.records import PersonRecord
from memory.store import MemoryStore

people_app = typer.Typer(help="People Axi knows and their verified addresses.", no_args_is_help=True)
memory_app = typer.Typer(help="Souvenirs: add, search, show, forget.", no_args_is_help=True)
facts_app = typer.Typer(help="Facts (subject, predicate, object).", no_args_is_help=True)
consignes_app = typer.Typer(help="Standing instructions, always in context.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _addresses(p: PersonRecord) -> str:
    return ", ".join(f"{i.canal}:{i.adresse}" for i in p.identities)


def _print_person(p: PersonRecord) -> None:
    print_table(
        p.personne,
        ["field", "value"],
        [
            ("id", p.id),
            ("relation", p.relation),
            ("style (comment_interagir)", p.comment_interagir),
            ("addresses", _addresses(p) or "(none)"),
            ("blocked", "yes" if p.bloque else "no"),
            ("never leaves the server", "yes" if p.jamais_hors_serveur else "no"),
            ("since", p.cree_le.strftime("%Y-%m-%d")),
        ],
    )


# ---------------------------------------------------------------------- people
@people_app.command("add")
def people_add(
    name: Annotated[str, typer.Argument(help="The person's name, e.g. Ludo.")],
    relation: Annotated[str, typer.Option(help="créateur, administrateur, équipe, client…")],
    telegram: Annotated[str | None, typer.Option(help="Telegram numeric user id.")] = None,
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    style: Annotated[str | None, typer.Option(help="How to talk to them (comment_interagir).")] = None,
    local_only: Annotated[bool, typer.Option(help="Their messages never leave the server.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add a person, with optional Telegram/email addresses."""
    identities = []
    if telegram:
        identities.append(("telegram", telegram))
    if email:
        identities.append(("email", email))
    person = run_with_store(
        lambda s: s.add_person(name, relation=relation, comment_interagir=style,
                               identities=identities, jamais_hors_serveur=local_only)
    )
    if json_out:
        print_json(person.to_json())
    else:
        out.print(f"Added {person.personne} (#{person.id}, {person.relation}).")


@people_app.command("list")
def people_list(json_out: JsonOpt = False) -> None:
    """List everyone Axi knows."""
    people = run_with_store(lambda s: s.list_people())
    if json_out:
        print_json([p.to_json() for p in people])
        return
    print_table(
        None, ["id", "name", "relation", "addresses", "style"],
        [(p.id, p.personne, p.relation, _addresses(p), short(p.comment_interagir or "", 40))
         for p in people],
    )


@people_app.command("show")
def people_show(name: str, json_out: JsonOpt = False) -> None:
    """Show one person (by name or id) and what Axi believes about them."""

    async def work(s: MemoryStore):  # type: ignore[no-untyped-def]
        person = await s.get_person(name)
        facts = await s.facts_about(person.personne, relation_id=person.id)
        return person, facts

    person, facts = run_with_store(work)
    if json_out:
        print_json({**person.to_json(), "facts": [f.to_json() for f in facts]})
        return
    _print_person(person)
    if facts:
        print_table("facts", ["id", "predicate", "object", "confidence"],
                    [(f.id, f.predicat, f.objet, f"{f.confiance:.2f}") for f in facts])


@people_app.command("link")
def people_link(
    name: str,
    telegram: Annotated[str | None, typer.Option(help="Telegram numeric user id.")] = None,
    email: Annotated[str | None, typer.Option(help="Email address.")] = None,
    channel: Annotated[str | None, typer.Option(help="Another channel (web, api, axis…).")] = None,
    address: Annotated[str | None, typer.Option(help="The address on --channel.")] = None,
) -> None:
    """Link a verified address to a person."""
    pairs = [("telegram", telegram), ("email", email)]
    if channel or address:
        if not (channel and address):
            raise typer.BadParameter("--channel and --address go together")
        pairs.append((channel, address))
    pairs = [(c, a) for c, a in pairs if a]
    if not pairs:
        raise typer.BadParameter("give --telegram, --email or --channel with --address")

    async def work(s: MemoryStore) -> PersonRecord:
        person = await s.get_person(name)
        for c, a in pairs:
            person = await s.link_identity(person.id, c, a)  # type: ignore[arg-type]
        return person

    person = run_with_store(work)
    out.print(f"{person.personne}: {_addresses(person)}")


@people_app.command("remove")
def people_remove(name: str, yes: YesOpt = False) -> None:
    """Remove a person and their addresses (their souvenirs and facts stay)."""
    confirm(f"Remove {name} and their addresses?", yes)
    person = run_with_store(lambda s: s.remove_person(name))
    out.print(f"Removed {person.personne} (#{person.id}).")


# ---------------------------------------------------------------------- memory
@memory_app.command("add")
def memory_add(
    text: Annotated[str, typer.Argument(help="The souvenir; `-` reads standard input.")],
    type: Annotated[str, typer.Option("--type", help="note, conversation, action…")] = "note",
    source: Annotated[str | None, typer.Option(help="Where it comes from.")] = "console",
    importance: Annotated[int, typer.Option(min=0, max=10)] = 5,
    person: Annotated[str | None, typer.Option(help="Who it concerns (name or id).")] = None,
    public: Annotated[bool, typer.Option(help="Clients may see it.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Remember something."""
    content = read_text_argument(text)

    async def work(s: MemoryStore):  # type: ignore[no-untyped-def]
        rid = (await s.get_person(person)).id if person else None
        return await s.remember(content, type=type, source=source, importance=importance,
                                relation_id=rid, public=public)

    souvenir = run_with_store(work)
    if json_out:
        print_json(souvenir.to_json())
    else:
        out.print(f"Remembered #{souvenir.id} ({len(souvenir.contenu):,} characters).")


def _parse_date(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value).astimezone()
    except ValueError:
        raise typer.BadParameter(f"{name} must be a date like 2026-01-31") from None


@memory_app.command("search")
def memory_search(
    query: str,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 10,
    person: Annotated[str | None, typer.Option(help="Only souvenirs about this person.")] = None,
    type: Annotated[list[str] | None, typer.Option("--type")] = None,
    source: Annotated[list[str] | None, typer.Option("--source")] = None,
    since: Annotated[str | None, typer.Option(help="From this date (YYYY-MM-DD).")] = None,
    until: Annotated[str | None, typer.Option(help="Before this date (YYYY-MM-DD).")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Search souvenirs in French (stemming, accents optional)."""
    start, end = _parse_date(since, "--since"), _parse_date(until, "--until")

    async def work(s: MemoryStore):  # type: ignore[no-untyped-def]
        rid = (await s.get_person(person)).id if person else None
        return await s.recall(query, limit=limit, relation_id=rid, types=type or (),
                              sources=source or (), since=start, until=end)

    found = run_with_store(work)
    if json_out:
        print_json([r.to_json() for r in found])
        return
    print_table(
        None, ["id", "date", "type", "source", "score", "souvenir"],
        [(r.souvenir.id, r.souvenir.timestamp.strftime("%Y-%m-%d"), r.souvenir.type,
          r.souvenir.source, f"{r.score:.3f}", short(r.souvenir.contenu, 70)) for r in found],
    )


@memory_app.command("show")
def memory_show(souvenir_id: int, json_out: JsonOpt = False) -> None:
    """Show one souvenir in full."""
    s = run_with_store(lambda st: st.get_souvenir(souvenir_id))
    if json_out:
        print_json(s.to_json())
        return
    out.print(f"[bold]#{s.id}[/] {s.timestamp:%Y-%m-%d %H:%M} {s.type} "
              f"(source {s.source}, importance {s.importance})", highlight=False)
    out.print(s.contenu, markup=False, highlight=False)


@memory_app.command("forget")
def memory_forget(souvenir_id: int, yes: YesOpt = False) -> None:
    """Delete a souvenir for good."""
    confirm(f"Forget souvenir #{souvenir_id} for good?", yes)
    s = run_with_store(lambda st: st.forget_souvenir(souvenir_id))
    out.print(f"Forgot #{s.id}.")


# ----------------------------------------------------------------------- facts
@facts_app.command("list")
def facts_list(
    subject: Annotated[str | None, typer.Option(help="Only facts about this subject.")] = None,
    history: Annotated[bool, typer.Option(help="Include superseded/forgotten facts.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List current facts (or their whole history)."""
    if subject:
        facts = run_with_store(lambda s: s.facts_about(subject, include_history=history,
                                                       include_claims=True))
    else:
        facts = run_with_store(lambda s: s.list_facts(include_history=history))
    if json_out:
        print_json([f.to_json() for f in facts])
        return
    print_table(
        None, ["id", "subject", "predicate", "object", "conf.", "since", "until", "claimed by"],
        [(f.id, f.sujet, f.predicat, short(f.objet, 50), f"{f.confiance:.2f}",
          f.valide_depuis.strftime("%Y-%m-%d"),
          f.valide_jusqu_a.strftime("%Y-%m-%d") if f.valide_jusqu_a else "",
          short(f.selon, 40) if f.selon else "") for f in facts],
    )


@facts_app.command("add")
def facts_add(
    subject: str,
    predicate: str,
    object: str,
    confidence: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    multi: Annotated[bool, typer.Option(help="Keep other objects of this predicate.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Add a fact; a contradicted fact is superseded, never overwritten."""
    change = run_with_store(lambda s: s.add_fact(subject, predicate, object,
                                                 confiance=confidence, multi_valued=multi))
    if json_out:
        print_json(change.to_json())
        return
    out.print(f"Fact #{change.fact.id} {change.outcome}.")
    for old in change.superseded:
        out.print(f"  superseded #{old.id}: {old.sujet} {old.predicat} {old.objet}")


@facts_app.command("forget")
def facts_forget(
    fact_id: int,
    purge: Annotated[bool, typer.Option(help="Delete for good instead of ending it.")] = False,
    yes: YesOpt = False,
) -> None:
    """End a fact's validity (kept in history), or --purge it."""
    if purge:
        confirm(f"Delete fact #{fact_id} for good?", yes)
    f = run_with_store(lambda s: s.forget_fact(fact_id, purge=purge))
    out.print(f"{'Deleted' if purge else 'Ended'} fact #{f.id}.")


# ------------------------------------------------------------------- consignes
@consignes_app.command("list")
def consignes_list(
    all: Annotated[bool, typer.Option("--all", help="Include inactive ones.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """List the standing instructions."""
    items = run_with_store(lambda s: s.list_consignes(active_only=not all))
    if json_out:
        print_json([c.to_json() for c in items])
        return
    print_table(None, ["id", "active", "for", "consigne"],
                [(c.id, "yes" if c.active else "no", _AUDIENCE_NAMES[c.audience], c.texte)
                 for c in items])


_AUDIENCES: dict[str, Audience] = {"inner": "interne", "all": "tous"}
_AUDIENCE_NAMES = {"interne": "inner", "tous": "all"}


@consignes_app.command("add")
def consignes_add(
    text: str,
    for_: Annotated[str, typer.Option(
        "--for", help="Whose prompts hold it: inner (créateur, administrateur, équipe; the "
                      "default) or all (clients and strangers too).")] = "inner",
    json_out: JsonOpt = False,
) -> None:
    """Add a standing instruction (in French, as Axi will read it)."""
    audience = _AUDIENCES.get(for_.strip().lower())
    if audience is None:
        raise typer.BadParameter(f"{for_!r}: use inner or all", param_hint="--for")
    content = read_text_argument(text)
    c = run_with_store(lambda s: s.add_consigne(content, source="console",
                                                audience=audience))
    if json_out:
        print_json(c.to_json())
    else:
        who = "everyone" if audience == "tous" else "the inner circle"
        out.print(f"Consigne #{c.id} added (for {who}).")


@consignes_app.command("remove")
def consignes_remove(consigne_id: int) -> None:
    """Remove a standing instruction."""
    c = run_with_store(lambda s: s.remove_consigne(consigne_id))
    out.print(f"Removed consigne #{c.id}.")

