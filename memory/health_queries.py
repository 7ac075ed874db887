"""What `/health` and `/metrics` read from the database (issue 13 §2), in a few small
indexed queries: the queues' depths and their oldest waiting message, and each active
veille's last run (the backups' figures come from memory/operations.py).

Why a module of its own: the health report is assembled often (Uptime Kuma, Prometheus,
the component monitor), so each figure is one cheap query on an index the pipeline
already has, and the assembly (bot/health.py) stays apart from SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text


@dataclass(frozen=True)
class QueueFigures:
    """Messages waiting per queue, and how long the oldest has waited (None: empty)."""

    depths: dict[str, int]
    oldest_s: dict[str, float | None]


@dataclass(frozen=True)
class LastRun:
    """A veille's last finished run (ok, partiel, echec) and its last good one."""

    nom: str
    etat: str | None
    debut: datetime | None
    fin: datetime | None
    erreur: str | None
    dernier_ok: datetime | None


_QUEUES_SQL = """
SELECT
  (SELECT count(*) FROM messages WHERE sens = 'entrant' AND etat = 'en_attente') AS inbox,
  (SELECT count(*) FROM messages WHERE sens = 'sortant' AND etat = 'a_envoyer') AS outbox,
  (SELECT count(*) FROM souvenirs WHERE metadata->>'extraction' = 'a_faire') AS extraction,
  (SELECT extract(epoch FROM now() - min(recu_le)) FROM messages
    WHERE sens = 'entrant' AND etat = 'en_attente') AS inbox_oldest,
  (SELECT extract(epoch FROM now() - min(coalesce(prochain_essai, cree_le))) FROM messages
    WHERE sens = 'sortant' AND etat = 'a_envoyer'
      AND coalesce(prochain_essai, cree_le) <= now()) AS outbox_oldest
"""
"""The outbox's oldest counts from when a message became due: a push held for the end of
quiet hours, or waiting for its retry, is not late before then."""

_VEILLES_SQL = """
SELECT v.nom, r.etat, r.debut, r.fin, r.erreur, g.fin AS dernier_ok
FROM veilles v
LEFT JOIN LATERAL (
  SELECT etat, debut, fin, erreur FROM passages_veille
  WHERE veille_id = v.id AND etat IN ('ok', 'partiel', 'echec')
  ORDER BY debut DESC LIMIT 1) r ON true
LEFT JOIN LATERAL (
  SELECT fin FROM passages_veille WHERE veille_id = v.id AND etat = 'ok'
  ORDER BY debut DESC LIMIT 1) g ON true
WHERE v.active ORDER BY v.nom
"""

def _seconds(value: Any) -> float | None:
    return None if value is None else max(0.0, float(value))


class HealthQueriesMixin:
    db: Any

    async def queue_figures(self) -> QueueFigures:
        """inbox: inbound messages not answered yet; outbox: messages to send;
        extraction: souvenirs whose facts are still to extract."""
        async with self.db.sessions() as session:
            row = (await session.execute(text(_QUEUES_SQL))).one()
        return QueueFigures(
            depths={"inbox": int(row.inbox), "outbox": int(row.outbox),
                    "extraction": int(row.extraction)},
            oldest_s={"inbox": _seconds(row.inbox_oldest),
                      "outbox": _seconds(row.outbox_oldest)})

    async def veille_last_runs(self) -> list[LastRun]:
        """Each active veille's last finished run (None fields: it never ran)."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(_VEILLES_SQL))).all()
        return [LastRun(r.nom, r.etat, r.debut, r.fin, r.erreur, r.dernier_ok) for r in rows]
