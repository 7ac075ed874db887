"""The core's side of the agency's website endpoints (bot/site_contract.SiteAccess).

Why it exists: what the site sends must reach people without ever being lost or acting
on its own. A contact request is stored first (`demandes_contact`), then relayed through
`notify` — to the agency's address (AXI_AGENCY_EMAIL, AXI_AGENCY_CC in copy, Reply-To the
visitor), or to Ludo when there is none — with the key `contact:<id>`, so relaying again
after a crash queues nothing twice; the outbox then delivers it when the channel can (an
SMTP outage delays it, never loses it). A visitor's `#memo` becomes a confirmation asked
of Ludo ("site.memo"): on his "oui" the memo is stored as a consigne for everyone, in the
confirmation's own transaction; nothing is written before.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from zoneinfo import ZoneInfo

from bot.config import Settings
from bot.confirmations import ActionContext, Confirmations
from bot.notify import OWNER, Notifier, valid_email
from bot.site_contract import ContactRequest, MemoOutcome, RecentContacts
from memory.errors import InvalidInput, NotFound
from memory.site_contacts import MEMO_ACTION, ContactRecord, contact_key
from memory.store import MemoryStore
from memory.text import clean

log = logging.getLogger(__name__)

MEMOS_PER_IP_DAY = 3
"""Memo questions one IP (an IPv6 /64) may cause per day: a visitor cannot flood Ludo."""
MEMOS_PER_DAY = 20
"""Memo questions the whole site may cause per day: many addresses cannot either."""
DAY_S = 24 * 3600.0
MEMO_EXPIRY = timedelta(days=7)
RELAY_BATCH = 100


async def store_site_memo(ctx: ActionContext) -> str:
    """Ludo said oui to a visitor's memo: it becomes a consigne for everyone (audience
    'tous'), its source the site (`site:<site_id>`)."""
    memo = str(ctx.payload.get("texte") or "").strip()
    site = str(ctx.payload.get("site") or "site")
    if not memo:
        raise InvalidInput("empty memo")
    await ctx.execute(
        "INSERT INTO consignes (texte, source, audience) VALUES (:t, :s, 'tous')",
        {"t": memo[:4000], "s": f"site:{site}"[:200]})
    return f"C'est noté : le mémo du site {site} est maintenant une consigne pour tous."


def memo_question(site: str, memo: str) -> str:
    return (f"Un visiteur du site {site} propose ce mémo : « {memo} »\n"
            "Si tu dis oui, il devient une consigne que je suivrai avec tout le monde, "
            "clients et visiteurs compris.")


def contact_subject(record: ContactRecord) -> str:
    about = record.bien or record.site or "site de l'agence"
    return f"Demande de contact — {about}"


def contact_text(record: ContactRecord, tz: ZoneInfo, *, note: str | None = None) -> str:
    """The relayed request as the agency (or Ludo) reads it. The visitor's words are
    quoted as they came: this goes to people, never to a model."""
    when = record.cree_le.astimezone(tz).strftime("%d/%m/%Y à %H:%M")
    lines = [f"Nouvelle demande de contact reçue par le site{' ' + record.site if record.site else ''}"
             f" le {when}.", "",
             f"Nom : {record.nom}", f"Courriel : {record.email}"]
    if record.telephone:
        lines.append(f"Téléphone : {record.telephone}")
    if record.bien:
        lines.append(f"Bien : {record.bien}")
    lines += ["", "Message :", record.message, ""]
    if note:
        lines += [note, ""]
    lines.append(f"Répondez directement à ce courriel : la réponse ira à {record.email}."
                 if valid_email(record.email) else
                 f"Pour répondre, écrivez à {record.email}.")
    lines.append(f"(Demande n° {record.id}, gardée par Axi.)")
    return "\n".join(lines)


class SiteAccessService:
    def __init__(self, store: MemoryStore, confirmations: Confirmations, notifier: Notifier,
                 settings: Settings):
        self.store, self.confirmations, self.notifier = store, confirmations, notifier
        self.settings = settings
        self.tz = ZoneInfo(settings.timezone)
        confirmations.register(MEMO_ACTION, store_site_memo)

    @property
    def agency_cc(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in (self.settings.agency_cc or "").split(",")
                     if valid_email(a.strip()))

    # ------------------------------------------------------------------ contact
    async def submit_contact(self, request: ContactRequest) -> int:
        record = await self.store.store_contact(
            nom=request.name, email=request.email, message=request.message,
            telephone=request.phone, bien=request.bien, site=request.site, ip=request.ip)
        try:
            await self.relay(record)
        except Exception as exc:  # stored: relay_pending sends it later
            # the type only: a database error's text would quote the visitor's words
            log.warning("contact request #%s stored, relay postponed: %s", record.id,
                        type(exc).__name__)
        return record.id

    async def relay(self, record: ContactRecord) -> None:
        """Queue the request for the agency (else Ludo), once (key `contact:<id>`), then
        mark it relayed."""
        key = contact_key(record.id)
        agency = self.settings.agency_email
        note = None
        if agency:
            try:
                await self.notifier.notify(
                    agency, contact_text(record, self.tz), key=key,
                    subject=contact_subject(record), cc=self.agency_cc,
                    reply_to=record.email if valid_email(record.email) else None,
                    kind="notice")  # a person's request: sent at once, quiet hours or not
                await self.store.mark_contact_relayed(record.id)
                return
            except (InvalidInput, NotFound) as exc:  # e.g. email not configured here
                log.warning("contact request #%s cannot go to %s (%s): Ludo gets it",
                            record.id, agency, exc)
                note = (f"Je n'ai pas pu la transmettre à l'agence ({agency}) : l'envoi de "
                        "courriels n'est pas configuré ici.")
        else:
            note = ("AXI_AGENCY_EMAIL n'est pas réglé : je te transmets la demande à toi. "
                    "Anthony peut régler cette adresse pour qu'elle aille à l'agence.")
        await self.notifier.notify(
            OWNER, contact_text(record, self.tz, note=note), key=key,
            subject=contact_subject(record), kind="push")
        await self.store.mark_contact_relayed(record.id)

    async def relay_pending(self) -> int:
        relayed = 0
        for record in await self.store.unrelayed_contacts(limit=RELAY_BATCH):
            try:
                await self.relay(record)
                relayed += 1
            except Exception as exc:
                log.warning("contact request #%s still not relayed: %s", record.id,
                            type(exc).__name__)
        if relayed:
            log.info("%d stored contact request(s) relayed", relayed)
        return relayed

    async def recent_contacts(self, ip: str | None, window_s: float) -> RecentContacts:
        count, wait = await self.store.contacts_from_ip(ip, window_s)
        return RecentContacts(count=count, retry_after_s=wait)

    # ------------------------------------------------------------------ memo
    async def propose_memo(self, site: str, text: str, *, ip: str | None,
                           visitor: str) -> MemoOutcome:
        # what JSONB and the question cannot hold goes first (a NUL, half an emoji)
        site, text = clean(site).strip() or "site", clean(text).strip()
        if not text:
            return "unavailable"
        if ip is not None and await self.store.site_memos_from_ip(ip, DAY_S) >= MEMOS_PER_IP_DAY:
            return "limited"
        if await self.store.site_memos_from_ip(None, DAY_S) >= MEMOS_PER_DAY:
            log.warning("a visitor's memo refused: %d asked today, the cap", MEMOS_PER_DAY)
            return "full"
        try:
            await self.confirmations.ask(
                MEMO_ACTION, memo_question(site, text),
                {"site": site, "texte": text, "ip": ip, "visiteur": clean(visitor)},
                expires_in=MEMO_EXPIRY)
        except (NotFound, InvalidInput) as exc:
            log.warning("a visitor's memo from site %s could not be asked: %s", site, exc)
            return "unavailable"
        return "asked"
