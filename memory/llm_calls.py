"""The LLM call log (`appels_llm`): every attempt the router makes is written here, so
the share of replies answered locally (target ≥ 80 %) and the month's Claude spend (the
budget cap) can be computed.

The memory layer knows nothing of the LLM clients: an attempt arrives as plain fields, and
the composition root maps the router's records onto them (`bot/llm_wiring.py`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

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
    ) -> int:
        """Store one attempt against one provider ("ollama", "anthropic"); return its id."""
        async with self.db.sessions.begin() as session:
            new_id = (
                await session.execute(
                    text(
                        "INSERT INTO appels_llm (fournisseur, modele, tache, jetons_entree, "
                        "jetons_sortie, latence_ms, succes, erreur, raison_repli, cout_eur) "
                        "VALUES (:f, :m, :t, :ji, :jo, :l, :ok, :e, :r, :c) RETURNING id"
                    ),
                    {"f": provider, "m": model, "t": task, "ji": tokens_in, "jo": tokens_out,
                     "l": latency_ms, "ok": ok, "e": error, "r": fallback_reason,
                     "c": cost_eur},
                )
            ).scalar_one()
        return int(new_id)

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
