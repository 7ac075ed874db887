"""Veilles, their runs, the items they saw and their sources' states (issue 12).

Why here: the engine (jobs/engine.py) must never lose an item nor report one twice, across
crashes and across two `axi` processes. So every fact it relies on is a row: an item is
stored once per veille (`ON CONFLICT DO NOTHING`), reported only when its digest was
queued (`signale_le`), each run is recorded (the catch-up after a downtime is computed
from the runs), each source's outage is remembered (Ludo is alerted once per outage),
and the watermarks live in `curseurs_canal` (canal `veille:<nom>`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import AlreadyExists, InvalidInput, NotFound

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,22}")
"""A veille's name: a short slug (`veille:<nom>` must fit curseurs_canal.canal, 30)."""
RUN_STATES = ("en_cours", "ok", "partiel", "echec", "ignore", "essai")
TRIGGERS = ("planifie", "rattrapage", "manuel")
RECIPIENT_ROLES = ("courriel", "resume")
_VEILLE_COLUMNS = "id, nom, type, config, horaire, destinataires, active, cree_le, maj_le"
_RUN_COLUMNS = ("id, veille_id, debut, fin, etat, vus, nouveaux, erreur, declenchement, "
                "prevu_pour")


@dataclass(frozen=True)
class VeilleRow:
    id: int
    nom: str
    type: str
    config: dict[str, Any]
    horaire: str
    destinataires: dict[str, Any]
    active: bool
    cree_le: datetime
    maj_le: datetime


@dataclass(frozen=True)
class RunRow:
    id: int
    veille_id: int
    debut: datetime
    fin: datetime | None
    etat: str
    vus: int
    nouveaux: int
    erreur: str | None
    declenchement: str
    prevu_pour: datetime | None


@dataclass(frozen=True)
class ItemRow:
    id: int
    cle: str
    source: str | None
    donnees: dict[str, Any]
    vu_le: datetime
    signale_le: datetime | None
    envoye_a: tuple[str, ...] = ()
    """The recipients (their short hash) whose digest with this item is queued."""


@dataclass(frozen=True)
class SourceState:
    source: str
    en_panne: bool
    depuis: datetime | None
    derniere_erreur: str | None
    alerte_le: datetime | None


@dataclass(frozen=True)
class NewItem:
    cle: str
    source: str | None
    donnees: Mapping[str, Any]
    reported: bool = False
    """Stored already reported: a silent baseline (a competitor's first listings)."""


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _veille(row: Any) -> VeilleRow:
    return VeilleRow(id=row.id, nom=row.nom, type=row.type, config=_json(row.config) or {},
                     horaire=row.horaire, destinataires=_json(row.destinataires) or {},
                     active=row.active, cree_le=row.cree_le, maj_le=row.maj_le)


def _run(row: Any) -> RunRow:
    return RunRow(id=row.id, veille_id=row.veille_id, debut=row.debut, fin=row.fin,
                  etat=row.etat, vus=row.vus, nouveaux=row.nouveaux, erreur=row.erreur,
                  declenchement=row.declenchement, prevu_pour=row.prevu_pour)


# ------------------------------------------------------------------ validation (pure)
def check_name(nom: str) -> str:
    if not isinstance(nom, str) or NAME.fullmatch(nom) is None:
        raise InvalidInput(f"a veille's name is 1-23 lowercase letters, digits, '-' or '_', "
                           f"starting with a letter or digit, not {nom!r}")
    return nom


def check_schedule(horaire: str) -> str:
    """The shape of a schedule: 5 fields. What they mean (and the minimum interval) is
    checked by `jobs.cron.check_schedule` before a schedule reaches the store."""
    horaire = " ".join(str(horaire).split())
    if len(horaire.split(" ")) != 5:
        raise InvalidInput(f"a schedule is a cron line of 5 fields (minute hour day month "
                           f"weekday), e.g. '0 8 * * *', not {horaire!r}")
    return horaire


def check_config(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise InvalidInput("a veille's config is a JSON object")
    return config


def check_recipients(destinataires: Any) -> dict[str, Any]:
    """{"courriel": [...], "resume": [...]}: lists of recipients ('agence', 'créateur', a
    person's name or a raw address)."""
    if not isinstance(destinataires, dict):
        raise InvalidInput('recipients are a JSON object like {"courriel": ["agence"], '
                           '"resume": ["créateur"]}')
    for role, who in destinataires.items():
        if role not in RECIPIENT_ROLES:
            raise InvalidInput(f"unknown recipient role {role!r} (use "
                               f"{', '.join(RECIPIENT_ROLES)})")
        if not isinstance(who, list) or not all(isinstance(w, str) and w.strip() for w in who):
            raise InvalidInput(f"recipients of {role!r} are a list of non-empty names or "
                               "addresses")
    return destinataires


class VeillesMixin:
    db: Any

    # ------------------------------------------------------------------ veilles
    async def list_veilles(self, *, active_only: bool = False) -> list[VeilleRow]:
        where = " WHERE active" if active_only else ""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_VEILLE_COLUMNS} FROM veilles{where} ORDER BY nom"))).all()
        return [_veille(r) for r in rows]

    async def get_veille(self, nom: str) -> VeilleRow:
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                f"SELECT {_VEILLE_COLUMNS} FROM veilles WHERE nom = :n"), {"n": nom})
            ).one_or_none()
        if row is None:
            raise NotFound(f"no veille named {nom!r} (see `axi veille list`)")
        return _veille(row)

    async def add_veille(self, nom: str, type_: str, horaire: str, *,
                         config: Any = None, destinataires: Any = None, active: bool = True,
                         known_types: Collection[str] | None = None) -> VeilleRow:
        check_name(nom)
        if known_types is not None and type_ not in known_types:
            raise InvalidInput(f"unknown veille type {type_!r} (known: "
                               f"{', '.join(sorted(known_types))})")
        horaire = check_schedule(horaire)
        config = check_config({} if config is None else config)
        destinataires = check_recipients(
            {"courriel": ["agence"], "resume": ["créateur"]} if destinataires is None
            else destinataires)
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "INSERT INTO veilles (nom, type, config, horaire, destinataires, active) "
                "VALUES (:n, :t, CAST(:c AS jsonb), :h, CAST(:d AS jsonb), :a) "
                f"ON CONFLICT (nom) DO NOTHING RETURNING {_VEILLE_COLUMNS}"),
                {"n": nom, "t": type_, "c": json.dumps(config, ensure_ascii=False), "h": horaire,
                 "d": json.dumps(destinataires, ensure_ascii=False), "a": active})
            ).one_or_none()
        if row is None:
            raise AlreadyExists(f"a veille named {nom!r} already exists")
        return _veille(row)

    async def edit_veille(self, nom: str, *, horaire: str | None = None, config: Any = None,
                          destinataires: Any = None, active: bool | None = None) -> VeilleRow:
        sets: list[str] = []
        params: dict[str, Any] = {"n": nom}
        if horaire is not None:
            sets.append("horaire = :h")
            params["h"] = check_schedule(horaire)
        if config is not None:
            sets.append("config = CAST(:c AS jsonb)")
            params["c"] = json.dumps(check_config(config), ensure_ascii=False)
        if destinataires is not None:
            sets.append("destinataires = CAST(:d AS jsonb)")
            params["d"] = json.dumps(check_recipients(destinataires), ensure_ascii=False)
        if active is not None:
            sets.append("active = :a")
            params["a"] = active
        if not sets:
            raise InvalidInput("nothing to change (give --schedule, --config or --recipients)")
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                f"UPDATE veilles SET {', '.join(sets)}, maj_le = clock_timestamp() "
                f"WHERE nom = :n RETURNING {_VEILLE_COLUMNS}"), params)).one_or_none()
        if row is None:
            raise NotFound(f"no veille named {nom!r} (see `axi veille list`)")
        return _veille(row)

    async def veilles_version(self) -> tuple[int, datetime | None]:
        """(count, latest maj_le): the scheduler rebuilds its jobs when this changes."""
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                "SELECT count(*) AS n, max(maj_le) AS m FROM veilles"))).one()
        return int(row.n), row.m

    # ------------------------------------------------------------------ runs
    async def start_run(self, veille_id: int, *, declenchement: str,
                        prevu_pour: datetime | None, etat: str = "en_cours",
                        erreur: str | None = None) -> int:
        if declenchement not in TRIGGERS or etat not in RUN_STATES:
            raise InvalidInput(f"bad run trigger {declenchement!r} or state {etat!r}")
        finished = "clock_timestamp()" if etat != "en_cours" else "NULL"
        async with self.db.sessions.begin() as session:
            return int(await session.scalar(text(
                "INSERT INTO passages_veille (veille_id, debut, fin, etat, erreur, "
                f"declenchement, prevu_pour) VALUES (:v, clock_timestamp(), {finished}, :e, "
                ":err, :d, :p) RETURNING id"),
                {"v": veille_id, "e": etat, "err": erreur, "d": declenchement,
                 "p": prevu_pour}))

    async def finish_run(self, run_id: int, etat: str, *, vus: int = 0, nouveaux: int = 0,
                         erreur: str | None = None) -> None:
        if etat not in RUN_STATES or etat == "en_cours":
            raise InvalidInput(f"bad final run state {etat!r}")
        async with self.db.sessions.begin() as session:
            await session.execute(text(
                "UPDATE passages_veille SET fin = clock_timestamp(), etat = :e, vus = :vu, "
                "nouveaux = :n, erreur = :err WHERE id = :id"),
                {"e": etat, "vu": vus, "n": nouveaux, "err": erreur, "id": run_id})

    async def abandon_runs(self, veille_id: int, erreur: str) -> int:
        """Runs left `en_cours` by a process that died: failed (the caller holds the
        veille's lock, so none of them is still running)."""
        async with self.db.sessions.begin() as session:
            result = await session.execute(text(
                "UPDATE passages_veille SET fin = clock_timestamp(), etat = 'echec', "
                "erreur = :err WHERE veille_id = :v AND etat = 'en_cours'"),
                {"v": veille_id, "err": erreur})
        return int(result.rowcount or 0)

    async def run_history(self, veille_id: int, *, limit: int = 20) -> list[RunRow]:
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_RUN_COLUMNS} FROM passages_veille WHERE veille_id = :v "
                "ORDER BY debut DESC, id DESC LIMIT :l"), {"v": veille_id, "l": limit})).all()
        return [_run(r) for r in rows]

    async def had_successful_run(self, veille_id: int) -> bool:
        async with self.db.sessions() as session:
            return bool(await session.scalar(text(
                "SELECT EXISTS (SELECT 1 FROM passages_veille WHERE veille_id = :v "
                "AND etat IN ('ok', 'partiel'))"), {"v": veille_id}))

    async def ran_since(self, veille_id: int, since: datetime) -> bool:
        """A run (other than one skipped for the lock) started at or after `since`, or
        was for a schedule at or after it."""
        async with self.db.sessions() as session:
            return bool(await session.scalar(text(
                "SELECT EXISTS (SELECT 1 FROM passages_veille WHERE veille_id = :v "
                "AND etat <> 'ignore' AND (debut >= :s OR prevu_pour >= :s))"),
                {"v": veille_id, "s": since}))

    # ------------------------------------------------------------------ items
    async def known_keys(self, veille_id: int, keys: Iterable[str]) -> set[str]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return set()
        async with self.db.sessions() as session:
            rows = await session.execute(text(
                "SELECT cle FROM elements_veille WHERE veille_id = :v AND cle = ANY(:k)"),
                {"v": veille_id, "k": keys})
            return {r.cle for r in rows}

    async def sources_with_items(self, veille_id: int, sources: Iterable[str]) -> set[str]:
        sources = list(dict.fromkeys(sources))
        if not sources:
            return set()
        async with self.db.sessions() as session:
            rows = await session.execute(text(
                "SELECT DISTINCT source FROM elements_veille WHERE veille_id = :v "
                "AND source = ANY(:s)"), {"v": veille_id, "s": sources})
            return {r.source for r in rows}

    async def store_items(self, veille_id: int, run_id: int | None,
                          items: Iterable[NewItem]) -> list[str]:
        """Store the items not stored yet (one transaction); the keys actually stored."""
        items = list(items)
        if not items:
            return []
        async with self.db.sessions.begin() as session:
            rows = await session.execute(text(
                "INSERT INTO elements_veille (veille_id, cle, source, donnees, passage_id, "
                "signale_le) SELECT :v, x.cle, x.source, CAST(x.donnees AS jsonb), :p, "
                "CASE WHEN x.signale THEN clock_timestamp() END "
                "FROM unnest(CAST(:c AS text[]), CAST(:s AS text[]), CAST(:d AS text[]), "
                "CAST(:r AS boolean[])) AS x(cle, source, donnees, signale) "
                "ON CONFLICT (veille_id, cle) DO NOTHING RETURNING cle"),
                {"v": veille_id, "p": run_id, "c": [i.cle for i in items],
                 "s": [i.source for i in items],
                 "d": [json.dumps(dict(i.donnees), ensure_ascii=False, default=str)
                       for i in items],
                 "r": [i.reported for i in items]})
            return [r.cle for r in rows]

    async def unreported_items(self, veille_id: int) -> list[ItemRow]:
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                "SELECT id, cle, source, donnees, vu_le, signale_le, envoye_a "
                "FROM elements_veille WHERE veille_id = :v AND signale_le IS NULL ORDER BY id"),
                {"v": veille_id})).all()
        return [ItemRow(id=r.id, cle=r.cle, source=r.source, donnees=_json(r.donnees) or {},
                        vu_le=r.vu_le, signale_le=r.signale_le,
                        envoye_a=tuple(r.envoye_a or ())) for r in rows]

    async def record_sent(self, veille_id: int, item_ids: Iterable[int], recipient: str) -> int:
        """`recipient`'s digest with these items is queued: never sent them again."""
        ids = list(item_ids)
        if not ids:
            return 0
        async with self.db.sessions.begin() as session:
            result = await session.execute(text(
                "UPDATE elements_veille SET envoye_a = array_append(envoye_a, :r) "
                "WHERE veille_id = :v AND id = ANY(:i) AND NOT (:r = ANY(envoye_a))"),
                {"v": veille_id, "i": ids, "r": recipient})
        return int(result.rowcount or 0)

    async def mark_reported(self, veille_id: int, item_ids: Iterable[int]) -> int:
        ids = list(item_ids)
        if not ids:
            return 0
        async with self.db.sessions.begin() as session:
            result = await session.execute(text(
                "UPDATE elements_veille SET signale_le = clock_timestamp() "
                "WHERE veille_id = :v AND id = ANY(:i) AND signale_le IS NULL"),
                {"v": veille_id, "i": ids})
        return int(result.rowcount or 0)

    async def item_counts(self) -> dict[int, tuple[int, int]]:
        """veille id → (items stored, items not reported yet)."""
        async with self.db.sessions() as session:
            rows = await session.execute(text(
                "SELECT veille_id, count(*) AS n, count(*) FILTER (WHERE signale_le IS NULL) "
                "AS u FROM elements_veille GROUP BY veille_id"))
            return {r.veille_id: (int(r.n), int(r.u)) for r in rows}

    # ------------------------------------------------------------------ sources
    async def source_states(self, veille_id: int) -> list[SourceState]:
        async with self.db.sessions() as session:
            rows = await session.execute(text(
                "SELECT source, en_panne, depuis, derniere_erreur, alerte_le FROM etat_sources "
                "WHERE veille_id = :v ORDER BY source"), {"v": veille_id})
            return [SourceState(r.source, r.en_panne, r.depuis, r.derniere_erreur, r.alerte_le)
                    for r in rows]

    async def source_broke(self, veille_id: int, source: str, erreur: str,
                           now: datetime) -> SourceState:
        """Record that `source` is broken (since now, or since it first broke); the state
        says whether Ludo was already alerted of this outage (alerte_le set: a recovery
        clears it)."""
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "INSERT INTO etat_sources (veille_id, source, en_panne, depuis, derniere_erreur)"
                " VALUES (:v, :s, true, :now, :e) ON CONFLICT (veille_id, source) DO UPDATE SET"
                " en_panne = true, derniere_erreur = excluded.derniere_erreur,"
                " depuis = CASE WHEN etat_sources.en_panne THEN etat_sources.depuis"
                " ELSE excluded.depuis END"
                " RETURNING source, en_panne, depuis, derniere_erreur, alerte_le"),
                {"v": veille_id, "s": source, "now": now, "e": erreur[:500]})).one()
        return SourceState(row.source, row.en_panne, row.depuis, row.derniere_erreur,
                           row.alerte_le)

    async def source_alerted(self, veille_id: int, source: str, when: datetime) -> None:
        async with self.db.sessions.begin() as session:
            await session.execute(text(
                "UPDATE etat_sources SET alerte_le = :w WHERE veille_id = :v AND source = :s"),
                {"v": veille_id, "s": source, "w": when})

    async def source_recovered(self, veille_id: int, source: str) -> SourceState | None:
        """Mark a broken source as working again (the next outage is a new one); the
        outage it had (depuis, alerte_le) when it was broken, else None."""
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "UPDATE etat_sources e SET en_panne = false, depuis = NULL, alerte_le = NULL "
                "FROM etat_sources old "
                "WHERE e.veille_id = :v AND e.source = :s AND e.en_panne "
                "AND old.veille_id = e.veille_id AND old.source = e.source "
                "RETURNING old.source, old.en_panne, old.depuis, old.derniere_erreur, "
                "old.alerte_le"), {"v": veille_id, "s": source})).one_or_none()
        if row is None:
            return None
        return SourceState(row.source, row.en_panne, row.depuis, row.derniere_erreur,
                           row.alerte_le)

    # ------------------------------------------------------------------ watermarks
    async def read_watermarks(self, nom: str) -> dict[str, str]:
        async with self.db.sessions() as session:
            rows = await session.execute(text(
                "SELECT cle, valeur FROM curseurs_canal WHERE canal = :c"),
                {"c": f"veille:{nom}"})
            return {r.cle: r.valeur for r in rows}

    async def write_watermarks(self, nom: str, marks: Mapping[str, str]) -> None:
        if not marks:
            return
        async with self.db.sessions.begin() as session:
            for key, value in marks.items():
                await session.execute(text(
                    "INSERT INTO curseurs_canal (canal, cle, valeur) VALUES (:c, :k, :v) "
                    "ON CONFLICT (canal, cle) DO UPDATE SET valeur = excluded.valeur, "
                    "maj_le = now()"), {"c": f"veille:{nom}", "k": str(key)[:200],
                                        "v": str(value)})
