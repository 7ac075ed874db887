"""Who writes to Axi during the soak (bench/soak.py) and what they write: a deterministic
roster of people (Ludo, the team, clients, strangers, site visitors, Axis) and the plan of
messages, each marked with its token (bench/soak_checks.py). Pure: no I/O.

The roster of 30 (the default) holds Ludo (Telegram, email, the web API, `/local` and
local-only web messages), Anthony, the team (one of them never-cloud), clients on Telegram,
by email and on the web API (two of them never-cloud), unknown Telegram senders, senders
our mail server does not vouch for, site visitors (the chat widget and the contact form,
each from its own IP) and Axis over MCP. Content that must stay on the server carries a
secret the cloud must never see.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bench.soak_checks import Expect

MIN_PEOPLE = 12
FIRST_NAMES = ("Julie", "Claire", "Marc", "Sophie", "Paul", "Nadia", "Hugo", "Léa", "Yves",
               "Inès", "Louis", "Chloé", "Rémi", "Agathe", "Bruno", "Maëlle", "Denis", "Emma",
               "Gilles", "Zoé", "Henri", "Lucie", "Olivier", "Manon", "Pierre", "Anaïs",
               "Victor", "Elsa", "Xavier", "Camille", "Thierry", "Alice")
LAST_NAMES = ("Martin", "Durand", "Petit", "Laurent", "Garcia", "Roux", "Fournier",
              "Morel", "Girard", "Bonnet", "Mercier", "Faure", "Blanc", "Guerin", "Boyer",
              "Chevalier", "Robin", "Masson", "Sanchez", "Muller", "Lefevre", "Gauthier")
PLACES = ("Le Bugue", "Vergt", "Limeuil", "Mauzac", "Sarlat", "Périgueux", "Lalinde",
          "Saint-Cyprien", "Les Eyzies", "Audrix", "Campagne", "Journiac")
KINDS_OF_HOUSE = ("maison", "longère", "grange", "fermette", "maison de bourg", "terrain",
                  "chartreuse", "moulin")

# what each kind of person is: relation, form of address, channels (variant, weight),
# how often they write (weight)
CHANNEL_MIXES: dict[str, tuple[tuple[str, float], ...]] = {
    "ludo": (("telegram", 0.45), ("telegram_local", 0.05), ("email", 0.15), ("web", 0.2),
             ("web_local", 0.15)),
    "admin": (("telegram", 0.7), ("email", 0.3)),
    "team_web": (("telegram", 0.5), ("email", 0.2), ("web", 0.2), ("web_local", 0.1)),
    "team_local": (("telegram", 0.8), ("telegram_local", 0.2)),
    "team_tg": (("telegram", 1.0),),
    "team_mail": (("email", 1.0),),
    "client_tg": (("telegram", 1.0),),
    "client_mail": (("email", 1.0),),
    "client_web": (("web", 0.7), ("telegram", 0.3)),
    "client_local_tg": (("telegram", 1.0),),
    "client_local_mail": (("email", 1.0),),
    "tg_stranger": (("telegram", 1.0),),
    "mail_stranger": (("email", 1.0),),
    "visitor": (("site", 0.88), ("contact", 0.12)),
    "axis": (("axis", 1.0),),
}
WEIGHTS = {"ludo": 6.0, "admin": 2.5, "team_web": 2.5, "team_local": 2.0, "team_tg": 2.0,
           "team_mail": 1.5, "client_tg": 1.2, "client_mail": 1.2, "client_web": 1.2,
           "client_local_tg": 1.5, "client_local_mail": 1.2, "tg_stranger": 0.5,
           "mail_stranger": 0.5, "visitor": 1.4, "axis": 2.5}
RELATIONS = {"ludo": "créateur", "admin": "administrateur", "team_web": "équipe",
             "team_local": "équipe", "team_tg": "équipe", "team_mail": "équipe",
             "client_tg": "client", "client_mail": "client", "client_web": "client",
             "client_local_tg": "client", "client_local_mail": "client"}
FILL = ("client_tg", "client_mail", "visitor", "tg_stranger", "mail_stranger", "client_local_tg",
        "client_web", "team_tg", "visitor", "client_mail", "client_tg", "visitor",
        "client_local_mail", "tg_stranger", "team_mail", "client_tg", "visitor", "client_mail",
        "mail_stranger", "visitor", "client_tg", "tg_stranger", "client_mail", "visitor",
        "client_tg")
"""After the five fixed people (Ludo, Anthony, Julie, Claire, Axis), in this order: the first
seven bring one of each kind of outsider (MIN_PEOPLE), 30 people make the designed mix,
more repeat it."""
MAX_CONTACTS_PER_VISITOR = 3
"""The site allows 5 contact requests an hour per IP: a visitor sends at most this many."""


@dataclass(frozen=True)
class Person:
    key: str
    name: str
    kind: str
    relation: str | None = None
    never_cloud: bool = False
    telegram: int | None = None
    email: str | None = None
    web: bool = False
    ip: str | None = None

    @property
    def vouvoie(self) -> bool:
        return self.relation not in ("créateur", "administrateur", "équipe")

    @property
    def mix(self) -> tuple[tuple[str, float], ...]:
        return CHANNEL_MIXES[self.kind]

    @property
    def weight(self) -> float:
        return WEIGHTS[self.kind]

    @property
    def known(self) -> bool:
        return self.relation is not None


def roster(n: int) -> list[Person]:
    if n < MIN_PEOPLE:
        raise ValueError(f"at least {MIN_PEOPLE} people (one of each kind), not {n}")
    people = [
        Person("ludo", "Ludo", "ludo", "créateur", telegram=1001, email="ludo@icidordogne.fr",
               web=True),
        Person("anthony", "Anthony", "admin", "administrateur", telegram=1002,
               email="anthony@icidordogne.fr"),
        Person("julie", "Julie", "team_web", "équipe", telegram=1003,
               email="julie@icidordogne.fr", web=True),
        Person("claire", "Claire", "team_local", "équipe", never_cloud=True, telegram=1004),
        Person("axis", "Axis", "axis"),
    ]
    counts: dict[str, int] = {}
    names = iter(range(10_000))
    while len(people) < n:
        kind = FILL[(len(people) - 5) % len(FILL)]
        counts[kind] = counts.get(kind, 0) + 1
        i = next(names)
        first, last = FIRST_NAMES[(i + 4) % len(FIRST_NAMES)], LAST_NAMES[i % len(LAST_NAMES)]
        key = f"{kind}{counts[kind]}"
        slug = f"{first.lower()}.{last.lower()}{i}".replace("ë", "e").replace("é", "e") \
            .replace("è", "e").replace("ï", "i").replace("î", "i").replace("ç", "c")
        relation = RELATIONS.get(kind)
        title = f"{first} {last}"
        if kind in ("team_tg", "client_tg", "client_local_tg", "tg_stranger"):
            people.append(Person(key, title, kind, relation, kind == "client_local_tg",
                                 telegram=2000 + i))
        elif kind in ("team_mail", "client_mail", "client_local_mail", "mail_stranger"):
            domain = "icidordogne.fr" if kind == "team_mail" else f"exemple{i % 5}.fr"
            people.append(Person(key, title, kind, relation, kind == "client_local_mail",
                                 email=f"{slug}@{domain}"))
        elif kind == "client_web":
            people.append(Person(key, title, kind, relation, telegram=2000 + i, web=True))
        else:  # visitor
            people.append(Person(key, f"{first} {last}", kind,
                                 ip=f"203.0.113.{10 + counts[kind]}"))
    return people


@dataclass(frozen=True)
class Planned:
    seq: int
    token: str
    person: Person
    variant: str  # telegram, telegram_local, email, web, web_local, site, contact, axis
    text: str
    offset: float  # seconds after the sending phase starts
    secret: str | None = None

    @property
    def channel(self) -> str:
        return self.variant.removesuffix("_local")

    @property
    def local_only(self) -> bool:
        return self.variant.endswith("_local")

    @property
    def expect(self) -> Expect:
        if self.person.kind == "tg_stranger":
            return "stranger"
        if self.person.kind == "mail_stranger":
            return "held"
        if self.variant == "contact":
            return "relay"
        return "reply"

    @property
    def conversation(self) -> str:
        """As the person sees it (one chat, one mailbox, one API client, one page)."""
        p = self.person
        if self.channel == "telegram":
            return f"telegram:{p.telegram}"
        if self.channel == "email":
            return f"email:{p.email}"
        return f"{self.channel}:{p.key}"


def _sentence(rng: random.Random, person: Person) -> str:
    place, house = rng.choice(PLACES), rng.choice(KINDS_OF_HOUSE)
    other = f"{rng.choice(('M.', 'Mme'))} {rng.choice(LAST_NAMES)}"
    options: tuple[str, ...]
    if person.kind == "axis":
        options = (f"Ludo voudrait savoir où en est la {house} de {place}.",
                   f"Peux-tu me résumer ce que tu sais de {other} ?",
                   f"Note pour Ludo : rappeler {other} au sujet de {place}.")
    elif not person.vouvoie:
        options = (f"Tu peux me dire où on en est avec {other} pour la {house} de {place} ?",
                   f"Retiens que {other} cherche une {house} vers {place}.",
                   f"Prépare-moi un mot pour {other} : la visite de {place} est décalée.",
                   f"Qu'est-ce qu'on sait de la {house} de {place} ?",
                   f"Rappelle-moi ce qu'on a dit pour {other}.")
    else:
        options = (f"Bonjour, la {house} de {place} est-elle toujours disponible ?",
                   f"Bonjour, pourriez-vous me rappeler au sujet de la {house} de {place} ?",
                   f"Je cherche une {house} vers {place}, avez-vous quelque chose ?",
                   f"Merci pour la visite de {place}, nous réfléchissons encore.",
                   "Quels documents faut-il pour faire une offre ?")
    return rng.choice(options)


def plan(people: list[Person], messages: int, duration_s: float, rng: random.Random
         ) -> list[Planned]:
    """`messages` messages spread at random over `duration_s` seconds (sorted), each from a
    person picked by their weight, on one of their channels, with a unique token."""
    used: set[str] = set()
    contacts: dict[str, int] = {}
    offsets = sorted(rng.uniform(0.0, duration_s) for _ in range(messages))
    weights = [p.weight for p in people]
    out: list[Planned] = []
    for seq, offset in enumerate(offsets):
        person = rng.choices(people, weights)[0]
        variants, mix = zip(*person.mix, strict=True)
        variant = rng.choices(variants, mix)[0]
        if variant == "contact":
            contacts[person.key] = contacts.get(person.key, 0) + 1
            if contacts[person.key] > MAX_CONTACTS_PER_VISITOR:
                variant = "site"
        token = _unique(rng, used)
        secret = None
        if person.never_cloud or variant.endswith("_local"):
            secret = f"SECRET-{_unique(rng, used)}"
        text = f"{_sentence(rng, person)} (réf. QREF-{token})"
        if secret is not None:
            text += f" Code confidentiel : {secret}."
        if variant == "telegram_local":
            text = f"/local {text}"
        out.append(Planned(seq, token, person, variant, text, offset, secret))
    return out


def _unique(rng: random.Random, used: set[str]) -> str:
    while True:
        value = f"{rng.getrandbits(24):06x}"
        if value not in used:
            used.add(value)
            return value
