"""What Axis reads and writes as text, with no I/O: the consignes as Markdown (one `- `
bullet each, read by `GET /memory` and written back by `POST /memory`), and the French
lines of the tools' answers. Pure, so the round trip and the limits are tested alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.axis_contract import AxisRefused
from memory.records import ConsigneRecord, FactRecord, SouvenirRecord

MAX_CONSIGNES = 100
MAX_CONSIGNE_CHARS = 4000
MAX_MARKDOWN_CHARS = 64 * 1024
_BULLET = re.compile(r"^ ?[-*+](?:\s+(.*))?$")
_CONTINUED = re.compile(r"^\s{2,}(\S.*)$")


def consignes_markdown(consignes: Sequence[ConsigneRecord]) -> str:
    """One `- ` bullet per consigne; a consigne on several lines continues indented."""
    lines = ["# Consignes d'Axi", ""]
    for c in consignes:
        first, *rest = c.texte.strip().splitlines() or [""]
        lines.append(f"- {first}")
        lines.extend(f"  {line}" if line.strip() else "" for line in rest)
    if not consignes:
        lines.append("(aucune consigne en vigueur)")
    return "\n".join(lines).rstrip() + "\n"


def parse_consignes(markdown: str) -> list[str]:
    """The consignes of a Markdown list (what `consignes_markdown` writes): a bullet
    starts one, an indented line continues it, headings and blank lines are ignored.
    Raises AxisRefused, in French, for anything else or past the limits."""
    if len(markdown) > MAX_MARKDOWN_CHARS:
        raise AxisRefused(f"Texte trop long : au plus {MAX_MARKDOWN_CHARS // 1024} Ko.")
    items: list[list[str]] = []
    for number, raw in enumerate(markdown.replace("\r\n", "\n").split("\n"), start=1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if (bullet := _BULLET.match(line)) is not None:
            items.append([(bullet.group(1) or "").strip()])
        elif items and (more := _CONTINUED.match(line)) is not None:
            items[-1].append(more.group(1))
        elif line.strip() == "(aucune consigne en vigueur)":
            continue
        else:
            raise AxisRefused(f"Ligne {number} : chaque consigne commence par « - » "
                              "(une ligne qui la continue est indentée).")
    texts = ["\n".join(parts).strip() for parts in items]
    if any(not t for t in texts):
        raise AxisRefused("Une consigne est vide : retirez la puce ou écrivez la consigne.")
    if not texts:
        raise AxisRefused("Aucune consigne trouvée : une consigne par ligne, commençant par « - ».")
    if len(texts) > MAX_CONSIGNES:
        raise AxisRefused(f"Trop de consignes : au plus {MAX_CONSIGNES}.")
    for i, t in enumerate(texts, start=1):
        if len(t) > MAX_CONSIGNE_CHARS:
            raise AxisRefused(f"La consigne n°{i} est trop longue : au plus "
                              f"{MAX_CONSIGNE_CHARS} caractères.")
    return texts


def short(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def when(moment: datetime, tz: ZoneInfo) -> str:
    return f"{moment.astimezone(tz):%d/%m/%Y %H:%M}"


def souvenir_line(s: SouvenirRecord, tz: ZoneInfo) -> str:
    author = s.metadata.get("auteur")
    who = f", {author}" if isinstance(author, str) and author else ""
    return f"- n°{s.id} ({when(s.timestamp, tz)}, {s.type}{who}) : {short(s.resume or s.contenu)}"


def fact_line(f: FactRecord, tz: ZoneInfo) -> str:
    said = f" — selon {f.selon}, non vérifié" if f.selon else ""
    return (f"- {f.sujet} {f.predicat} {f.objet} (confiance {f.confiance:.1f}, depuis le "
            f"{f.valide_depuis.astimezone(tz):%d/%m/%Y}{said})")


ACTION_LABELS = {
    "consignes.remplacer": "remplacer les consignes",
    "faits.oublier": "oublier des faits",
    "identite.associer": "dire qui est un nouveau contact",
    "message.repondre": "répondre à un message retenu",
    "axis.connecter": "connexion d'Axis (Claude.ai)",
    "consignes.ajouter": "consigne proposée par Axis",
    "site.memo": "mémo proposé par un visiteur du site",
}
"""What each confirmation asks, as the briefing names it (never the question's own text,
which may quote anything): every registered action has one (tests/channels/test_axis_http.py)."""


def action_label(action: str) -> str:
    return ACTION_LABELS.get(action, "autre demande")
