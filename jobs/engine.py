"""One run of one veille, the same from the scheduler and from `axi veille run`.

Why it is built this way (issue 12): an item must never be lost nor reported twice, even
when a run fails, is killed, or two `axi` processes fire at once. So a run holds the
veille's advisory try-lock (the other process records an `ignore` run and stops); every
new item is stored before anything is sent; the digest renders ALL the veille's
unreported items (this run's and those an earlier failed run left); `notify` keys derive
from the reported items, so a rerun after a crash between queuing and marking queues
nothing twice; and items are marked reported only after `notify` returned. A broken
source alerts Ludo once per outage and once when it recovers (etat_sources). For the
types with `baseline_new_sources`, a source's items are stored silently until a complete
fetch of it wrote its baseline marker (jobs/baseline.py), after its items. Each run
that worked (ok or partiel) pings AXI_PUSH_URL_VEILLES (jobs/push.py), so a monitor
elsewhere notices when the veilles fall silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bot.jobs_contract import JobServices
from jobs import baseline, push
from jobs import kinds as kinds_module
from jobs.digest_plan import Recipient, delivered, plan, recipients_of
from jobs.types import Digest, Fetched, Progress, RunContext, SourceItem, VeilleKind, VeilleRecord
from memory.veilles import ItemRow, NewItem, VeilleRow

log = logging.getLogger(__name__)

SKIPPED = "une autre instance d'Axi l'exécute déjà"
INTERRUPTED = "interrompu : le processus s'est arrêté pendant le passage"
OWNER = "@créateur"
"""bot.notify's recipient meaning Ludo (the console when nobody is créateur yet)."""
AGENCY = "agence"
HTTP_TIMEOUT_S = 30.0
WHOLE_FETCH = "*"
"""The source name of a fetch that failed as a whole."""
SENDING = "envoi"
RUN = "passage"
"""The source name of a run that failed after its fetch (enrich, store, render, a missing
type module): Ludo hears of it once, not every day."""
"""The source name of the digest's sending (alerted like a broken source when its email
cannot reach every recipient)."""


@dataclass
class RunResult:
    state: str  # ok, partiel, echec, ignore, essai (a dry run)
    run_id: int | None = None
    seen: int = 0
    new: int = 0
    error: str | None = None
    digest: Digest | None = None
    reported: list[SourceItem] = field(default_factory=list)


class RunFailed(Exception):
    """A run that failed for a reason already worded in French; `alerted`: Ludo was
    already told of this failure's cause (a source's outage, the sending)."""

    def __init__(self, message: str, *, alerted: bool = False):
        super().__init__(message)
        self.alerted = alerted


def one_line(exc: BaseException, limit: int = 300) -> str:
    words = " ".join(f"{type(exc).__name__} : {exc}".split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def record_of(row: VeilleRow) -> VeilleRecord:
    return VeilleRecord(id=row.id, nom=row.nom, type=row.type, config=row.config,
                        horaire=row.horaire, destinataires=row.destinataires, active=row.active)


def digest_key(nom: str, keys: list[str], when: datetime) -> str:
    """The notification key of a digest: the reported items' keys (a rerun reporting the
    same items queues nothing), or the day for a digest of nothing (one "RAS" a day)."""
    if not keys:
        return f"veille:{nom}:ras:{when:%Y-%m-%d}"
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:24]
    return f"veille:{nom}:{digest}"


def http_client(settings: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(headers={"User-Agent": settings.veille_user_agent},
                             timeout=httpx.Timeout(HTTP_TIMEOUT_S), follow_redirects=True)


class Engine:
    def __init__(self, services: JobServices, *, kind_for: Any = None):
        self.services = services
        self.store = services.store
        self.kind_for = kind_for or kinds_module.kind_for
        self.tz = ZoneInfo(services.settings.timezone)

    async def run(self, nom: str, *, trigger: str = "manuel",
                  planned_for: datetime | None = None, dry_run: bool = False,
                  progress: Progress | None = None) -> RunResult:
        """Run the veille `nom` once. NotFound when there is no such veille; otherwise
        every outcome is a RunResult (recorded in passages_veille unless a dry run)."""
        veille = await self.store.get_veille(nom)
        if dry_run:
            return await self._dry_run(veille, progress)
        began = asyncio.get_running_loop().time()
        result = await self._locked_run(veille, trigger, planned_for, progress)
        if result.state in {"ok", "partiel"}:  # the push monitor hears of each success
            await push.ping(
                self.services.settings.push_url_veilles, ok=True,
                message=f"veille {nom} : {result.state}, {result.new} nouveauté(s)",
                duration_s=asyncio.get_running_loop().time() - began)
        return result

    async def _locked_run(self, veille: VeilleRow, trigger: str, planned_for: datetime | None,
                          progress: Progress | None) -> RunResult:
        nom = veille.nom
        async with self.services.lock(f"veille:{nom}") as held:
            if not held:
                run_id = await self.store.start_run(
                    veille.id, declenchement=trigger, prevu_pour=planned_for, etat="ignore",
                    erreur=SKIPPED)
                log.info("veille %s skipped: %s", nom, SKIPPED)
                return RunResult("ignore", run_id, error=SKIPPED)
            await self.store.abandon_runs(veille.id, INTERRUPTED)
            run_id = await self.store.start_run(veille.id, declenchement=trigger,
                                                prevu_pour=planned_for)
            result = RunResult("echec", run_id)
            try:
                await self._run(veille, result, planned_for, progress)
            except asyncio.CancelledError:
                await self.store.finish_run(run_id, "echec", vus=result.seen,
                                            nouveaux=result.new,
                                            erreur="interrompu : arrêt d'Axi pendant le passage")
                raise
            except Exception as exc:
                result.state = "echec"
                result.error = str(exc) if isinstance(exc, RunFailed) else one_line(exc)
                log.warning("veille %s failed: %s", nom, result.error)
                if not getattr(exc, "alerted", False):
                    with contextlib.suppress(Exception):  # the database may be what failed
                        await self._alerts(veille, {RUN: result.error[:300]}, set(),
                                           self.services.clock())
            else:
                with contextlib.suppress(Exception):
                    await self._alerts(veille, {}, {RUN}, self.services.clock())
            await self.store.finish_run(run_id, result.state, vus=result.seen,
                                        nouveaux=result.new, erreur=result.error)
            return result

    # ------------------------------------------------------------------ the run
    def _kind(self, veille: VeilleRow) -> VeilleKind:
        try:
            return self.kind_for(veille.type)
        except kinds_module.UnknownKind as exc:
            raise RunFailed(str(exc)) from None

    async def _context(self, veille: VeilleRow, http: httpx.AsyncClient, *, dry_run: bool,
                       progress: Progress | None) -> RunContext:
        return RunContext(
            veille=record_of(veille), http=http, store=self.store,
            settings=self.services.settings, now=self.services.clock(), dry_run=dry_run,
            first_run=not await self.store.had_successful_run(veille.id),
            watermarks=await self.store.read_watermarks(veille.nom),
            progress=progress or (lambda done, total, what: None))

    async def _run(self, veille: VeilleRow, result: RunResult, planned_for: datetime | None,
                   progress: Progress | None) -> None:
        kind = self._kind(veille)
        async with http_client(self.services.settings) as http:
            ctx = await self._context(veille, http, dry_run=False, progress=progress)
            try:
                fetched = await kind.fetch(ctx)
            except Exception as exc:
                reason = one_line(exc)
                await self._alerts(veille, {WHOLE_FETCH: reason}, set(), ctx.now)
                raise RunFailed(f"la récupération a échoué : {reason}", alerted=True) from None
            items = _unique(fetched.items)
            result.seen = len(items)
            known = await self.store.known_keys(veille.id, [i.key for i in items])
            new = [i for i in items if i.key not in known]
            if new:
                new = await kind.enrich(ctx, new)
            silent = await self._silent(kind, veille, ctx, fetched, new)
            stored = await self.store.store_items(veille.id, result.run_id, [
                NewItem(i.key, i.source, i.data, reported=i.source in silent) for i in new])
            result.new = len(stored)
            marks = dict(fetched.watermarks)
            if getattr(kind, "baseline_new_sources", False):  # after the items: never before
                marks.update(baseline.new_markers(fetched, ctx.watermarks, ctx.now))
            await self.store.write_watermarks(veille.nom, marks)
            _crash_point("veille:after_store")
        healthy = (set(fetched.healthy) | {WHOLE_FETCH}) - set(fetched.broken)
        await self._alerts(veille, fetched.broken, healthy, ctx.now)
        problems = _problems(fetched)
        pending = await self.store.unreported_items(veille.id)
        when = (planned_for or ctx.now).astimezone(self.tz)
        problems += await self._deliver(kind, veille, ctx, fetched, pending, result, when)
        result.state = "partiel" if problems else "ok"
        result.error = "; ".join(problems)[:1000] or None

    async def _summarized(self, digest: Digest) -> Digest:
        """The digest with the local model's short summary when one comes in time (the
        summarizer bounds its wait); the digest as it is otherwise."""
        if self.services.summarize is None:
            return digest
        try:
            summary = await self.services.summarize(digest.text)
        except Exception as exc:  # never the reason a digest does not leave
            log.warning("digest summary failed: %s", one_line(exc))
            return digest
        return digest.with_model_summary(summary) if summary else digest

    async def _silent(self, kind: VeilleKind, veille: VeilleRow, ctx: RunContext,
                      fetched: Fetched, new: list[SourceItem]) -> set[str]:
        """The sources whose new items are their silent baseline (jobs/baseline.py)."""
        sources = {i.source for i in new}
        if not sources or not getattr(kind, "baseline_new_sources", False):
            return set()
        established: set[str] = set()
        if baseline.legacy(ctx.watermarks, ctx.first_run):
            established = await self.store.sources_with_items(veille.id, sources)
        return baseline.silent_sources(fetched, sources, ctx.watermarks, established)

    async def _dry_run(self, veille: VeilleRow, progress: Progress | None) -> RunResult:
        """Fetch and render as a run would; store, send, mark and record nothing."""
        kind = self._kind_or_fail(veille)
        if isinstance(kind, RunResult):
            return kind
        try:
            async with http_client(self.services.settings) as http:
                ctx = await self._context(veille, http, dry_run=True, progress=progress)
                fetched = await kind.fetch(ctx)
                items = _unique(fetched.items)
                known = await self.store.known_keys(veille.id, [i.key for i in items])
                new = [i for i in items if i.key not in known]
                if new:
                    new = await kind.enrich(ctx, new)
                silent = await self._silent(kind, veille, ctx, fetched, new)
            pending = [SourceItem(r.cle, r.source or "", r.donnees)
                       for r in await self.store.unreported_items(veille.id)]
            shown = pending + [i for i in new if i.source not in silent]
            digest = kind.render(ctx.veille, shown, when=ctx.now, broken=fetched.broken)
        except Exception as exc:
            return RunResult("echec", error=f"la récupération a échoué : {one_line(exc)}")
        problems = _problems(fetched)
        return RunResult("essai", seen=len(items), new=len(new), digest=digest,
                         error="; ".join(problems) or None, reported=shown)

    def _kind_or_fail(self, veille: VeilleRow) -> VeilleKind | RunResult:
        try:
            return self._kind(veille)
        except RunFailed as exc:
            return RunResult("echec", error=str(exc))

    # ------------------------------------------------------------------ sending
    def _resolve(self, who: str) -> tuple[str, list[str]]:
        """A recipient of the veille's config → (notify's `to`, cc)."""
        settings = self.services.settings
        if who == AGENCY:
            if not settings.agency_email:
                log.warning("AXI_AGENCY_EMAIL is not set: the digest goes to Ludo instead")
                return OWNER, []
            return settings.agency_email, [settings.agency_cc] if settings.agency_cc else []
        if who in {"créateur", "createur"}:
            return OWNER, []
        return who, []

    async def _deliver(self, kind: VeilleKind, veille: VeilleRow, ctx: RunContext,
                       fetched: Fetched, pending: list[ItemRow], result: RunResult,
                       when: datetime) -> list[str]:
        """Send every recipient the unreported items it misses (jobs/digest_plan.py),
        remember who has what, and mark reported the items everyone has. Returns the
        run's problems; raises RunFailed when nobody could get a digest that exists."""
        recipients = recipients_of(veille.destinataires)
        by_id = {r.id: r for r in pending}
        have = {r.id: set(r.envoye_a) for r in pending}
        failures: list[str] = []
        failed: set[Recipient] = set()
        sent = False
        shares = plan([(r.id, r.envoye_a) for r in pending], recipients)
        if not recipients:
            digest = kind.render(ctx.veille, _items(pending), when=ctx.now,
                                 broken=fetched.broken)
            result.digest = digest
            if digest is None:
                return []
            shares, failures = [], ["aucun destinataire configuré"]
        for share in shares:
            rows = [by_id[i] for i in share.item_ids]
            digest = kind.render(ctx.veille, _items(rows), when=ctx.now, broken=fetched.broken)
            if digest is not None and rows:
                digest = await self._summarized(digest)
            if result.digest is None:
                result.digest = digest
            if digest is None:
                continue
            base = digest_key(veille.nom, [r.cle for r in rows], when)
            for recipient in share.recipients:
                try:
                    await self._send(recipient, digest, f"{base}:{recipient.role}:"
                                                        f"{recipient.tag}")
                except Exception as exc:
                    failures.append(f"destinataire {recipient.who!r} injoignable "
                                    f"({one_line(exc, 150)})")
                    log.warning("veille %s: digest for %s not queued: %s", veille.nom,
                                recipient.who, exc)
                    failed.add(recipient)
                    continue
                sent = True
                await self.store.record_sent(veille.id, share.item_ids, recipient.ident)
                for item_id in share.item_ids:
                    have[item_id].add(recipient.ident)
        if failures:  # Ludo hears of it once, and once when it works again
            await self._alerts(veille, {SENDING: "; ".join(failures)[:500]}, set(), ctx.now)
        elif shares:
            await self._alerts(veille, {}, {SENDING}, ctx.now)
        if failures and not sent and len(failed) == len(recipients):  # nobody can get it
            raise RunFailed("le résumé n'a pu être envoyé à aucun destinataire : "
                            + "; ".join(failures), alerted=True)
        _crash_point("veille:after_send")
        done = delivered([(i, have[i]) for i in by_id], recipients)
        await self.store.mark_reported(veille.id, done)
        result.reported = _items([by_id[i] for i in done])
        if len(done) < len(pending):
            failures.append(f"{len(pending) - len(done)} élément(s) pas encore reçus par tous "
                            "les destinataires : ils leur seront envoyés au prochain passage")
        return failures

    async def _send(self, recipient: Recipient, digest: Digest, key: str) -> None:
        to, cc = self._resolve(recipient.who)
        if recipient.role == "courriel":
            await self.services.notify(to, digest.text, key=key, subject=digest.subject,
                                       html=digest.html, attachments=digest.attachments,
                                       cc=cc, kind="push")
        else:
            await self.services.notify(to, digest.summary or digest.text, key=key, kind="push")

    async def _alerts(self, veille: VeilleRow, broken: dict[str, str], healthy: set[str],
                      now: datetime) -> None:
        """Ludo hears of a source's outage once, and once more when it recovers: one
        message per run for all the sources that broke (an ADEME outage breaks twelve
        postcodes at once), one for all those that came back."""
        told: list[tuple[str, str, datetime]] = []
        for source, reason in sorted(broken.items()):
            state = await self.store.source_broke(veille.id, source, reason, now)
            if state.alerte_le is None:  # not yet told for this outage
                told.append((source, reason, state.depuis or now))
        if told:
            since = f"{min(t[2] for t in told).astimezone(self.tz):%d/%m/%Y à %H:%M}"
            if len(told) == 1:
                what = f"{_what(told[0][0])} est en panne depuis le {since} ({told[0][1]})"
            else:
                what = (f"{len(told)} sources sont en panne depuis le {since} : "
                        + " ; ".join(f"{_what(s, short=True)} ({r})" for s, r, _ in told))
            text = (f"Veille « {veille.nom} » : {what}. Je ne te le redirai pas à chaque "
                    "passage ; je te préviendrai quand cela refonctionnera.")
            first = min(t[2] for t in told)
            key = f"veille:{veille.nom}:panne:{_sources_key(told)}:{first.isoformat()}"
            if await self._tell_ludo(text[:3000], key):
                for source, _, _ in told:
                    await self.store.source_alerted(veille.id, source, now)
        back: list[tuple[str, datetime]] = []
        for source in sorted(healthy):
            outage = await self.store.source_recovered(veille.id, source)
            if outage is not None and outage.alerte_le is not None:
                back.append((source, outage.depuis or now))
        if back:
            began = min(b[1] for b in back)
            what = (f"{_what(back[0][0])} refonctionne" if len(back) == 1 else
                    f"{len(back)} sources refonctionnent : "
                    + ", ".join(_what(s, short=True) for s, _ in back))
            await self._tell_ludo(
                f"Veille « {veille.nom} » : {what} (en panne depuis le "
                f"{began.astimezone(self.tz):%d/%m/%Y à %H:%M}).",
                f"veille:{veille.nom}:retour:{_sources_key(back)}:{began.isoformat()}")

    async def _tell_ludo(self, text: str, key: str) -> bool:
        try:
            await self.services.notify(OWNER, text, key=key[:300], kind="push")
        except Exception as exc:  # told next run: the state says he was not
            log.warning("alert %s not queued: %s", key, exc)
            return False
        return True


def _what(source: str, *, short: bool = False) -> str:
    """A source's name in Ludo's alert."""
    if source == WHOLE_FETCH:
        return "la récupération"
    if source == SENDING:
        return "l'envoi du résumé"
    if source == RUN:
        return "le passage"
    return f"« {source} »" if short else f"la source « {source} »"


def _sources_key(entries: list[Any]) -> str:
    """The sources of one alert in its notify key: the name of one, a hash of several."""
    names = sorted(str(e[0]) for e in entries)
    if len(names) == 1 and len(names[0]) <= 60:
        return names[0]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def _items(rows: list[ItemRow]) -> list[SourceItem]:
    return [SourceItem(r.cle, r.source or "", r.donnees) for r in rows]


def _unique(items: list[SourceItem]) -> list[SourceItem]:
    seen: dict[str, SourceItem] = {}
    for item in items:
        seen.setdefault(item.key, item)
    return list(seen.values())


def _problems(fetched: Fetched) -> list[str]:
    problems = [f"source {s} en panne : {r}" for s, r in sorted(fetched.broken.items())]
    if fetched.partial:
        problems.append(f"passage partiel : {fetched.partial}")
    return problems


CRASH_ENV = "AXI_TEST_CRASH_AT"


def _crash_point(name: str) -> None:
    """Test-only: `veille:after_store` (items stored, nothing sent) and
    `veille:after_send` (the digest queued, its items not yet marked) kill the process
    at the worst moments, to prove a rerun loses nothing and sends nothing twice."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(137)
