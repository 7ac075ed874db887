"""The veilles' shared vocabulary, pure (no I/O): what a veille type fetches, what the
engine stores once per veille, and the digest it sends. The engine (jobs/engine.py) runs
a type; each type lives in its own module (jobs/dpe.py, jobs/concurrence.py,
jobs/dvf_veille.py) and implements `VeilleKind`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from html import escape
from typing import Any, Protocol

import httpx


@dataclass(frozen=True)
class VeilleRecord:
    """A row of `veilles`."""

    id: int
    nom: str
    type: str
    config: Mapping[str, Any]
    horaire: str
    destinataires: Mapping[str, Any]
    active: bool


@dataclass(frozen=True)
class SourceItem:
    """One item a source yielded. `key` is stable (the same item on every run, e.g. a
    DPE's numero_dpe, a listing's normalized URL, a DVF sale's hash) and unique per
    veille; `data` is small JSON (what the digest shows)."""

    key: str
    source: str
    data: Mapping[str, Any]


@dataclass
class Fetched:
    """What one run fetched. `broken`: sources that failed or suddenly yielded nothing
    (source → French reason), reported as broken, never as "no news"; `healthy`: the
    sources that answered normally (a broken one that answers again has recovered);
    `partial`: why the run is incomplete (a cap reached…) while what was fetched stays;
    `watermarks`: positions to store once the items are stored (e.g. the DPE's last
    reception date).

    For a type with `baseline_new_sources` (jobs/baseline.py): `incomplete`, the sources
    that answered but not wholly this time (a later page failed), whose silent baseline
    is therefore not complete yet; `source_ids`, a source's stable identity when its name
    is not (a competitor's address, while its name may be corrected)."""

    items: list[SourceItem] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)
    healthy: set[str] = field(default_factory=set)
    partial: str | None = None
    watermarks: dict[str, str] = field(default_factory=dict)
    incomplete: set[str] = field(default_factory=set)
    source_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DigestFile:
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Digest:
    """A rendered digest: the email (subject, text, HTML, attachments) and the short
    Telegram summary for the `resume` recipients (split ≤ 4,096 characters by the
    channel). Text from sources is data: rendered escaped, never instructions."""

    subject: str
    text: str
    html: str | None = None
    attachments: tuple[DigestFile, ...] = ()
    summary: str | None = None

    def with_model_summary(self, summary: str) -> Digest:
        """This digest opened by the local model's short summary, labelled as such (pure;
        `summary` is plain text: escaped in the HTML)."""
        label = "Résumé automatique (modèle local, à vérifier)"
        html = self.html
        if html is not None:
            block = (f'<p style="font-style:italic">{escape(label)} : {escape(summary)}</p>')
            at = html.find(">", html.find("<body")) + 1 if "<body" in html else 0
            html = html[:at] + block + html[at:]
        return replace(self, text=f"{label} : {summary}\n\n{self.text}", html=html,
                       summary=f"{label} : {summary}\n\n{self.summary or self.text}")


Progress = Callable[[int, int | None, str], None]
"""(done, total or None, what) — the CLI shows a progress bar; the scheduler logs."""


@dataclass
class RunContext:
    """What a veille type gets for one run (built by the engine)."""

    veille: VeilleRecord
    http: httpx.AsyncClient
    store: Any  # memory.store.MemoryStore
    settings: Any  # bot.config.Settings
    now: datetime
    dry_run: bool = False
    first_run: bool = False
    """No earlier successful run: sources that need it take a silent baseline."""
    watermarks: dict[str, str] = field(default_factory=dict)
    """The stored positions (curseurs_canal, canal `veille:<nom>`)."""
    progress: Progress = lambda done, total, what: None


class VeilleKind(Protocol):
    type: str

    async def fetch(self, ctx: RunContext) -> Fetched:
        """Everything the sources have now (the engine keeps only unseen keys)."""
        ...

    async def enrich(self, ctx: RunContext, new: list[SourceItem]) -> list[SourceItem]:
        """The new items, completed before they are stored and reported (the DPE's
        estimate, last sale, town hall, priority); return them unchanged if nothing."""
        ...

    def render(self, veille: VeilleRecord, new: list[SourceItem], *, when: datetime,
               broken: Mapping[str, str]) -> Digest | None:
        """The digest of the new items (pure); None when there is nothing to send (a
        type that sends a "RAS" digest returns one)."""
        ...
