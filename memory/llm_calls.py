"""The LLM call log (`appels_llm`): every attempt the router makes is written here, so
the share of replies answered locally (target ≥ 80 %) and the month's Claude spend (the
budget cap) can be computed, with the local server's own timings (cache hits, durations,
queue wait) from which `memory/llm_status.py` computes the figures of `axi llm status`.

The memory layer knows nothing of the LLM clients: an attempt arrives as plain fields, and
the composition root maps the router's records onto them (`bot/llm_wiring.py`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from memory.llm_status import WINDOWS_DAYS, TimedCall, WindowFigures, local_status

PARIS = "Europe/Paris"


class LLMCallsMixin:
    db: Any

    async def record_llm_call(
        self,
        *,
        provider: str,
        model: str,
        task: str,
        tokens_in: int = 0,
        tokens_out: int = 0,
        latency_ms: int = 0,
        ok: bool = True,
        error: str | None = None,
        fallback_reason: str | None = None,
        cost_eur: float = 0.0,
        cached_tokens: int | None = None,
        cached_estimated: bool | None = None,
        evaluated_tokens: int | None = None,
        prompt_ms: int | None = None,
        generation_ms: int | None = None,
        load_ms: int | None = None,
        total_ms: int | None = None,
        queue_ms: int | None = None,
    ) -> int:
        """Store one attempt against one provider ("ollama", "anthropic"); return its id.
        The timings are the local server's (None when unknown: Claude, older servers);
        `queue_ms` is the wait in Axi's own queue before the call."""
        async with self.db.sessions.begin() as session:
            new_id = (
                await session.execute(
                    text(
                        "INSERT INTO appels_llm (fournisseur, modele, tache, jetons_entree, "
                        "jetons_sortie, latence_ms, succes, erreur, raison_repli, cout_eur, "
                        "jetons_caches, caches_estimes, jetons_evalues, duree_prompt_ms, "
                        "duree_generation_ms, duree_chargement_ms, duree_totale_ms, "
                        "attente_ms) "
                        "VALUES (:f, :m, :t, :ji, :jo, :l, :ok, :e, :r, :c, :jc, :ce, :jv, "
                        ":dp, :dg, :dc, :dt, :a) RETURNING id"
                    ),
                    {"f": provider, "m": model, "t": task, "ji": tokens_in, "jo": tokens_out,
                     "l": latency_ms, "ok": ok, "e": error, "r": fallback_reason,
                     "c": cost_eur, "jc": cached_tokens, "ce": cached_estimated,
                     "jv": evaluated_tokens, "dp": prompt_ms, "dg": generation_ms,
                     "dc": load_ms, "dt": total_ms, "a": queue_ms},
                )
            ).scalar_one()
        return int(new_id)

    async def llm_timing_rows(self, days: int = max(WINDOWS_DAYS)) -> list[TimedCall]:
        """The calls of the last `days` days with what the status figures need."""
        sql = text(
            "SELECT extract(epoch FROM now() - cree_le) AS age_s, fournisseur, modele, succes, "
            "jetons_sortie, jetons_evalues, jetons_caches, caches_estimes, duree_prompt_ms, "
            "duree_generation_ms, duree_chargement_ms, duree_totale_ms, attente_ms "
            "FROM appels_llm WHERE cree_le >= now() - make_interval(days => :d)"
        )
        async with self.db.sessions() as session:
            rows = (await session.execute(sql, {"d": int(days)})).all()
        return [
            TimedCall(age_s=float(r.age_s), provider=r.fournisseur, model=r.modele,
                      ok=r.succes, tokens_out=r.jetons_sortie, evaluated_tokens=r.jetons_evalues,
                      cached_tokens=r.jetons_caches, cached_estimated=r.caches_estimes,
                      prompt_ms=r.duree_prompt_ms, generation_ms=r.duree_generation_ms,
                      load_ms=r.duree_chargement_ms, total_ms=r.duree_totale_ms,
                      queue_ms=r.attente_ms)
            for r in rows
        ]

    async def llm_local_status(self, windows: tuple[int, ...] = WINDOWS_DAYS
                               ) -> list[WindowFigures]:
        """The local model's measured figures over each window (`axi llm status`)."""
        return local_status(await self.llm_timing_rows(max(windows)), windows)

    async def llm_usage(self, days: int = 30) -> dict[str, Any]:
        """Totals over the last `days` days. `local_share` is the share of successful
        replies answered by the local model (None when there were none)."""
        sql = text(
            "SELECT count(*) AS calls, "
            "count(*) FILTER (WHERE succes) AS replies, "
            "count(*) FILTER (WHERE succes AND fournisseur = 'ollama') AS local_replies, "
            "count(*) FILTER (WHERE succes AND fournisseur <> 'ollama') AS remote_replies, "
            "count(*) FILTER (WHERE NOT succes) AS failures, "
            "count(*) FILTER (WHERE raison_repli IS NOT NULL AND fournisseur <> 'ollama') "
            "AS fallbacks, "
            "coalesce(sum(jetons_entree), 0) AS tokens_in, "
            "coalesce(sum(jetons_sortie), 0) AS tokens_out, "
            "coalesce(sum(cout_eur), 0) AS spend_eur "
            "FROM appels_llm WHERE cree_le >= now() - make_interval(days => :d)"
        )
        async with self.db.sessions() as session:
            row = (await session.execute(sql, {"d": int(days)})).one()
        replies = int(row.replies)
        return {
            "days": int(days),
            "calls": int(row.calls),
            "replies": replies,
            "local_replies": int(row.local_replies),
            "remote_replies": int(row.remote_replies),
            "failures": int(row.failures),
            "fallbacks": int(row.fallbacks),
            "local_share": (int(row.local_replies) / replies) if replies else None,
            "tokens_in": int(row.tokens_in),
            "tokens_out": int(row.tokens_out),
            "spend_eur": float(row.spend_eur),
        }

    async def claude_spend_this_month(self, *, timezone: str = PARIS) -> float:
        """EUR spent on Claude since the start of the current month in `timezone`."""
        sql = text(
            "SELECT coalesce(sum(cout_eur), 0) FROM appels_llm "
            "WHERE fournisseur = 'anthropic' AND cree_le >= "
            "(date_trunc('month', now() AT TIME ZONE :tz) AT TIME ZONE :tz)"
        )
        async with self.db.sessions() as session:
            value = (await session.execute(sql, {"tz": timezone})).scalar_one()
        return float(value)
