"""The site's contact requests (`demandes_contact`), stored before they are relayed to the
agency, so a crash or an SMTP outage never loses one: a request whose relay was never
queued (`relaye_le` NULL) is found again and relayed. Also the per-IP counts the site's
endpoints cap (contacts per hour, memos proposed per day).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text

from memory.errors import InvalidInput, row_id
from memory.text import InvalidText, clean, clean_content

_COLUMNS = "id, site, nom, email, telephone, message, bien, ip, cree_le, relaye_le"
MEMO_ACTION = "site.memo"
"""The confirmation a visitor's `#memo` becomes (bot/site_access.py registers it)."""


def contact_key(contact_id: int) -> str:
    """The key of the notification relaying contact request `contact_id` (to the agency,
    else Ludo): relayed once, and erased with the request (memory/forget.py)."""
    return f"contact:{int(contact_id)}"


@dataclass(frozen=True)
class ContactRecord:
    id: int
    site: str | None
    nom: str
    email: str
    telephone: str | None
    message: str
    bien: str | None
    ip: str | None
    cree_le: datetime
    relaye_le: datetime | None


def _optional(value: str | None, limit: int) -> str | None:
    """An optional field, cleaned of what PostgreSQL refuses (NUL, half an emoji)."""
    if value is None or not clean(value).strip():
        return None
    return clean(value).strip()[:limit]


class SiteContactsMixin:
    db: Any

    async def store_contact(self, *, nom: str, email: str, message: str,
                            telephone: str | None = None, bien: str | None = None,
                            site: str | None = None, ip: str | None = None) -> ContactRecord:
        try:
            nom = clean_content(nom, what="name", limit=200)
            email = clean_content(email, what="email", limit=254)
            message = clean_content(message, what="message", limit=5000)
        except InvalidText as exc:
            raise InvalidInput(str(exc)) from None
        async with self.db.sessions.begin() as session:
            row = (await session.execute(text(
                "INSERT INTO demandes_contact (site, nom, email, telephone, message, bien, ip) "
                f"VALUES (:site, :nom, :email, :tel, :msg, :bien, :ip) RETURNING {_COLUMNS}"),
                {"site": _optional(site, 100), "nom": nom, "email": email,
                 "tel": _optional(telephone, 40), "msg": message, "bien": _optional(bien, 300),
                 "ip": _optional(ip, 64)})).one()
        return ContactRecord(**row._mapping)

    async def get_contact(self, contact_id: int) -> ContactRecord | None:
        contact_id = row_id(contact_id, "contact request", max_id=2**63 - 1)
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM demandes_contact WHERE id = :id"),
                {"id": contact_id})).one_or_none()
        return ContactRecord(**row._mapping) if row is not None else None

    async def unrelayed_contacts(self, *, limit: int = 100) -> list[ContactRecord]:
        """Requests whose relay was never queued, oldest first."""
        async with self.db.sessions() as session:
            rows = (await session.execute(text(
                f"SELECT {_COLUMNS} FROM demandes_contact WHERE relaye_le IS NULL "
                "ORDER BY id LIMIT :n"), {"n": limit})).all()
        return [ContactRecord(**r._mapping) for r in rows]

    async def mark_contact_relayed(self, contact_id: int) -> None:
        async with self.db.sessions.begin() as session:
            await session.execute(text(
                "UPDATE demandes_contact SET relaye_le = now() WHERE id = :id "
                "AND relaye_le IS NULL"), {"id": contact_id})

    async def contacts_from_ip(self, ip: str | None, seconds: float) -> tuple[int, float]:
        """(how many requests this IP — as stored, the caller's key — or, with None,
        anyone sent in the last `seconds`, seconds until the oldest of them leaves that
        window)."""
        async with self.db.sessions() as session:
            row = (await session.execute(text(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM min(cree_le) "
                "+ make_interval(secs => :s) - now()), 0) AS wait FROM demandes_contact "
                "WHERE (CAST(:ip AS text) IS NULL OR ip = :ip) "
                "AND cree_le > now() - make_interval(secs => :s)"),
                {"ip": ip, "s": seconds})).one()
        return int(row.n), max(0.0, float(row.wait))

    async def site_memos_from_ip(self, ip: str | None, seconds: float) -> int:
        """How many `#memo` questions visitors from this IP (or, with None, anyone)
        caused in the last `seconds` (whatever Ludo answered)."""
        async with self.db.sessions() as session:
            return int(await session.scalar(text(
                "SELECT count(*) FROM confirmations WHERE action = :a "
                "AND (CAST(:ip AS text) IS NULL OR payload->>'ip' = :ip) "
                "AND cree_le > now() - make_interval(secs => :s)"),
                {"a": MEMO_ACTION, "ip": ip, "s": seconds}) or 0)
