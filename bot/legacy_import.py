"""`axi import legacy PATH…`: bring in what the earlier Axi kept (issue 13, §3).

Why it is built this way: the earlier Axi's files are the only record of a year of
consignes, reported DPEs and conversations, in formats nobody fully specified. So:

- every file is read and parsed (bot/legacy_formats.py, bot/legacy_conversations.py)
  before anything is written; one unreadable file (a strange encoding, a half-written
  JSON) and nothing at all is written — the report still says what would have been;
- every item has a stable key: a consigne its folded text, a DPE its number, a souvenir
  the hash of its kind, content and date (metadata `cle_import`, source `ancien-axi`).
  What the database already holds is skipped, so a second run — or the same file
  renamed — imports nothing new, and nothing existing is ever changed. The keys are
  also kept in an import ledger (store.record_imported): a souvenir forgotten since, or
  a consigne removed since, is not brought back by a later import;
- everything goes through the store's own APIs: consignes (memory/consignes.py, for the
  inner circle, or for everyone with the source `site:<id>` for the site notes), the DPE
  veille's seen items (memory/veilles.py, stored already reported, so the veille never
  reports them), souvenirs (`remember_many`);
- speakers are matched to people by name (accents and case aside) or by a verified
  address (an email, a Telegram id); an unknown speaker keeps their name in the
  souvenir. No fact is ever drawn from the text (the souvenirs are not queued for
  extraction);
- one import at a time (an advisory lock): two at once could both find an item new.

A run killed while writing leaves what it wrote; the next run adds the rest only.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bot.legacy_formats import KINDS, kind_by_content, kind_by_name, parse
from bot.legacy_text import (
    MAX_FILE_BYTES,
    RAW_TYPE,
    SOURCE,
    ConsigneItem,
    DpeItem,
    Parsed,
    SouvenirItem,
    Unreadable,
    consigne_key,
    decode,
    norm,
    preview,
    secret_in,
)
from memory.errors import InvalidInput
from memory.records import PersonRecord
from memory.rows import NewSouvenir, prepare_souvenir
from memory.store import MemoryStore
from memory.text import fold
from memory.veilles import NewItem

LOCK = "import:legacy"
DPE_TYPE = "dpe"
"""The veille type whose seen items are keyed by `numero_dpe` (jobs/dpe.py)."""
BATCH = 500
ORDER = ("consignes", "site_notes", "dpe_csv", "dpe_list", "conversations", "json_memories")
"""Files are imported in this order: a DPE in both the CSV and the JSON list keeps the
CSV's details."""
Progress = Callable[[str, int, int], None]


class ImportBusy(Exception):
    """Another `axi import legacy` is writing now."""


@dataclass
class FileReport:
    path: str
    kind: str | None = None
    encoding: str | None = None
    status: str = "read"  # read | skipped | unreadable
    reason: str | None = None
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("imported", "skipped", "unreadable"), 0))


@dataclass(frozen=True)
class Outcome:
    file: str
    where: str
    what: str
    status: str  # imported | skipped | unreadable (kept as a raw souvenir)
    reason: str | None
    text: str


@dataclass
class ImportReport:
    dry_run: bool
    files: list[FileReport] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    written: bool = False
    seconds: float = 0.0

    @property
    def unreadable_files(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "unreadable"]

    def counts(self) -> dict[str, int]:
        found = Counter(o.status for o in self.outcomes)
        return {s: found.get(s, 0) for s in ("imported", "skipped", "unreadable")}

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "written": self.written,
                "seconds": round(self.seconds, 2), "counts": self.counts(),
                "imported": dict(Counter(o.what for o in self.outcomes
                                         if o.status == "imported")),
                "files": [asdict(f) for f in self.files],
                "items": [asdict(o) for o in self.outcomes]}


@dataclass
class _Plan:
    consignes: list[ConsigneItem] = field(default_factory=list)
    dpe: dict[int, list[DpeItem]] = field(default_factory=lambda: defaultdict(list))
    souvenirs: list[NewSouvenir] = field(default_factory=list)
    ledger: list[str] = field(default_factory=list)
    """Keys to record as imported: what is written now, and what was found already here."""

    @property
    def size(self) -> int:
        return (len(self.consignes) + sum(len(v) for v in self.dpe.values())
                + len(self.souvenirs))


# ------------------------------------------------------------------ reading
def shown(path: Path | str) -> str:
    """A path as printed: a file name that is not UTF-8 (a Latin-1 disk) keeps its odd
    bytes visible as escapes, never as characters no terminal or JSON can write."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def gather(paths: Sequence[Path]) -> tuple[list[tuple[Path, str, bool]], list[FileReport]]:
    """The files to read (path, as shown, given explicitly?) and the reports of those
    left out: a directory's unknown files and subdirectories, a path that is none."""
    files: list[tuple[Path, str, bool]] = []
    reports: list[FileReport] = []
    taken: set[Path] = set()

    def take(path: Path, explicit: bool) -> None:
        real = path.resolve()
        if real in taken:
            reports.append(FileReport(shown(path), status="skipped", reason="given twice"))
            return
        taken.add(real)
        files.append((path, shown(path), explicit))

    for path in paths:
        try:
            children = sorted(path.iterdir()) if path.is_dir() else None
            is_file = children is None and path.is_file()
        except OSError as exc:  # a name too long, a directory we may not read…
            reports.append(FileReport(shown(path), status="unreadable",
                                      reason=f"cannot read it: {exc.strerror or exc}"))
            continue
        if children is not None:
            for child in children:
                if child.is_dir():
                    reports.append(FileReport(shown(child), status="skipped", reason=(
                        "a directory (not searched: give it as PATH to import it)")))
                elif kind_by_name(child.name) is None:
                    reports.append(FileReport(shown(child), status="skipped", reason=(
                        "not a file name the earlier Axi used (give the file itself as "
                        "PATH: its content is then recognised)")))
                else:
                    take(child, False)
        elif is_file:
            take(path, True)
        else:
            reports.append(FileReport(shown(path), status="unreadable", reason=(
                "no such file or directory" if not path.exists() else "not a regular file")))
    return files, reports


def read_one(path: Path, display: str, explicit: bool, local: ZoneInfo
             ) -> tuple[FileReport, Parsed | None]:
    report = FileReport(display)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise Unreadable(f"too large ({size / 1e6:,.0f} MB, at most "
                             f"{MAX_FILE_BYTES / 1e6:,.0f} MB): split it first")
        data = path.read_bytes()
    except OSError as exc:
        report.status, report.reason = "unreadable", f"cannot read it: {exc.strerror or exc}"
        return report, None
    except Unreadable as exc:
        report.status, report.reason = "unreadable", str(exc)
        return report, None
    try:
        decoded = decode(data)
        report.encoding, report.notes = decoded.encoding, list(decoded.notes)
        if not decoded.text.strip():
            report.status, report.reason = "skipped", "empty file: nothing to import"
            return report, None
        kind = kind_by_name(path.name)
        if kind is None and explicit:
            kind = kind_by_content(path.name, decoded.text)
        if kind is None:
            report.status, report.reason = "skipped", (
                "content not recognised as one of the earlier Axi's files")
            return report, None
        report.kind = kind
        return report, parse(kind, decoded.text, shown(path.name), local)
    except Unreadable as exc:
        report.status, report.reason = "unreadable", str(exc)
        return report, None


# ------------------------------------------------------------------ planning
def _speakers(people: Sequence[PersonRecord]) -> Callable[[str], tuple[int | None, str]]:
    """A speaker's person: by name (accents and case aside) or by a verified address;
    else no one, and the name as written."""
    by_name = {fold(norm(p.personne)): p for p in people}
    by_address = {(i.canal, i.adresse): p for p in people for i in p.identities}

    def resolve(speaker: str) -> tuple[int | None, str]:
        plain = speaker.strip()
        person = by_name.get(fold(norm(plain)))
        if person is None and "@" in plain:
            person = by_address.get(("email", plain.lower()))
        if person is None and plain.isdigit():
            person = by_address.get(("telegram", plain))
        return (person.id, person.personne) if person else (None, plain)

    return resolve


def _souvenir(item: SouvenirItem, resolve: Callable[[str], tuple[int | None, str]]
              ) -> NewSouvenir:
    metadata: dict[str, Any] = {"cle_import": item.key, "import": "ancien Axi",
                                "emplacement": item.where}
    relation_id = None
    if item.speaker:
        relation_id, author = (None, "Axi") if item.sens == "sortant" else resolve(item.speaker)
        metadata.update(auteur=author, sens=item.sens)
    if item.unreadable:
        metadata["raison"] = item.unreadable
    if item.note:
        metadata["remarque"] = item.note
    metadata.update(item.extra)
    return NewSouvenir(contenu=item.contenu, type=item.type, source=SOURCE,
                       importance=2 if item.type == RAW_TYPE else 5,
                       timestamp=item.timestamp, relation_id=relation_id, metadata=metadata)


async def _plan(store: MemoryStore, parsed: list[tuple[FileReport, Parsed]],
                outcomes: list[Outcome]) -> _Plan:
    """What is new, given what the database holds; every item gets its outcome."""
    plan = _Plan()
    items = [i for _, p in parsed for i in p.items]
    existing: dict[str, Any] = {}
    for c in await store.list_consignes(active_only=False):
        existing.setdefault(consigne_key(c.texte), c)
    veilles = [v for v in await store.list_veilles() if v.type == DPE_TYPE]
    numbers = [i.numero for i in items if isinstance(i, DpeItem)]
    known = {v.id: await store.known_keys(v.id, numbers) for v in veilles}
    present = await store.imported_keys(SOURCE, [
        i.key if isinstance(i, SouvenirItem) else i.ledger for i in items
        if not isinstance(i, DpeItem)])
    resolve = _speakers(await store.list_people())
    first: dict[tuple[str, str], str] = {}

    for report, found in parsed:
        def add(where: str, what: str, status: str, reason: str | None, text: str,
                report: FileReport = report) -> None:
            outcomes.append(Outcome(report.path, where, what, status, reason, preview(text)))
            report.counts[status] += 1

        for skip in found.skips:
            add(skip.where, "line", "skipped", skip.reason, skip.text)
        for item in found.items:
            text = item.contenu if isinstance(item, SouvenirItem) else (
                item.texte if isinstance(item, ConsigneItem) else item.numero)
            secret = secret_in(text)
            if secret is not None:  # never shown either: the preview would print it
                add(item.where, item.what, "skipped", f"looks like {secret}: not imported "
                    "(secrets belong in .env; change it if it was ever shared)", "")
                continue
            same = (type(item).__name__, item.key)
            if same in first:
                add(item.where, item.what, "skipped", f"duplicate of {first[same]}", text)
                continue
            first[same] = item.where
            if isinstance(item, ConsigneItem):
                hit = existing.get(item.key) or existing.get(consigne_key(item.bare))
                if hit is not None:
                    plan.ledger.append(item.ledger)
                    add(item.where, item.what, "skipped", f"already a consigne (#{hit.id}"
                        + ("" if hit.active else ", inactive: left as it is") + ")", text)
                elif item.ledger in present:
                    add(item.where, item.what, "skipped", "imported before and removed "
                        "since: not brought back", text)
                else:
                    plan.consignes.append(item)
                    plan.ledger.append(item.ledger)
                    add(item.where, item.what, "imported", item.note, text)
            elif isinstance(item, DpeItem):
                missing = [v for v in veilles if item.numero not in known[v.id]]
                if not veilles:
                    add(item.where, item.what, "skipped", "no DPE veille to mark it in "
                        "(see `axi veille list`)", text)
                elif not missing:
                    add(item.where, item.what, "skipped", "already seen by veille "
                        + ", ".join(v.nom for v in veilles), text)
                else:
                    for v in missing:
                        plan.dpe[v.id].append(item)
                    add(item.where, item.what, "imported", item.note, text)
            else:
                if item.key in present:
                    plan.ledger.append(item.key)
                    add(item.where, item.what, "skipped", "already imported", text)
                    continue
                new = _souvenir(item, resolve)
                try:
                    prepare_souvenir(new)  # the store's own check, before anything is written
                except InvalidInput as exc:
                    add(item.where, item.what, "unreadable", f"{exc} (not imported)", text)
                    continue
                plan.souvenirs.append(new)
                plan.ledger.append(item.key)
                if item.unreadable:
                    add(item.where, item.what, "unreadable",
                        f"{item.unreadable} (kept as a raw souvenir)", text)
                else:
                    add(item.where, item.what, "imported", item.note, text)
    return plan


# ------------------------------------------------------------------ writing
async def _write(store: MemoryStore, plan: _Plan, progress: Progress | None) -> None:
    done, total = 0, plan.size

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress("writing", done, total)

    for veille_id, dpes in plan.dpe.items():
        for start in range(0, len(dpes), BATCH):
            batch = dpes[start:start + BATCH]
            await store.store_items(veille_id, None, [
                NewItem(i.numero, i.source, i.donnees, reported=True) for i in batch])
            step(len(batch))
    for start in range(0, len(plan.souvenirs), BATCH):
        batch_s = plan.souvenirs[start:start + BATCH]
        await store.remember_many(batch_s)
        step(len(batch_s))
    for consigne in plan.consignes:
        await store.add_consigne(consigne.texte, source=consigne.source,
                                 audience=consigne.audience)  # type: ignore[arg-type]
        step(1)
    # last: a run killed before this finds its items by their souvenir's key or their
    # consigne's text, and records them then
    await store.record_imported(SOURCE, plan.ledger)


async def import_legacy(store: MemoryStore, paths: Sequence[Path], *, timezone: str,
                        dry_run: bool = False, progress: Progress | None = None
                        ) -> ImportReport:
    """Read every file, then (unless a dry run or an unreadable file) write what is new."""
    started = time.perf_counter()
    report = ImportReport(dry_run=dry_run)
    local = ZoneInfo(timezone)
    files, left_out = gather(paths)
    parsed: list[tuple[FileReport, Parsed]] = []
    for number, (path, display, explicit) in enumerate(files, 1):
        file_report, found = read_one(path, display, explicit, local)
        report.files.append(file_report)
        if found is not None:
            parsed.append((file_report, found))
        if progress:
            progress("reading", number, len(files))
    report.files += left_out
    parsed.sort(key=lambda pair: ORDER.index(pair[0].kind or "consignes"))
    if dry_run or report.unreadable_files:
        await _plan(store, parsed, report.outcomes)
    else:
        async with store.advisory_lock(LOCK) as held:
            if not held:
                raise ImportBusy("another `axi import legacy` is running now; try again "
                                 "when it is done")
            plan = await _plan(store, parsed, report.outcomes)
            await _write(store, plan, progress)
            report.written = True
    report.seconds = time.perf_counter() - started
    return report


def kind_label(kind: str | None) -> str:
    return KINDS.get(kind or "", "")
