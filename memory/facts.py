"""Facts (sujet, prédicat, objet, confiance): added, confirmed, superseded, forgotten.

A fact is never silently overwritten. Adding a fact whose subject and predicate match a
current fact with another object supersedes the old one: it is kept, its validity ends
(`valide_jusqu_a`), its confidence is halved and it points to its replacement
(`remplace_par`). So "what did Axi believe, and since when" stays answerable.

A claim (`selon` = whoever made it) is what someone said who may not assert it as a fact
(bot/policy.py decides): it is stored attributed, with at most CLAIM_MAX_CONFIDENCE, never
supersedes a fact and is never superseded by one, is never public, and the readers that
feed prompts (facts_about, facts_about_people_named_in) leave claims out unless asked.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput, NotFound, row_id
from memory.records import FactChange, FactRecord
from memory.text import InvalidText, clean, clean_content, fold

_FACT_COLUMNS = (
    "id, sujet, predicat, objet, confiance, source_souvenir_id, cree_le, maj_le, "
    "valide_depuis, valide_jusqu_a, remplace_par, relation_id, public, selon, "
    "jamais_hors_serveur"
)
SUPERSEDED_CONFIDENCE_FACTOR = 0.5
CLAIM_MAX_CONFIDENCE = 0.3

_WORDS_ONLY = re.compile(r"[^0-9a-z]+")  # folded text to words; as in the SQL


def _row_to_fact(row: Any) -> FactRecord:
    return FactRecord(
        id=row.id, sujet=row.sujet, predicat=row.predicat, objet=row.objet,
        confiance=float(row.confiance if row.confiance is not None else 1.0),
        source_souvenir_id=row.source_souvenir_id, cree_le=row.cree_le, maj_le=row.maj_le,
        valide_depuis=row.valide_depuis, valide_jusqu_a=row.valide_jusqu_a,
        remplace_par=row.remplace_par, relation_id=row.relation_id, public=row.public,
        selon=row.selon, jamais_hors_serveur=row.jamais_hors_serveur,
    )


def _same(a: str, b: str) -> bool:
    return " ".join(fold(a).split()) == " ".join(fold(b).split())


class FactsMixin:
    db: Any

    async def add_fact(
        self,
        sujet: str,
        predicat: str,
        objet: str,
        *,
        confiance: float = 1.0,
        source_souvenir_id: int | None = None,
        relation_id: int | None = None,
        public: bool = False,
        multi_valued: bool = False,
        selon: str | None = None,
        local_only: bool = False,
    ) -> FactChange:
        """Add a fact; confirm it if already known; supersede contradicted ones.

        `multi_valued` (e.g. "aime") keeps other objects of the same predicate current.
        With `selon` (who said it), only a claim is stored: private, its confidence capped
        at CLAIM_MAX_CONFIDENCE; it confirms the same claim by the same source and
        supersedes nothing (outcome "claimed"); a current fact saying the same already
        makes it redundant (outcome "confirmed", nothing changed). `local_only`: learnt
        from what must never leave the server — the fact never reaches a fallback prompt.
        """
        try:
            sujet = clean_content(sujet, what="subject", limit=200)
            predicat = clean_content(predicat, what="predicate", limit=200)
            objet = clean_content(objet, what="object", limit=10_000)
            if selon is not None:
                selon = clean_content(selon, what="attribution", limit=300)
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        if not 0.0 <= confiance <= 1.0:
            raise InvalidInput(f"confidence must be between 0 and 1, not {confiance}")
        if selon is not None:
            confiance, public, multi_valued = min(confiance, CLAIM_MAX_CONFIDENCE), False, True
        async with self.db.sessions.begin() as session:
            # one writer per (subject, predicate) at a time
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(axi_pli(:s) || '|' || axi_pli(:p)))"),
                {"s": sujet, "p": predicat},
            )
            if source_souvenir_id is not None:
                found = await session.scalar(
                    text("SELECT 1 FROM souvenirs WHERE id = :id"), {"id": source_souvenir_id}
                )
                if not found:
                    raise NotFound(f"no souvenir #{source_souvenir_id}")
            current = (
                await session.execute(
                    text(
                        f"SELECT {_FACT_COLUMNS} FROM faits WHERE valide_jusqu_a IS NULL "
                        "AND axi_pli(sujet) = axi_pli(:s) AND axi_pli(predicat) = axi_pli(:p) "
                        "ORDER BY id FOR UPDATE"
                    ),
                    {"s": sujet, "p": predicat},
                )
            ).all()
            if selon is not None:
                for row in current:
                    if _same(row.objet, objet) and row.selon is None:
                        return FactChange(fact=_row_to_fact(row), outcome="confirmed")
                # only the same source's own claim is confirmed; facts are left alone
                current = [r for r in current if r.selon is not None and _same(r.selon, selon)]
            else:
                current = [r for r in current if r.selon is None]  # claims stay claims
            for row in current:
                if _same(row.objet, objet):
                    confirmed = (
                        await session.execute(
                            text(
                                "UPDATE faits SET maj_le = now(), "
                                "confiance = greatest(coalesce(confiance, 0), :c), "
                                "source_souvenir_id = coalesce(source_souvenir_id, :src) "
                                f"WHERE id = :id RETURNING {_FACT_COLUMNS}"
                            ),
                            {"c": confiance, "id": row.id, "src": source_souvenir_id},
                        )
                    ).one()
                    return FactChange(fact=_row_to_fact(confirmed), outcome="confirmed")
            new = (
                await session.execute(
                    text(
                        "INSERT INTO faits (sujet, predicat, objet, source_souvenir_id, "
                        "confiance, relation_id, public, selon, jamais_hors_serveur) VALUES "
                        f"(:s, :p, :o, :src, :c, :rid, :pub, :selon, :lo) RETURNING {_FACT_COLUMNS}"
                    ),
                    {"s": sujet, "p": predicat, "o": objet, "src": source_souvenir_id,
                     "c": confiance, "rid": relation_id, "pub": public, "selon": selon,
                     "lo": local_only},
                )
            ).one()
            superseded: list[FactRecord] = []
            if not multi_valued and current:
                rows = (
                    await session.execute(
                        text(
                            "UPDATE faits SET valide_jusqu_a = now(), maj_le = now(), "
                            "remplace_par = :new, confiance = coalesce(confiance, 1) * :f "
                            f"WHERE id = ANY(:ids) RETURNING {_FACT_COLUMNS}"
                        ),
                        {"new": new.id, "f": SUPERSEDED_CONFIDENCE_FACTOR,
                         "ids": [r.id for r in current]},
                    )
                ).all()
                superseded = [_row_to_fact(r) for r in rows]
        return FactChange(
            fact=_row_to_fact(new),
            outcome="claimed" if selon is not None else "superseded" if superseded
            else "created",
            superseded=superseded,
        )

    async def facts_about(
        self,
        subjects: str | list[str],
        *,
        include_history: bool = False,
        relation_id: int | None = None,
        limit: int = 100,
        include_claims: bool = False,
    ) -> list[FactRecord]:
        """Facts whose subject is one of `subjects` (accent/case-insensitive) or which are
        linked to `relation_id`; current ones only unless include_history; claims (what
        someone said who may not assert it) only with include_claims."""
        names = [subjects] if isinstance(subjects, str) else list(subjects)
        current = "" if include_history else " AND valide_jusqu_a IS NULL"
        if not include_claims:
            current += " AND selon IS NULL"
        params: dict[str, Any] = {"names": [fold(clean(n).strip()) for n in names], "k": limit}
        # two index-friendly halves (an OR across them made PostgreSQL scan every fact)
        sql = f"SELECT {_FACT_COLUMNS} FROM faits WHERE axi_pli(sujet) = ANY(:names){current}"
        if relation_id is not None:
            sql += (f" UNION SELECT {_FACT_COLUMNS} FROM faits WHERE relation_id = :rid"
                    f"{current}")
            params["rid"] = relation_id
        sql += " ORDER BY sujet, predicat, valide_depuis DESC, id DESC LIMIT :k"
        async with self.db.reads() as session:
            rows = (await session.execute(text(sql), params)).all()
        return [_row_to_fact(r) for r in rows]

    async def facts_about_people_named_in(
        self, message: str, *, exclude: str | None = None, limit: int = 30,
        include_claims: bool = False,
    ) -> list[FactRecord]:
        """Current facts about the people Axi knows whose name appears in `message`
        (accent/case-insensitive, whole words: "d'Élodie" and "Marie-Claire," count),
        except `exclude`; claims only with include_claims: one statement, the name
        matching done by PostgreSQL (it was a query for every name, then Python)."""
        sql = (
            # matches first (ARRAY(…) is computed once, so idx_faits_sujet_pli serves), then
            # the order: sorting inside made PostgreSQL walk idx_faits_sujet through every
            # fact (93 ms on 20,000 facts)
            f"WITH m AS MATERIALIZED (SELECT {_FACT_COLUMNS} FROM faits "
            "WHERE valide_jusqu_a IS NULL AND (selon IS NULL OR CAST(:claims AS boolean)) "
            "AND axi_pli(sujet) = ANY(ARRAY(SELECT axi_pli(r.personne) FROM relations r "
            "WHERE position(' ' || trim(regexp_replace(axi_pli(r.personne), '[^0-9a-z]+', ' ', "
            "'g')) || ' ' IN :folded) > 0 "
            "AND r.personne IS DISTINCT FROM CAST(:me AS text)))) "
            "SELECT * FROM m ORDER BY sujet, predicat, valide_depuis DESC, id DESC LIMIT :k"
        )
        async with self.db.reads() as session:
            rows = (await session.execute(text(sql), {
                "folded": f" {_WORDS_ONLY.sub(' ', fold(clean(message)))} ", "me": exclude,
                "k": limit, "claims": include_claims})).all()
        return [_row_to_fact(r) for r in rows]

    async def list_facts(self, *, include_history: bool = False, limit: int = 200) -> list[FactRecord]:
        sql = f"SELECT {_FACT_COLUMNS} FROM faits"
        if not include_history:
            sql += " WHERE valide_jusqu_a IS NULL"
        sql += " ORDER BY maj_le DESC, id DESC LIMIT :k"
        async with self.db.sessions() as session:
            rows = (await session.execute(text(sql), {"k": limit})).all()
        return [_row_to_fact(r) for r in rows]

    async def get_fact(self, fact_id: int) -> FactRecord:
        fact_id = row_id(fact_id, "fact")
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    text(f"SELECT {_FACT_COLUMNS} FROM faits WHERE id = :id"), {"id": fact_id}
                )
            ).one_or_none()
        if row is None:
            raise NotFound(f"no fact #{fact_id}")
        return _row_to_fact(row)

    async def forget_fact(self, fact_id: int, *, purge: bool = False) -> FactRecord:
        """End a fact's validity (kept in history), or delete it for good with purge."""
        fact_id = row_id(fact_id, "fact")
        async with self.db.sessions.begin() as session:
            if purge:
                await session.execute(
                    text("UPDATE faits SET remplace_par = NULL WHERE remplace_par = :id"),
                    {"id": fact_id},
                )
                row = (
                    await session.execute(
                        text(f"DELETE FROM faits WHERE id = :id RETURNING {_FACT_COLUMNS}"),
                        {"id": fact_id},
                    )
                ).one_or_none()
            else:
                row = (
                    await session.execute(
                        text(
                            "UPDATE faits SET valide_jusqu_a = coalesce(valide_jusqu_a, now()), "
                            f"maj_le = now() WHERE id = :id RETURNING {_FACT_COLUMNS}"
                        ),
                        {"id": fact_id},
                    )
                ).one_or_none()
        if row is None:
            raise NotFound(f"no fact #{fact_id}")
        return _row_to_fact(row)

    async def facts_mentioning(self, words: str, *, limit: int = 50,
                               include_claims: bool = False) -> list[FactRecord]:
        """Current facts (and claims, with include_claims: what /oublie may end) whose
        subject, predicate or object holds these words as whole words, accents and case
        ignored ("le" never matches "Ludovic")."""
        folded = " ".join(fold(words).split())
        if len(folded.replace(" ", "")) < 3:
            return []
        pattern = r"\m" + re.escape(folded).replace(r"\ ", r"\s+") + r"\M"
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_FACT_COLUMNS} FROM faits WHERE valide_jusqu_a IS NULL "
                "AND (selon IS NULL OR CAST(:claims AS boolean)) "
                "AND lower(axi_pli(sujet || ' ' || predicat || ' ' || objet)) "
                "~ :p ORDER BY id LIMIT :n"),
                {"p": pattern, "n": limit, "claims": include_claims})).all()
        return [_row_to_fact(r) for r in rows]

    async def forget_facts_matching(
        self, sujet: str, predicat: str, objet: str | None = None
    ) -> list[FactRecord]:
        """End the validity of current facts matching subject/predicate (and object)."""
        params: dict[str, Any] = {"s": sujet, "p": predicat}
        sql = (
            "UPDATE faits SET valide_jusqu_a = now(), maj_le = now() "
            "WHERE valide_jusqu_a IS NULL AND axi_pli(sujet) = axi_pli(:s) "
            "AND axi_pli(predicat) = axi_pli(:p)"
        )
        if objet is not None:
            sql += " AND axi_pli(objet) = axi_pli(:o)"
            params["o"] = objet
        async with self.db.sessions.begin() as session:
            rows = (await session.execute(text(sql + f" RETURNING {_FACT_COLUMNS}"), params)).all()
        return [_row_to_fact(r) for r in rows]
