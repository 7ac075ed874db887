"""Commands a person may type to Axi (« /statut », « /souvenirs longère »…), whatever the
channel: parsed here (pure), answered by the responder without the model — except
`/claude`, one question sent to the fallback model on purpose. Who may use which command
is decided here too: a command someone may not use gets a polite refusal.
"""

from __future__ import annotations

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


SPECS: dict[str, Spec] = {
    "statut": Spec(INNER_CIRCLE, "État d'Axi : messages en attente, modèles, budget"),
    "souvenirs": Spec(INNER_CIRCLE, "Chercher dans la mémoire d'Axi", needs_args=True),
    "consignes": Spec(INNER_CIRCLE, "Les consignes en vigueur"),
    "oublie": Spec(MANAGERS, "Faire oublier des faits (avec confirmation)", needs_args=True),
    "claude": Spec(frozenset({OWNER_RELATION}), "Poser cette question à Claude",
                   needs_args=True),
}


def parse(text: str) -> Command | None:
    """'/souvenirs@axi_bot longère' → Command('souvenirs', 'longère'); None when the text
    is not one of these commands (then it is an ordinary message)."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    head, _, rest = stripped.partition(" ")
    name = head[1:].split("@", 1)[0].lower()
    if name not in SPECS:
        return None
    return Command(name, rest.strip())


def allowed(command: Command, person: PersonRecord | None) -> bool:
    return (person is not None and not person.bloque
            and (person.relation or "") in SPECS[command.name].who)


def refusal(command: Command, form: str) -> str:
    if form == "tu":
        return f"Désolé, la commande /{command.name} ne t'est pas ouverte."
    return f"Désolé, la commande /{command.name} n'est pas disponible pour vous."


def missing_args(command: Command) -> str:
    example = {"souvenirs": "/souvenirs longère Vergt", "oublie": "/oublie le golf de Ludo",
               "claude": "/claude rédige une annonce pour la longère"}[command.name]
    return f"Il me manque ce qu'il faut chercher ou faire, par exemple : {example}"
