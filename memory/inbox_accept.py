"""Storing a channel's batch of inbound messages with its cursor: the inbox's write path,
and the one step of every poller between two fetches.

A channel confirms its source (Telegram's next `getUpdates`, the IMAP cursor) only once
its batch and the cursor are stored together, and whatever arrives meanwhile waits for
that. So a batch without files is stored, and the cursor moved, by ONE statement in
autocommit (a statement is atomic by itself: all of it or nothing), one round trip where
a transaction took one per message plus BEGIN, the cursor and COMMIT. Files, and
messages already stored (a redelivery), take the transaction's path or a second read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import text

from memory.messages import _COLUMNS, FILES, Accepted, _accept_in, _row

_CURSOR = ("INSERT INTO curseurs_canal (canal, cle, valeur) VALUES (:c, :k, :v) "
           "ON CONFLICT (canal, cle) DO UPDATE SET valeur = excluded.valeur, maj_le = now()")
ONE_STATEMENT_MAX = 1000
"""Messages one statement stores at most (10 parameters each: PostgreSQL takes 32,767);
a larger batch takes the transaction's path."""
_FIELDS = ("canal", "adresse", "verifie", "conversation", "ext", "fil", "texte", "pj", "recu",
           "meta")


def _values(i: int) -> str:
    return (f"('entrant', :canal_{i}, :adresse_{i}, :verifie_{i}, :conversation_{i}, "
            f":ext_{i}, :fil_{i}, :texte_{i}, CAST(:pj_{i} AS jsonb), "
            f"coalesce(CAST(:recu_{i} AS timestamptz), now()), CAST(:meta_{i} AS jsonb), "
            "'en_attente')")


class InboxAcceptMixin:
    db: Any

    async def accept_many(
        self, items: Sequence[dict[str, Any]], *, cursor: tuple[str, str, str] | None = None
    ) -> list[Accepted]:
        """Store several inbound messages (each as `inbound_params` makes it) and move a
        channel's cursor (canal, cle, valeur) at once, all or nothing: the channel
        acknowledges its source up to the cursor only after this returns, so a crash in
        between redelivers messages that are then recognised (no loss, no duplicate).
        The result is in the order of `items`; their ids too (a conversation's order)."""
        if 0 < len(items) <= ONE_STATEMENT_MAX and not any(p.get(FILES) for p in items):
            return await self._accept_in_one_statement(items, cursor)
        async with self.db.sessions.begin() as session:
            done = [await _accept_in(session, params) for params in items]
            if cursor is not None:
                await session.execute(text(_CURSOR),
                                      {"c": cursor[0], "k": cursor[1], "v": cursor[2]})
        return done

    async def _accept_in_one_statement(
        self, items: Sequence[dict[str, Any]], cursor: tuple[str, str, str] | None
    ) -> list[Accepted]:
        params: dict[str, Any] = {}
        for i, item in enumerate(items):
            params.update({f"{name}_{i}": item[name] for name in _FIELDS})
        sql = ""
        if cursor is not None:  # a data-modifying WITH runs exactly once, whatever the rest
            sql = f"WITH curseur AS ({_CURSOR}) "
            params.update({"c": cursor[0], "k": cursor[1], "v": cursor[2]})
        # the rows are inserted in the order of VALUES: their ids keep the batch's order
        sql += ("INSERT INTO messages (sens, canal, adresse, verifie, conversation, "
                "identifiant_externe, reference_fil, texte, pieces_jointes, recu_le, metadata, "
                "etat) VALUES " + ", ".join(_values(i) for i in range(len(items)))
                + " ON CONFLICT (canal, identifiant_externe) WHERE sens = 'entrant' "
                f"DO NOTHING RETURNING {_COLUMNS}")
        async with self.db.reads() as session:  # autocommit: the statement is the transaction
            new = {(r.canal, r.identifiant_externe): r
                   for r in (await session.execute(text(sql), params)).all()}
            keys = [(item["canal"], item["ext"]) for item in items]
            stored: dict[tuple[str, str], Any] = {}
            if any(key not in new for key in keys):  # a redelivery: the row stored before
                rows = (await session.execute(text(
                    f"SELECT {_COLUMNS} FROM messages WHERE sens = 'entrant' AND "
                    "(canal, identifiant_externe) IN (SELECT * FROM unnest("
                    "CAST(:canals AS text[]), CAST(:exts AS text[])))"),
                    {"canals": [k[0] for k in keys], "exts": [k[1] for k in keys]})).all()
                stored = {(r.canal, r.identifiant_externe): r for r in rows}
        done: list[Accepted] = []
        for key in keys:
            row = new.pop(key, None)  # the first of two same ids in a batch is the new one
            if row is not None:
                stored[key] = row
                done.append(Accepted(_row(row), duplicate=False))
            else:
                done.append(Accepted(_row(stored[key]), duplicate=True))
        return done
