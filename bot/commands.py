"""Commands a person may type to Axi (« /statut », « /souvenirs longère »…), whatever the
channel: parsed here (pure), answered by the responder without the model — except
`/claude`, one question sent to the fallback model on purpose. Who may use which command
is decided here too: a command someone may not use gets a polite refusal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.policy import INNER_CIRCLE, OWNER_RELATION
from memory.records import PersonRecord

MANAGERS = frozenset({OWNER_RELATION, "administrateur"})


@dataclass(frozen=True)
class Command:
    name: str
    args: str


@dataclass(frozen=True)
class Spec:
    who: frozenset[str]
    description: str
    needs_args: bool = False


EVERYONE = frozenset({OWNER_RELATION, "administrateur", "équipe", "client", "prospect",
                      "partenaire", "axis", "autre"})

SPECS: dict[str, Spec] = {
    "start": Spec(EVERYONE, "Commencer"),
    "aide": Spec(EVERYONE, "Ce que je sais faire"),
    "local": Spec(EVERYONE, "Ce message ne quitte jamais le serveur", needs_args=True),
    "statut": Spec(INNER_CIRCLE, "État d'Axi : messages en attente, modèles, budget"),
    "souvenirs": Spec(INNER_CIRCLE, "Chercher dans la mémoire d'Axi", needs_args=True),
    "consignes": Spec(INNER_CIRCLE, "Les consignes en vigueur"),
    "oublie": Spec(MANAGERS, "Faire oublier des faits (avec confirmation)", needs_args=True),
    "claude": Spec(frozenset({OWNER_RELATION}), "Poser cette question à Claude",
                   needs_args=True),
    "axis": Spec(INNER_CIRCLE, "Transmettre une question à Axis (l'assistant Claude.ai)",
                 needs_args=True),
}


_COMMAND = re.compile(r"/(\S+)\s*(.*)", re.DOTALL)


PRIVATE_ONLY = frozenset({"statut", "souvenirs", "consignes", "oublie"})
"""Commands whose answer shows Axi's memory or state: never in a group, where everyone
would read it."""

ASKED_OF_A_MODEL = frozenset({"claude", "local"})
"""Commands whose argument is a message for a model (Claude on purpose; local only)."""


def split_command(text: str) -> tuple[str, str] | None:
    """'/local@axi_bot\nLe prix' → ('local', 'Le prix'): a command ends at any
    whitespace, a new line included (how it is typed on a phone)."""
    match = _COMMAND.fullmatch(text.strip())
    if match is None:
        return None
    return match.group(1).split("@", 1)[0].lower(), match.group(2).strip()


def parse(text: str) -> Command | None:
    """'/souvenirs@axi_bot longère' → Command('souvenirs', 'longère'); None when the text
    is not one of these commands (then it is an ordinary message)."""
    found = split_command(text)
    if found is None or found[0] not in SPECS:
        return None
    return Command(*found)


def allowed(command: Command, person: PersonRecord | None) -> bool:
    return (person is not None and not person.bloque
            and (person.relation or "") in SPECS[command.name].who)


def refusal(command: Command, form: str) -> str:
    if form == "tu":
        return f"Désolé, la commande /{command.name} ne t'est pas ouverte."
    return f"Désolé, la commande /{command.name} n'est pas disponible pour vous."


def help_text(person: PersonRecord | None) -> str:
    """What Axi can do, for this person (their own commands only)."""
    lines = ["Je suis Axi, l'assistant de l'agence ICI Dordogne. Écrivez-moi simplement : "
             "je me souviens de nos échanges."]
    if person is not None:
        mine = [f"/{name} : {spec.description}" for name, spec in SPECS.items()
                if name not in ("start", "aide", "local")
                and (person.relation or "") in spec.who]
        if mine:
            lines.append("Commandes : " + " ; ".join(mine) + ".")
    lines.append("/local suivi d'un message : ce message reste sur le serveur de l'agence.")
    return "\n".join(lines)


def not_in_a_group(command: Command, form: str) -> str:
    you = "écris-moi" if form == "tu" else "écrivez-moi"
    return (f"La commande /{command.name} ne s'utilise pas dans un groupe (tout le monde y "
            f"lirait la réponse) : {you} en privé.")


def missing_args(command: Command) -> str:
    example = {"souvenirs": "/souvenirs longère Vergt", "oublie": "/oublie le golf de Ludo",
               "local": "/local le prix plancher du vendeur",
               "claude": "/claude rédige une annonce pour la longère",
               "axis": "/axis quel notaire pour la longère de Vergt ?"}[command.name]
    return f"Il me manque ce qu'il faut chercher ou faire, par exemple : {example}"


def menus() -> dict[str, list[tuple[str, str]]]:
    """Per relation, the commands its people may use (for a channel's menu)."""
    relations = sorted({r for spec in SPECS.values() for r in spec.who})
    return {relation: [(name, spec.description) for name, spec in SPECS.items()
                       if relation in spec.who] for relation in relations}
