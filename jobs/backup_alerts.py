"""The alert that follows a backup or a verification when it changed the state of its
kind: Ludo and Anthony hear of a failure once and of the recovery once. The rule is
backup_rules.transition; the previous state is the previous finished operation of the same
kind in `operations` (the table is the memory of it, across restarts and processes).
"""

from __future__ import annotations

import logging
from datetime import tzinfo
from typing import Any

from bot.jobs_contract import NotifyFn
from jobs.backup_rules import alert_key, alert_subject, alert_text, transition
from memory.operations import OperationRow
from memory.store import MemoryStore

log = logging.getLogger(__name__)

ALERT_RELATIONS = ("créateur", "administrateur")
OWNER = "@créateur"
"""bot.notify's recipient meaning Ludo (the console when nobody is créateur yet)."""


async def alert_if_changed(store: MemoryStore, notify: NotifyFn, op: OperationRow,
                           tz: tzinfo) -> None:
    """Tell Ludo and Anthony when this operation changed the state of its kind. An
    operation interrupted by a stop (never alerted) does not count as a failure."""
    previous = await store.last_operation(op.type, op.depot, before=op.id)
    while previous is not None and previous.details.get("interrompue"):
        previous = await store.last_operation(op.type, op.depot, before=previous.id)
    change = transition(previous.etat if previous else None, op.etat)
    if change is None:
        return
    last_good = await store.last_good_operation(op.type, op.depot)
    text = alert_text(op.type, op.depot, change, error=op.erreur,
                      when=(op.fin or op.debut).astimezone(tz),
                      last_good=(last_good.fin.astimezone(tz)
                                 if last_good is not None and last_good.fin else None))
    people: list[Any] = [p for p in await store.list_people()
                         if p.relation in ALERT_RELATIONS and not p.bloque]
    for person in people or [OWNER]:
        key = f"{alert_key(op.type, op.depot, change, op.id)}:{getattr(person, 'id', 0)}"
        try:
            await notify(person, text, key=key, kind="push",
                         subject=alert_subject(op.type, op.depot, change))
        except Exception as exc:  # the alert must not hide the operation's outcome
            log.warning("backup alert for %s not queued: %s",
                        getattr(person, "personne", "créateur"), exc)
