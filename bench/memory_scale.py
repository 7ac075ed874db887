"""Memory at scale: load a million French souvenirs, then time recall against bare SQL.

A benchmark script, not a test. It builds a FRESH database (embedded PostgreSQL 16 in a new
data dir by default, or a new database on a server with --database-url, dropped at the end),
migrates it, loads N souvenirs of generated but realistic French text through
`MemoryStore.remember_many()` and M faits through COPY (add_fact one by one would take hours),
runs ANALYZE, then times `MemoryStore.recall()` on a varied query set next to the same
full-text search as bare SQL (`memory.recall_query.bare_fts_sql`, same tsquery text, same
AND-then-OR rule, same engine): the floor. It prints the numbers with the targets and writes
them as JSON to bench/results/memory_scale-<timestamp>.json.

The text: a curated vocabulary of real estate / daily life / business words
(bench/data/vocabulaire_fr.txt) forms the frequent head and Debian's `wfrench` list
(/usr/share/dict/french, `apt-get install wfrench`) the long tail, both drawn with Zipf-like
frequencies inside real sentence shapes (articles, verbs, Dordogne place names, prices,
surfaces, dates, DPE classes, DVF sales, e-mails, chat turns). Deterministic with --seed.

    .venv/bin/python bench/memory_scale.py                      # 1,000,000 / 100,000 / 200
    .venv/bin/python bench/memory_scale.py --souvenirs 20000 --faits 2000 --queries 60
    .venv/bin/python bench/memory_scale.py --database-url postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_BENCH_DIR = Path(__file__).resolve().parent
# Run as a script, bench/ would be first on sys.path and bench/email.py, bench/telegram.py
# would shadow the stdlib and python-telegram-bot: only the project root is kept.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH_DIR]
if str(_BENCH_DIR.parent) not in sys.path:
    sys.path.insert(0, str(_BENCH_DIR.parent))

from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from memory import migrate  # noqa: E402
from memory.database import Database, async_url, open_database  # noqa: E402
from memory.recall_query import CANDIDATE_CAP, RecallFilter, bare_fts_sql, recall_sql  # noqa: E402
from memory.store import MemoryStore, NewSouvenir  # noqa: E402
from memory.text import fold, tsquery_text  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
VOCABULARY_FILE = BENCH_DIR / "data" / "vocabulaire_fr.txt"
WFRENCH_FILE = Path("/usr/share/dict/french")
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_DATA_ROOT = Path("/root/axi-bench")

TARGET_P95_MS = 30.0
TARGET_RATIO = 1.5
TARGET_INSERT_PER_S = 2000.0
RECALL_LIMIT = 10
YEARS = 5

console = Console(highlight=False, width=None if shutil.get_terminal_size().columns > 80 else 150)


# ----------------------------------------------------------------------------- vocabulary
class Zipf:
    """Draw items with probability ∝ 1 / (rank + q) ** s (rank 1 = first item)."""

    def __init__(self, items: Sequence[Any], s: float = 1.0, q: float = 2.7):
        if not items:
            raise ValueError("empty vocabulary")
        self.items = list(items)
        total = 0.0
        self.cum: list[float] = []
        for rank in range(1, len(self.items) + 1):
            total += 1.0 / (rank + q) ** s
            self.cum.append(total)
        self.total = total

    def draw(self, rng: random.Random) -> Any:
        return self.items[bisect.bisect_left(self.cum, rng.random() * self.total)]

    def rank_slice(self, start: int, stop: int) -> list[Any]:
        return self.items[start:stop]


@dataclass
class Vocabulary:
    nouns: list[tuple[str, str]]  # (word, "m" | "f")
    verbs: list[str]
    participles: list[str]
    adjectives: list[tuple[str, str]]
    places: list[tuple[str, str]]  # (commune, code postal)
    first_names: list[str]
    last_names: list[str]
    streets: list[str]
    tail: list[str]  # wfrench words not in the curated lists, Zipf order after shuffling
    sections: dict[str, list[str]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len({w for ws in self.sections.values() for w in ws}) + len(self.tail)


def load_vocabulary(seed: int) -> Vocabulary:
    sections: dict[str, list[str]] = {}
    current = ""
    for raw in VOCABULARY_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("## "):
            current = line[3:].strip()
            sections.setdefault(current, [])
        elif line and not line.startswith("#") and current:
            if current in {"adjectif", "lieu"}:
                sections[current].append(line)
            else:
                for word in line.split("|"):
                    if word.strip() and word.strip() not in sections[current]:
                        sections[current].append(word.strip())
    # interleave genders so that both appear in the frequent head
    nouns_m = [(w, "m") for w in sections["nom_m"]]
    nouns_f = [(w, "f") for w in sections["nom_f"]]
    nouns = [n for pair in zip(nouns_m, nouns_f, strict=False) for n in pair]
    nouns += nouns_m[len(nouns_f):] + nouns_f[len(nouns_m):]
    verbs = sections["verbe"]
    participles = sections["participe"]
    adjectives = [tuple(a.split("|")) for a in sections["adjectif"]]
    places = [tuple(p.split("|")) for p in sections["lieu"]]
    curated = {w.lower() for ws in sections.values() for w in ws}
    tail: list[str] = []
    if WFRENCH_FILE.exists():
        for word in WFRENCH_FILE.read_text(encoding="utf-8", errors="replace").splitlines():
            word = word.strip()
            if len(word) >= 3 and word.isalpha() and word.islower() and word not in curated:
                tail.append(word)
        random.Random(seed).shuffle(tail)
    else:
        console.print(
            f"[yellow]{WFRENCH_FILE} not found (apt-get install wfrench): the long tail "
            "of the vocabulary is missing, text will be less varied[/]"
        )
    return Vocabulary(
        nouns=nouns, verbs=verbs, participles=participles,
        adjectives=[(a[0], a[1]) for a in adjectives],
        places=[(p[0], p[1]) for p in places],
        first_names=sections["prenom"], last_names=sections["nom_famille"],
        streets=sections["rue"], tail=tail, sections=sections,
    )


# ------------------------------------------------------------------------ text generator
MONTHS = ["janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
          "septembre", "octobre", "novembre", "décembre"]
DAYS = ["lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche"]
PROPERTY_KINDS = ["maison", "grange", "longère", "fermette", "maison de bourg", "chartreuse",
                  "maison périgourdine", "appartement", "terrain à bâtir", "gîte", "moulin",
                  "bastide", "pavillon", "propriété viticole", "local commercial"]
DPE_CLASSES = "ABCDEFG"

SOURCES: list[tuple[str, float, list[tuple[str, float]]]] = [
    # source, weight, [(type, weight)]
    ("telegram", 28, [("conversation", 80), ("note", 10), ("action", 10)]),
    ("email", 18, [("conversation", 50), ("email", 40), ("action", 10)]),
    ("veille_dpe", 12, [("observation", 90), ("veille", 10)]),
    ("veille_dvf", 12, [("observation", 90), ("veille", 10)]),
    ("web", 9, [("observation", 60), ("note", 40)]),
    ("console", 5, [("note", 50), ("action", 30), ("consigne", 20)]),
    ("sms", 4, [("conversation", 100)]),
    ("telephone", 4, [("note", 70), ("rendez_vous", 30)]),
    ("agenda", 3, [("rendez_vous", 100)]),
    ("leboncoin", 2, [("observation", 100)]),
    ("notaire", 1.5, [("email", 60), ("action", 40)]),
    ("interne", 1.5, [("resume", 60), ("reflexion", 40)]),
]
IMPORTANCE_WEIGHTS = [2, 5, 10, 14, 20, 18, 12, 9, 6, 4]  # importance 1..10


class FrenchText:
    """Deterministic generator of souvenir contents and queries."""

    def __init__(self, vocab: Vocabulary, rng: random.Random):
        self.v = vocab
        self.rng = rng
        self.nouns = Zipf(vocab.nouns, s=1.05)
        self.verbs = Zipf(vocab.verbs, s=1.0)
        self.participles = Zipf(vocab.participles, s=1.0)
        self.adjectives = Zipf(vocab.adjectives, s=1.0)
        self.places = Zipf(vocab.places, s=0.9, q=1.0)
        self.first = Zipf(vocab.first_names, s=0.8)
        self.last = Zipf(vocab.last_names, s=0.7)
        self.tail = Zipf(vocab.tail, s=1.0, q=10.0) if vocab.tail else None
        self.sources = [s for s, _, _ in SOURCES]
        self.source_weights = [w for _, w, _ in SOURCES]
        self.types = {s: ([t for t, _ in ts], [w for _, w in ts]) for s, _, ts in SOURCES}
        self.generators: dict[str, Callable[[], str]] = {
            "telegram": self.chat, "sms": self.chat, "email": self.email,
            "notaire": self.email, "veille_dpe": self.dpe, "veille_dvf": self.dvf,
            "web": self.listing, "leboncoin": self.listing, "console": self.console_note,
            "telephone": self.phone_note, "agenda": self.appointment, "interne": self.summary,
        }

    # -- small pieces
    def pick(self, items: Sequence[Any]) -> Any:
        return items[int(self.rng.random() * len(items))]

    def noun(self) -> tuple[str, str]:
        if self.tail is not None and self.rng.random() < 0.12:
            return self.tail.draw(self.rng), self.pick("mf")
        return self.nouns.draw(self.rng)

    def adjective(self, gender: str) -> str:
        if self.tail is not None and self.rng.random() < 0.06:
            return str(self.tail.draw(self.rng))
        masc, fem = self.adjectives.draw(self.rng)
        return fem if gender == "f" else masc

    def article(self, word: str, gender: str, definite: bool) -> str:
        if definite:
            if word[0].lower() in "aeiouyhéèêàâîôû":
                return "l'"
            return "la " if gender == "f" else "le "
        return "une " if gender == "f" else "un "

    def nominal(self, definite: bool | None = None) -> str:
        word, gender = self.noun()
        if definite is None:
            definite = self.rng.random() < 0.6
        out = self.article(word, gender, definite) + word
        r = self.rng.random()
        if r < 0.35:
            out += " " + self.adjective(gender)
        elif r < 0.5:
            other, _ = self.noun()
            out += " de " + ("l'" if other[0] in "aeiouyhé" else "") + other
        return out

    def person(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return str(self.first.draw(self.rng))
        if r < 0.55:
            return f"{self.pick(['M.', 'Mme', 'Monsieur', 'Madame'])} {self.last.draw(self.rng)}"
        if r < 0.75:
            return f"{self.first.draw(self.rng)} {self.last.draw(self.rng)}"
        return self.pick(["le client", "la cliente", "le vendeur", "la propriétaire",
                          "l'acquéreur", "le notaire", "l'agence", "Ludo", "Anthony", "on",
                          "il", "elle", "le couple", "les vendeurs", "la mairie"])

    def place(self) -> str:
        name, _ = self.places.draw(self.rng)
        return str(name)

    def price(self, low: int = 45_000, high: int = 650_000) -> str:
        value = int(math.exp(self.rng.uniform(math.log(low), math.log(high))) / 500) * 500
        return f"{value:,}".replace(",", " ") + " €"

    def surface(self, low: int = 35, high: int = 320) -> str:
        return f"{self.rng.randint(low, high)} m²"

    def date(self) -> str:
        style = self.rng.random()
        day, month, year = self.rng.randint(1, 28), self.rng.randint(1, 12), \
            self.rng.randint(2019, 2025)
        if style < 0.4:
            return f"{day:02d}/{month:02d}/{year}"
        if style < 0.8:
            return f"{self.pick(DAYS)} {day} {MONTHS[month - 1]}"
        return f"le {day} {MONTHS[month - 1]} {year}"

    def hour(self) -> str:
        return f"{self.rng.randint(8, 19)}h{self.pick(['', '00', '15', '30', '45'])}"

    # -- sentences
    def sentence(self) -> str:
        r = self.rng.random()
        if r < 0.30:
            s = f"{self.person()} {self.verbs.draw(self.rng)} {self.nominal()}"
        elif r < 0.45:
            s = f"{self.nominal(True).capitalize()} {self.verbs.draw(self.rng)} {self.nominal()}"
        elif r < 0.55:
            s = f"{self.person()} a {self.participles.draw(self.rng)} {self.nominal()}"
        elif r < 0.65:
            s = f"{self.pick(PROPERTY_KINDS).capitalize()} de {self.surface()} à {self.place()}"
            s += f", {self.price()}"
        elif r < 0.72:
            s = f"Il faut {self.pick(['voir', 'rappeler', 'envoyer', 'vérifier', 'relancer'])} "
            s += f"{self.nominal()} avant {self.pick(DAYS)}"
        elif r < 0.80:
            s = f"{self.person()} {self.pick(['cherche', 'veut', 'souhaite'])} "
            s += f"{self.pick(PROPERTY_KINDS)} vers {self.place()} pour {self.price()} maximum"
        elif r < 0.87:
            s = f"{self.nominal(True).capitalize()} est {self.adjective('m')}"
        elif r < 0.93:
            s = f"Rendez-vous {self.date()} à {self.hour()} à {self.place()} avec {self.person()}"
        else:
            s = f"{self.person()} {self.verbs.draw(self.rng)} que {self.nominal()} "
            s += f"{self.verbs.draw(self.rng)} {self.nominal()}"
        s = s[0].upper() + s[1:]
        if self.rng.random() < 0.25:
            s += f" à {self.place()}"
        return s + self.pick([".", ".", ".", ".", " !", " ?", "..."])

    def sentences(self, n: int) -> str:
        return " ".join(self.sentence() for _ in range(n))

    def length(self) -> int:
        """Number of sentences: mostly short, a long tail up to a few paragraphs."""
        r = self.rng.random()
        if r < 0.30:
            return 0  # a few words only
        if r < 0.80:
            return self.rng.randint(1, 3)
        if r < 0.96:
            return self.rng.randint(4, 10)
        return self.rng.randint(12, 35)

    def body(self) -> str:
        n = self.length()
        if n == 0:
            words = [self.nominal()]
            if self.rng.random() < 0.5:
                words.append(self.pick(["à", "pour", "vers", "avec"]) + " " + self.place())
            return " ".join(words)
        if n < 8:
            return self.sentences(n)
        paragraphs = []
        while n > 0:
            k = min(n, self.rng.randint(3, 7))
            paragraphs.append(self.sentences(k))
            n -= k
        return "\n\n".join(paragraphs)

    # -- per-source shapes
    def chat(self) -> str:
        turns = 1 if self.rng.random() < 0.6 else self.rng.randint(2, 6)
        lines = []
        for _ in range(turns):
            who = self.pick(["Ludo", "Anthony", self.first.draw(self.rng), "Axi"])
            msg = self.body() if self.rng.random() < 0.5 else self.sentences(1)
            if self.rng.random() < 0.2:
                msg = fold(msg)  # typed without accents
            lines.append(f"{who} : {msg}" if turns > 1 else msg)
        return "\n".join(lines)

    def email(self) -> str:
        subject = self.pick([f"Visite {self.place()}", f"Offre sur la {self.pick(PROPERTY_KINDS)}",
                             "Documents compromis", f"Mandat {self.rng.randint(100, 9999)}",
                             f"Re: {self.nominal()}", "Estimation", "Diagnostics",
                             f"Rendez-vous {self.pick(DAYS)}"])
        sign = f"{self.first.draw(self.rng)} {self.last.draw(self.rng)}"
        body = self.body() if self.rng.random() < 0.5 else self.sentences(self.rng.randint(2, 6))
        return (f"Objet : {subject}\n\n{self.pick(['Bonjour', 'Bonsoir', 'Cher Monsieur'])} "
                f"{self.first.draw(self.rng)},\n\n{body}\n\n"
                f"{self.pick(['Cordialement', 'Bien à vous', 'Bonne journée'])},\n{sign}")

    def dpe(self) -> str:
        cls = self.pick(DPE_CLASSES)
        kwh = {"A": 60, "B": 100, "C": 160, "D": 230, "E": 300, "F": 390, "G": 480}[cls]
        kind = self.pick(["maison", "appartement", "maison individuelle", "logement"])
        place = self.places.draw(self.rng)
        out = (f"Nouveau DPE {self.rng.randint(2300000000000, 2499999999999)} : {kind} de "
               f"{self.surface(25, 260)} à {place[0]} ({place[1]}), classe {cls} "
               f"({kwh + self.rng.randint(-20, 40)} kWh/m²/an), GES {self.pick(DPE_CLASSES)}, "
               f"établi le {self.rng.randint(1, 28):02d}/{self.rng.randint(1, 12):02d}/"
               f"{self.rng.randint(2021, 2025)}.")
        if self.rng.random() < 0.4:
            out += f" Adresse : {self.rng.randint(1, 60)} {self.pick(self.v.streets)}."
        if self.rng.random() < 0.3:
            out += " " + self.sentences(1)
        return out

    def dvf(self) -> str:
        place = self.places.draw(self.rng)
        kind = self.pick(["Maison", "Appartement", "Terrain", "Dépendance", "Local"])
        rooms = self.rng.randint(1, 8)
        out = (f"Vente DVF du {self.rng.randint(1, 28):02d}/{self.rng.randint(1, 12):02d}/"
               f"{self.rng.randint(2019, 2025)} à {place[0]} ({place[1]}) : {kind.lower()}, "
               f"{rooms} pièce{'s' if rooms > 1 else ''}, {self.surface()}, terrain "
               f"{self.rng.randint(100, 25000)} m², prix {self.price()}, section "
               f"{self.pick(string.ascii_uppercase)}{self.pick(string.ascii_uppercase)} "
               f"n°{self.rng.randint(1, 1500)}.")
        if self.rng.random() < 0.25:
            out += " " + self.sentences(self.rng.randint(1, 2))
        return out

    def listing(self) -> str:
        kind = self.pick(PROPERTY_KINDS)
        rooms = self.rng.randint(2, 9)
        out = (f"Annonce {self.pick(['réf.', 'référence', 'n°'])} {self.rng.randint(1000, 99999)}"
               f" — {kind} {rooms} pièces à {self.place()}, {self.surface()} habitables, "
               f"terrain de {self.rng.randint(200, 30000)} m². {self.body()} "
               f"Prix : {self.price()} {self.pick(['FAI', 'honoraires inclus', 'net vendeur'])}.")
        return out

    def console_note(self) -> str:
        return self.pick(["Note : ", "À retenir : ", "Consigne : ", "", "TODO "]) + self.body()

    def phone_note(self) -> str:
        return (f"Appel de {self.person()} ({self.pick(['06', '07', '05'])} "
                f"{self.rng.randint(10, 99)} {self.rng.randint(10, 99)} "
                f"{self.rng.randint(10, 99)} {self.rng.randint(10, 99)}) : {self.body()}")

    def appointment(self) -> str:
        out = (f"Rendez-vous {self.date()} à {self.hour()} : {self.pick(['visite', 'signature', 'estimation', 'état des lieux', 'compromis'])}"  # noqa: E501
               f" {self.pick(PROPERTY_KINDS)} à {self.place()} avec {self.person()}.")
        if self.rng.random() < 0.5:
            out += " " + self.sentences(self.rng.randint(1, 3))
        return out

    def summary(self) -> str:
        return f"Résumé de la {self.pick(['journée', 'semaine', 'conversation'])} : " \
            + self.sentences(self.rng.randint(3, 12))

    # -- whole souvenirs
    def souvenir(self, when: datetime, relation_ids: Sequence[int]) -> NewSouvenir:
        source = self.rng.choices(self.sources, self.source_weights)[0]
        kinds, weights = self.types[source]
        kind = self.rng.choices(kinds, weights)[0]
        contenu = self.generators[source]()
        importance = self.rng.choices(range(1, 11), IMPORTANCE_WEIGHTS)[0]
        relation_id = None
        if relation_ids and source in {"telegram", "email", "sms", "telephone", "agenda",
                                       "notaire"} and self.rng.random() < 0.6:
            relation_id = relation_ids[int(self.rng.random() ** 2 * len(relation_ids))]
        meta: dict[str, Any] = {}
        if source in {"veille_dpe", "veille_dvf", "leboncoin", "web"}:
            meta = {"veille": source, "lot": self.rng.randint(1, 5000)}
        elif source in {"telegram", "sms", "email"} and self.rng.random() < 0.5:
            meta = {"message_id": self.rng.randint(1, 10**9)}
        return NewSouvenir(
            contenu=contenu, type=kind, source=source, importance=importance, timestamp=when,
            relation_id=relation_id, public=self.rng.random() < 0.15, metadata=meta,
        )


# ------------------------------------------------------------------------------- queries
@dataclass(frozen=True)
class Query:
    text: str
    category: str


HANDMADE_QUERIES = [
    "DPE classe G", "vente DVF Bergerac", "rendez-vous notaire", "maison avec grange",
    "terrain constructible Vergt", "offre acceptée", "compromis signé", "piscine chauffée",
    "longère à rénover", "prix maison Le Bugue", "diagnostic amiante", "estimation Sarlat",
    "appel Mme Lacoste", "relance acheteur", "grange aménagée Périgueux", "fosse septique",
    "mandat exclusif", "chauffage au bois", "taxe foncière", "vue dégagée",
]
NO_MATCH_QUERIES = [
    "xylophoniste zanzibar", "qwrtzp", "blorptak frimule", "kryptonite quasar",
    "zzyzx", "flurbo maison", "wkpqj grange", "hyperboloïde sismographe",
]
ACCENT_PAIRS = [
    ("Périgueux", "perigueux"), ("propriété", "propriete"), ("énergétique", "energetique"),
    ("été", "ete"), ("Sarlat-la-Canéda", "sarlat la caneda"), ("réservé", "reserve"),
    ("Brantôme", "brantome"), ("Château-l'Évêque", "chateau l'eveque"), ("sœur", "soeur"),
    ("dépendance", "dependance"), ("négociation", "negociation"), ("Ribérac", "riberac"),
]


def build_queries(gen: FrenchText, n: int, rng: random.Random) -> list[Query]:
    """A varied, deterministic query set of about n queries (1–4 words each)."""
    v = gen.v
    head_nouns = [w for w, _ in v.nouns[:60]]
    mid_nouns = [w for w, _ in v.nouns[60:]]
    tail = v.tail
    plan = {  # category -> share
        "common_1": 0.13, "common_multi": 0.17, "handmade": 0.10, "place": 0.14,
        "accent": 0.10, "rare": 0.12, "mixed": 0.10, "person": 0.06, "no_match": 0.08,
    }
    out: list[Query] = []
    seen: set[str] = set()
    for category, share in plan.items():
        target, made = max(1, round(n * share)), 0
        for i in range(target * 50):
            if made >= target:
                break
            if category == "common_1":
                q = rng.choice(head_nouns if i % 2 == 0 else mid_nouns)
            elif category == "common_multi":
                k = rng.randint(2, 4)
                q = " ".join(rng.choice(head_nouns + mid_nouns) for _ in range(k))
            elif category == "handmade":
                q = HANDMADE_QUERIES[i % len(HANDMADE_QUERIES)]
            elif category == "place":
                name = rng.choice(v.places[:40] if i % 3 else v.places)[0]
                if i % 4 == 1:
                    name = fold(name)
                if i % 3 == 2:
                    name = f"{rng.choice(PROPERTY_KINDS).split()[0]} {name}"
                q = name
            elif category == "accent":
                pair = ACCENT_PAIRS[(i // 2) % len(ACCENT_PAIRS)]
                q = pair[i % 2]
            elif category == "rare":
                if tail:
                    lo = len(tail) // 10
                    q = " ".join(rng.choice(tail[lo:]) for _ in range(1 + (i % 4 == 3)))
                else:
                    q = rng.choice(mid_nouns)
            elif category == "mixed":
                rare_word = rng.choice(tail[100:5000]) if tail else rng.choice(mid_nouns)
                q = f"{rng.choice(head_nouns)} {rare_word}"
                if i % 3 == 0:
                    q += f" {rng.choice(v.places)[0]}"
            elif category == "person":
                q = rng.choice([f"{rng.choice(v.last_names)}",
                                f"{rng.choice(v.first_names)} {rng.choice(v.last_names)}",
                                f"Mme {rng.choice(v.last_names)}"])
            elif i < len(NO_MATCH_QUERIES):
                q = NO_MATCH_QUERIES[i]
            else:  # an invented word, alone or next to a common one
                invented = "".join(rng.choice("bcdfgjklmnpqrstvwxz" if j % 2 else "aeiouy")
                                   for j in range(rng.randint(6, 9)))
                q = invented if i % 2 else f"{invented} {rng.choice(head_nouns)}"
            if q.lower() in seen:
                continue
            seen.add(q.lower())
            out.append(Query(q, category))
            made += 1
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------------- stats
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank-interpolated percentile (same as numpy's default 'linear')."""
    if not values:
        return float("nan")
    xs = sorted(values)
    k = (len(xs) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50), "p95": percentile(values, 95),
        "p99": percentile(values, 99), "mean": statistics.fmean(values) if values else 0.0,
        "max": max(values) if values else 0.0, "min": min(values) if values else 0.0,
    }


def match_bucket(n: int) -> str:
    for limit, label in [(0, "0"), (10, "1–10"), (100, "11–100"), (1_000, "101–1k"),
                         (10_000, "1k–10k"), (100_000, "10k–100k")]:
        if n <= limit:
            return label
    return ">100k"


BUCKETS = ["0", "1–10", "11–100", "101–1k", "1k–10k", "10k–100k", ">100k"]


# ------------------------------------------------------------------------------ database
async def create_fresh_database(server_url: str, name: str) -> str:
    admin = create_async_engine(async_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await admin.dispose()
    url = async_url(server_url).set(database=name)
    return url.render_as_string(hide_password=False).replace("+asyncpg", "")


async def drop_database(server_url: str, name: str) -> None:
    admin = create_async_engine(async_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()


async def scalar(db: Database, sql: str, params: dict[str, Any] | None = None) -> Any:
    async with db.engine.connect() as conn:
        return await conn.scalar(text(sql), params or {})


async def create_relations(db: Database, gen: FrenchText, n: int) -> list[int]:
    names: dict[str, None] = {}
    while len(names) < n:
        names.setdefault(f"{gen.first.draw(gen.rng)} {gen.last.draw(gen.rng)}"
                         f"{'' if gen.rng.random() < 0.7 else ' ' + str(len(names))}", None)
    kinds = ["client", "acheteur", "vendeur", "notaire", "artisan", "collègue", "ami"]
    async with db.engine.begin() as conn:
        rows = await conn.execute(
            text("INSERT INTO relations (personne, relation) "
                 "SELECT * FROM unnest(CAST(:p AS text[]), CAST(:r AS text[])) RETURNING id"),
            {"p": list(names), "r": [gen.pick(kinds) for _ in names]},
        )
        return [r.id for r in rows]


PREDICATES = [
    ("habite_a", "place"), ("cherche", "kind"), ("budget", "price"), ("telephone", "phone"),
    ("surface_souhaitee", "surface"), ("prix_demande", "price"), ("classe_dpe", "dpe"),
    ("a_visite", "kind_place"), ("prefere", "noun"), ("notaire", "person"),
    ("disponible_le", "date"), ("travaille_avec", "person"), ("proprietaire_de", "kind_place"),
    ("email", "email"), ("aime", "noun"), ("situation", "noun"),
]


def fact_record(gen: FrenchText, when: datetime, max_souvenir: int,
                relation_ids: Sequence[int]) -> tuple[Any, ...]:
    rng = gen.rng
    r = rng.random()
    if r < 0.6:
        sujet = f"{gen.first.draw(rng)} {gen.last.draw(rng)}"
    elif r < 0.85:
        sujet = f"{rng.choice(PROPERTY_KINDS)} de {gen.place()}"
    else:
        sujet = gen.place()
    predicat, kind = PREDICATES[int(rng.random() ** 1.5 * len(PREDICATES))]
    objet = {
        "place": gen.place, "kind": lambda: rng.choice(PROPERTY_KINDS), "price": gen.price,
        "phone": lambda: f"06 {rng.randint(10, 99)} {rng.randint(10, 99)} "
                         f"{rng.randint(10, 99)} {rng.randint(10, 99)}",
        "surface": gen.surface, "dpe": lambda: rng.choice(DPE_CLASSES),
        "kind_place": lambda: f"{rng.choice(PROPERTY_KINDS)} à {gen.place()}",
        "noun": gen.nominal, "person": lambda: f"{gen.first.draw(rng)} {gen.last.draw(rng)}",
        "date": gen.date,
        "email": lambda: f"{fold(str(gen.first.draw(rng)))}.{rng.randint(1, 999)}@exemple.fr",
    }[kind]()
    superseded = rng.random() < 0.1
    confiance = round(rng.uniform(0.5, 1.0) * (0.5 if superseded else 1.0), 3)
    until = when + timedelta(days=rng.randint(1, 400)) if superseded else None
    source = rng.randint(1, max_souvenir) if max_souvenir and rng.random() < 0.8 else None
    relation = rng.choice(relation_ids) if relation_ids and rng.random() < 0.3 else None
    return (sujet[:200], predicat, objet, source, confiance, when, when, when, until, relation,
            rng.random() < 0.2)


FACT_COLUMNS = ["sujet", "predicat", "objet", "source_souvenir_id", "confiance", "cree_le",
                "maj_le", "valide_depuis", "valide_jusqu_a", "relation_id", "public"]


# --------------------------------------------------------------------------------- phases
def make_progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
        TimeRemainingColumn(), console=console,
    )


async def load_souvenirs(store: MemoryStore, gen: FrenchText, args: argparse.Namespace,
                         relation_ids: list[int]) -> dict[str, Any]:
    n, batch = args.souvenirs, args.batch
    start = datetime.now(UTC) - timedelta(days=365 * YEARS)
    step = timedelta(days=365 * YEARS) / max(n, 1)
    insert_s = 0.0
    gen_s = 0.0
    batch_times: list[float] = []
    batch_sizes: list[int] = []
    lengths: list[int] = []
    sources: Counter[str] = Counter()
    wall0 = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("souvenirs", total=n, rate="")
        done = 0
        while done < n:
            size = min(batch, n - done)
            t0 = time.perf_counter()
            items = []
            for i in range(done, done + size):
                jitter = timedelta(seconds=gen.rng.uniform(-3600, 3600))
                items.append(gen.souvenir(start + step * i + jitter, relation_ids))
            t1 = time.perf_counter()
            ids = await store.remember_many(items)
            t2 = time.perf_counter()
            assert len(ids) == size
            gen_s += t1 - t0
            insert_s += t2 - t1
            batch_times.append(t2 - t1)
            batch_sizes.append(size)
            if done % (batch * 10) == 0:
                lengths.extend(len(it.contenu) for it in items)
            sources.update(it.source or "" for it in items)
            done += size
            progress.update(task, advance=size,
                            rate=f"{done / insert_s:,.0f}/s (insert only)")
    wall = time.perf_counter() - wall0
    tenth = max(1, len(batch_times) // 10)
    return {
        "count": n, "batch_size": batch, "batches": len(batch_times),
        "insert_seconds": insert_s, "generation_seconds": gen_s, "wall_seconds": wall,
        "per_second": n / insert_s if insert_s else 0.0,
        "per_second_wall": n / wall if wall else 0.0,
        "per_second_first_10pct": sum(batch_sizes[:tenth]) / sum(batch_times[:tenth]),
        "per_second_last_10pct": sum(batch_sizes[-tenth:]) / sum(batch_times[-tenth:]),
        "batch_ms": {k: v * 1000 if k != "n" else v for k, v in summary(batch_times).items()},
        "content_chars": summary([float(x) for x in lengths]),
        "sources": dict(sources.most_common()),
    }


async def load_faits(db: Database, gen: FrenchText, n: int, max_souvenir: int,
                     relation_ids: list[int]) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(days=365 * YEARS)
    chunk = 20_000
    t0 = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("faits (COPY)", total=n, rate="")
        done = 0
        while done < n:
            size = min(chunk, n - done)
            records = [
                fact_record(gen, start + timedelta(days=gen.rng.uniform(0, 365 * YEARS)),
                            max_souvenir, relation_ids)
                for _ in range(size)
            ]
            async with db.engine.begin() as conn:
                raw = await conn.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                await driver.copy_records_to_table("faits", records=records,
                                                   columns=FACT_COLUMNS)
            done += size
            progress.update(task, advance=size,
                            rate=f"{done / (time.perf_counter() - t0):,.0f}/s")
    seconds = time.perf_counter() - t0
    return {"count": n, "method": "COPY (asyncpg copy_records_to_table), not add_fact()",
            "seconds": seconds, "per_second": n / seconds if seconds else 0.0}


async def bare_search(db: Database, sql: str, query: str, limit: int) -> tuple[int, str]:
    """The floor: bare full-text SQL with recall's AND-then-OR rule. Returns (rows, mode)."""
    strict = tsquery_text(query, mode="and")
    if strict is None:
        return 0, "none"
    async with db.sessions() as session:
        rows = (await session.execute(text(sql), {"tsq": strict, "k": limit})).all()
        loose = tsquery_text(query, mode="or")
        if len(rows) < limit and loose != strict:
            rows = (await session.execute(text(sql), {"tsq": loose, "k": limit})).all()
            return len(rows), "or"
    return len(rows), "and"


async def time_queries(store: MemoryStore, db: Database, queries: list[Query],
                       rounds: int, label: str) -> list[dict[str, Any]]:
    bare_sql = bare_fts_sql("french")
    per_query: list[dict[str, Any]] = [
        {"query": q.text, "category": q.category, "recall_ms": [], "bare_ms": []}
        for q in queries
    ]
    with make_progress() as progress:
        task = progress.add_task(label, total=len(queries) * rounds, rate="")
        for r in range(rounds):
            for i, q in enumerate(queries):
                entry = per_query[i]
                # alternate which one runs first so that neither always gets a warmer cache
                order = ("recall", "bare") if (i + r) % 2 == 0 else ("bare", "recall")
                for which in order:
                    t0 = time.perf_counter()
                    if which == "recall":
                        found = await store.recall(q.text, limit=RECALL_LIMIT)
                        entry["recall_ms"].append((time.perf_counter() - t0) * 1000)
                        entry["recall_rows"] = len(found)
                    else:
                        n, mode = await bare_search(db, bare_sql, q.text, RECALL_LIMIT)
                        entry["bare_ms"].append((time.perf_counter() - t0) * 1000)
                        entry["bare_rows"], entry["mode"] = n, mode
                progress.update(task, advance=1)
    return per_query


async def count_matches(db: Database, per_query: list[dict[str, Any]]) -> None:
    sql = text("SELECT count(*) FROM souvenirs s, to_tsquery('french'::regconfig, :tsq) "
               "AS q(query) WHERE s.recherche @@ q.query")
    async with db.engine.connect() as conn:
        for entry in per_query:
            strict = tsquery_text(entry["query"], mode="and")
            loose = tsquery_text(entry["query"], mode="or")
            entry["tsquery_and"], entry["tsquery_or"] = strict, loose
            if strict is None:
                entry["matches_and"] = entry["matches_or"] = entry["ranked_rows"] = 0
                continue
            entry["matches_and"] = int(await conn.scalar(sql, {"tsq": strict}) or 0)
            entry["matches_or"] = (
                int(await conn.scalar(sql, {"tsq": loose}) or 0) if loose != strict
                else entry["matches_and"]
            )
            # rows recall had to rank: the AND set, plus the OR set when it fell back
            entry["ranked_rows"] = entry["matches_and"] + (
                entry["matches_or"] if entry.get("mode") == "or" else 0)


async def explain(db: Database, entry: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of recall's SQL for the tsquery it ended up running."""
    sql, params = recall_sql("french", RecallFilter())
    tsq = entry["tsquery_or"] if entry.get("mode") == "or" else entry["tsquery_and"]
    async with db.engine.connect() as conn:
        rows = await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + sql),
                                  {**params, "tsq": tsq, "k": RECALL_LIMIT,
                                   "cap": CANDIDATE_CAP})
        plan = [r[0] for r in rows]
        bare_rows = await conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + bare_fts_sql()),
                                       {"tsq": tsq, "k": RECALL_LIMIT})
        bare_plan = [r[0] for r in bare_rows]
    return {"query": entry["query"], "tsquery": tsq, "mode": entry.get("mode"),
            "ranked_rows": entry.get("ranked_rows"), "recall_plan": plan,
            "bare_plan": bare_plan}


KEY_PLAN_LINES = re.compile(
    r"(Limit|Sort  |Bitmap Heap|Bitmap Index|Heap Blocks|Buffers|Rows Removed|"
    r"Execution Time|Planning Time|Seq Scan|Nested Loop|Sort Method|Index|JIT|Timing|"
    r"Functions|Gather|Workers)"
)


async def database_sizes(db: Database) -> dict[str, Any]:
    async with db.engine.connect() as conn:
        sizes = {
            "database": await conn.scalar(text("SELECT pg_database_size(current_database())")),
            "souvenirs_total": await conn.scalar(
                text("SELECT pg_total_relation_size('souvenirs')")),
            "souvenirs_heap": await conn.scalar(text("SELECT pg_relation_size('souvenirs')")),
            "souvenirs_toast": await conn.scalar(text(
                "SELECT coalesce(pg_total_relation_size(reltoastrelid), 0) FROM pg_class "
                "WHERE relname = 'souvenirs'")),
            "faits_total": await conn.scalar(text("SELECT pg_total_relation_size('faits')")),
        }
        rows = await conn.execute(text(
            "SELECT indexrelname, pg_relation_size(indexrelid) FROM pg_stat_user_indexes "
            "WHERE relname IN ('souvenirs', 'faits') ORDER BY 2 DESC"))
        sizes["indexes"] = {r[0]: r[1] for r in rows}
        settings = await conn.execute(text(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN ('shared_buffers', "
            "'work_mem', 'effective_cache_size', 'random_page_cost', 'jit', "
            "'max_parallel_workers_per_gather', 'gin_pending_list_limit', "
            "'default_text_search_config')"))
        sizes["settings"] = {r[0]: r[1] for r in settings}
        sizes["server_version"] = await conn.scalar(text("SHOW server_version"))
    return sizes


def mb(n: int | None) -> str:
    return f"{(n or 0) / 1024 / 1024:,.1f} MB"


def verdict(ok: bool) -> str:
    return "[bold green]PASS[/]" if ok else "[bold red]FAIL[/]"


# ---------------------------------------------------------------------------------- main
async def run(args: argparse.Namespace) -> dict[str, Any]:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    rng = random.Random(args.seed)
    vocab = load_vocabulary(args.seed)
    gen = FrenchText(vocab, rng)
    queries = build_queries(gen, args.queries, random.Random(args.seed + 1))
    result: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(), "args": vars(args).copy(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "vocabulary": {"curated": len({w for ws in vocab.sections.values() for w in ws}),
                       "wfrench_tail": len(vocab.tail)},
        "loadavg": {"start": os.getloadavg()},
        "targets": {"recall_p95_ms": TARGET_P95_MS, "ratio": TARGET_RATIO,
                    "insert_per_s": TARGET_INSERT_PER_S},
    }
    result["args"]["data_dir"] = str(args.data_dir) if args.data_dir else None

    db_name: str | None = None
    if args.database_url:
        db_name = f"axi_bench_{stamp.replace('-', '_')}"
        url: str | None = await create_fresh_database(args.database_url, db_name)
        data_dir = Path(args.data_dir or DEFAULT_DATA_ROOT / "unused")
        where = f"fresh database {db_name} on {args.database_url}"
    else:
        url = None
        data_dir = Path(args.data_dir or DEFAULT_DATA_ROOT / f"run-{stamp}")
        if data_dir.exists() and any(data_dir.iterdir()):
            raise SystemExit(f"{data_dir} is not empty: the benchmark needs a fresh database")
        where = f"embedded PostgreSQL 16 in {data_dir}"
    result["database"] = where
    console.print(f"[bold]Axi memory scale benchmark[/] — {where}")
    console.print(f"souvenirs={args.souvenirs:,} faits={args.faits:,} queries={len(queries)} "
                  f"batch={args.batch:,} seed={args.seed}; vocabulary: "
                  f"{result['vocabulary']['curated']:,} curated words + "
                  f"{len(vocab.tail):,} wfrench words")
    try:
        if url is None:
            # the first start creates the cluster and asks for Axi's shared buffers, which
            # apply from the next start — the state of any Axi that has run before
            async with open_database(url, data_dir):
                pass
        async with open_database(url, data_dir) as db:
            await migrate.upgrade(db.engine)
            store = MemoryStore(db)
            relation_ids = await create_relations(db, gen, args.relations)

            console.rule("load")
            ins = await load_souvenirs(store, gen, args, relation_ids)
            result["insert"] = ins
            console.print(
                f"souvenirs: {ins['count']:,} in {ins['insert_seconds']:,.1f} s inside "
                f"remember_many() → [bold]{ins['per_second']:,.0f} souvenirs/s[/] "
                f"(first 10%: {ins['per_second_first_10pct']:,.0f}/s, last 10%: "
                f"{ins['per_second_last_10pct']:,.0f}/s; batch p50 "
                f"{ins['batch_ms']['p50']:,.0f} ms, p95 {ins['batch_ms']['p95']:,.0f} ms, max "
                f"{ins['batch_ms']['max']:,.0f} ms); text generation {ins['generation_seconds']:,.1f}"
                f" s; wall {ins['per_second_wall']:,.0f}/s")
            cc = ins["content_chars"]
            console.print(f"content length (chars, sampled): p50 {cc['p50']:,.0f}, p95 "
                          f"{cc['p95']:,.0f}, max {cc['max']:,.0f}, mean {cc['mean']:,.0f}")
            max_id = int(await scalar(db, "SELECT coalesce(max(id), 0) FROM souvenirs"))
            fa = await load_faits(db, gen, args.faits, max_id, relation_ids)
            result["faits"] = fa
            console.print(f"faits: {fa['count']:,} via {fa['method']} in {fa['seconds']:,.1f} s "
                          f"({fa['per_second']:,.0f}/s)")

            t0 = time.perf_counter()
            async with db.engine.connect() as conn:
                await conn.execute(text("ANALYZE"))
                await conn.commit()
            result["analyze_seconds"] = time.perf_counter() - t0
            # what `axi run`'s maintenance loop does in the background (memory/lexicon.py)
            lexicon = await store.refresh_lexicon(full=True)
            result["lexicon"] = {"seconds": lexicon.seconds, "lexemes": lexicon.lexemes}
            console.print(f"lexicon: {lexicon.lexemes:,} words from "
                          f"{lexicon.souvenirs_counted:,} souvenirs in {lexicon.seconds:.1f} s")
            sizes = await database_sizes(db)
            result["sizes"] = sizes
            console.print(f"ANALYZE {result['analyze_seconds']:.1f} s; PostgreSQL "
                          f"{sizes['server_version']}; settings {sizes['settings']}")
            console.print(
                f"database size {mb(sizes['database'])}; souvenirs total "
                f"{mb(sizes['souvenirs_total'])} (heap {mb(sizes['souvenirs_heap'])}, toast "
                f"{mb(sizes['souvenirs_toast'])}); faits {mb(sizes['faits_total'])}")
            console.print("indexes: " + ", ".join(
                f"{k} {mb(v)}" for k, v in list(sizes["indexes"].items())[:6]))

            console.rule("recall")
            result["loadavg"]["before_recall"] = os.getloadavg()
            await time_queries(store, db, queries, args.warmup_rounds, "warm-up")
            per_query = await time_queries(store, db, queries, args.rounds, "measure")
            await count_matches(db, per_query)
            recall_ms = [x for e in per_query for x in e["recall_ms"]]
            bare_ms = [x for e in per_query for x in e["bare_ms"]]
            rs, bs = summary(recall_ms), summary(bare_ms)
            ratio50, ratio95 = rs["p50"] / bs["p50"], rs["p95"] / bs["p95"]
            result["recall_ms"], result["bare_ms"] = rs, bs
            result["ratio"] = {"p50": ratio50, "p95": ratio95}
            result["queries"] = per_query

            table = Table(title=f"{len(queries)} queries × {args.rounds} round(s), "
                                f"limit {RECALL_LIMIT}, after {args.warmup_rounds} warm-up round(s)")
            for col in ["", "p50 ms", "p95 ms", "p99 ms", "mean ms", "max ms"]:
                table.add_column(col, justify="right")
            for name, s in [("recall()", rs), ("bare SQL (floor)", bs)]:
                table.add_row(name, *(f"{s[k]:.2f}" for k in ["p50", "p95", "p99", "mean",
                                                               "max"]))
            table.add_row("ratio recall/bare", f"{ratio50:.2f}×", f"{ratio95:.2f}×", "", "", "")
            console.print(table)

            cats: dict[str, list[float]] = {}
            for e in per_query:
                cats.setdefault(e["category"], []).extend(e["recall_ms"])
            ctable = Table(title="recall() by query category")
            for col in ["category", "n", "p50 ms", "p95 ms", "max ms", "median ranked rows"]:
                ctable.add_column(col, justify="right")
            for cat, vals in sorted(cats.items()):
                ranked = [e["ranked_rows"] for e in per_query if e["category"] == cat]
                s = summary(vals)
                ctable.add_row(cat, str(len(ranked)), f"{s['p50']:.1f}", f"{s['p95']:.1f}",
                               f"{s['max']:.1f}", f"{statistics.median(ranked):,.0f}")
            console.print(ctable)

            dist = Counter(match_bucket(e["ranked_rows"]) for e in per_query)
            dist_and = Counter(match_bucket(e["matches_and"]) for e in per_query)
            result["matches_distribution"] = {"ranked_rows": {b: dist[b] for b in BUCKETS},
                                              "and_matches": {b: dist_and[b] for b in BUCKETS}}
            mtable = Table(title="matches per query (rows the full-text search had to rank)")
            mtable.add_column("matched rows")
            mtable.add_column("AND matches", justify="right")
            mtable.add_column("ranked (AND + OR fallback)", justify="right")
            mtable.add_column("recall p50 ms", justify="right")
            for b in BUCKETS:
                vals = [x for e in per_query if match_bucket(e["ranked_rows"]) == b
                        for x in e["recall_ms"]]
                mtable.add_row(b, str(dist_and[b]), str(dist[b]),
                               f"{percentile(vals, 50):.1f}" if vals else "")
            console.print(mtable)
            fallback = sum(1 for e in per_query if e.get("mode") == "or")
            console.print(f"OR fallback used by {fallback} of {len(per_query)} queries")

            slow = sorted(per_query, key=lambda e: -statistics.median(e["recall_ms"]))
            console.rule(f"EXPLAIN ANALYZE of the {args.explain} slowest recall() queries")
            explains = []
            for e in slow[:args.explain]:
                ex = await explain(db, e)
                explains.append(ex)
                console.print(
                    f"[bold]{e['query']!r}[/] ({e['category']}, {e.get('mode')}) recall "
                    f"{statistics.median(e['recall_ms']):.1f} ms, bare "
                    f"{statistics.median(e['bare_ms']):.1f} ms, AND matches "
                    f"{e['matches_and']:,}, OR matches {e['matches_or']:,}, ranked "
                    f"{e['ranked_rows']:,}; tsquery {ex['tsquery']}")
                for line in ex["recall_plan"]:
                    if KEY_PLAN_LINES.search(line) and "Sort Key" not in line:
                        console.print("    " + line.rstrip(), markup=False)
            result["explain"] = explains

            result["loadavg"]["after_recall"] = os.getloadavg()
            console.print("load average (1/5/15 min) at start {}, before recall {}, after "
                          "recall {}: above ~2 means something else shared the 2 cores".format(
                              *(" ".join(f"{x:.2f}" for x in result["loadavg"][k])
                                for k in ["start", "before_recall", "after_recall"])))
            console.rule("targets (2-core machine)")
            insert_ok = ins["per_second"] >= TARGET_INSERT_PER_S
            p95_ok = rs["p95"] <= TARGET_P95_MS
            ratio_ok = ratio50 <= TARGET_RATIO and ratio95 <= TARGET_RATIO
            result["verdict"] = {"insert": insert_ok, "recall_p95": p95_ok, "ratio": ratio_ok}
            console.print(f"insert  {ins['per_second']:>10,.0f} souvenirs/s  target ≥ "
                          f"{TARGET_INSERT_PER_S:,.0f}   {verdict(insert_ok)}")
            console.print(f"recall  p95 {rs['p95']:>8.2f} ms        target ≤ {TARGET_P95_MS:.0f}"
                          f" ms       {verdict(p95_ok)}")
            console.print(f"ratio   p50 {ratio50:.2f}× p95 {ratio95:.2f}×   target ≤ "
                          f"{TARGET_RATIO}×        {verdict(ratio_ok)}")
    finally:
        if db_name and args.database_url:
            await drop_database(args.database_url, db_name)
            console.print(f"dropped database {db_name}")
        elif args.cleanup and not args.database_url:
            shutil.rmtree(data_dir, ignore_errors=True)
            console.print(f"removed {data_dir}")
    result["finished"] = datetime.now(UTC).isoformat()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"memory_scale-{stamp}.json"
    out.write_text(json.dumps(result, ensure_ascii=False, indent=1, default=str))
    console.print(f"results: {out}")
    if not args.database_url and not args.cleanup:
        console.print(f"data dir kept for inspection: {data_dir} (--cleanup to remove)")
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--souvenirs", type=int, default=1_000_000)
    p.add_argument("--faits", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--relations", type=int, default=500, help="people to create first")
    p.add_argument("--batch", type=int, default=2_000, help="souvenirs per remember_many()")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--rounds", type=int, default=1, help="measured rounds over the queries")
    p.add_argument("--warmup-rounds", type=int, default=1)
    p.add_argument("--explain", type=int, default=5, help="slowest queries to EXPLAIN")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"embedded data dir (default: new dir under {DEFAULT_DATA_ROOT})")
    p.add_argument("--database-url", default=None,
                   help="PostgreSQL server to use instead; a fresh database is created on it "
                        "and dropped at the end")
    p.add_argument("--cleanup", action="store_true",
                   help="remove the embedded data dir at the end (default: keep it)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(run(parse_args(argv)))


if __name__ == "__main__":
    main()
