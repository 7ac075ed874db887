"""The email channel: people write to Axi and Axi writes back — exactly once, threaded,
and never fooled by a forged From.

Receiving (channels/email_imap.py) hands each new mail's raw bytes to the pure parser
(channels/email_parse.py) and turns it into an `Inbound`:

- the external id is the SHA-256 of the raw bytes, so a mail seen again (redelivery,
  UIDVALIDITY resync, two processes) is the same message, whatever its Message-ID;
- the sender is verified only when our own mail server vouches for it (the topmost
  Authentication-Results with our authserv-id says dmarc=pass for the From domain);
- a mail Axi must never answer on its own is stored HELD (`Inbound.hold`), with its reason:
  not vouched for (answering would mail whoever was impersonated), an auto-reply, a
  list, a bounce, our own address, a no-reply sender, or a sender over its hourly cap
  (the inner circle is never capped). Ludo sees them (`axi mail suspects`) and may have
  one answered through a confirmation;
- the raw message is kept with it (`original.eml`), so nothing a parser misread is lost.

Sending composes with channels/email_compose.py and sends with aiosmtplib: a 4xx or a
network error is retried by the outbox with its backoff; a permanent 5xx is not, and
Ludo is told once per address.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiosmtplib

from bot.channel import ChannelServices, CursorUpdate, Delivery, SendError
from bot.inbound import Attachment, Inbound
from channels.email_compose import carried, compose
from channels.email_imap import Cursor, Fetched, ImapConfig, ImapError, ImapSession, new_mail
from channels.email_parse import ParsedMail, parse_mail

log = logging.getLogger(__name__)

CHANNEL = "email"
HOUR_S = 3600.0
RAW_NAME = "original.eml"
RECONNECT_MAX_S = 300.0
CRASH_ENV = "AXI_TEST_CRASH_AT"
"""Test-only: `email:before_accept` kills the process right after a batch of mail is
fetched and before it is stored (the worst moment), to prove nothing is lost."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    user: str | None = None
    password: str | None = None
    tls: str = "starttls"  # ssl, starttls or none
    timeout_s: float = 60.0
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True)
class EmailConfig:
    address: str
    """Axi's own address (From of what it sends; never answered)."""
    authserv_id: str | None
    """Our mail server's authserv-id in Authentication-Results; None: nobody is verified."""
    imap: ImapConfig | None = None
    smtp: SmtpConfig | None = None
    max_per_sender_hour: int = 5
    max_per_hour: int = 50
    max_attachment_bytes: int = 10 * 1024 * 1024
    done_folder: str | None = None
    lock_retry_s: float = 30.0
    lock_check_s: float = 5.0
    """How often the reader asks whether it still holds its lock (see `_read_while_held`)."""
    own_addresses: frozenset[str] = field(default_factory=frozenset)
    """Other addresses of ours (aliases): never answered either."""

    @property
    def ours(self) -> frozenset[str]:
        return frozenset(a.lower() for a in {self.address, *self.own_addresses})


class EmailChannel:
    name = CHANNEL
    repeatable_send = True
    """A mail sent again after a crash between SMTP's acceptance and the outbox's commit
    carries the same Message-ID (email_compose: derived from the outbox row), which mail
    clients and Gmail collapse into one; a lost reply would be worse, so email keeps
    at-least-once and takes no attempt marker."""

    def __init__(self, config: EmailConfig):
        self.config = config
        self.services: ChannelServices | None = None
        self.session: ImapSession | None = None
        self.accepted = 0
        self.held: dict[str, int] = {}
        self.last_error: str | None = None
        self.reconnects = 0
        self.lock_losses = 0
        self._storing = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self, services: ChannelServices) -> None:
        self.services = services

    async def stop(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    def live(self, conversation: str, thread_ref: str | None = None) -> None:
        return None  # a mail is sent whole

    async def probe(self) -> str:
        """For `axi doctor`: log in to IMAP (and open the folder) and to SMTP, send nothing."""
        from channels.email_probe import probe_imap, probe_smtp

        found = []
        if self.config.imap is not None:
            found.append(await probe_imap(self.config.imap))
        if self.config.smtp is not None:
            found.append(await probe_smtp(self.config.smtp))
        return "; ".join(found) or "nothing configured"

    def status(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "held": dict(self.held),
                "reconnects": self.reconnects, "lock_losses": self.lock_losses,
                "last_error": self.last_error}

    # ------------------------------------------------------------------ receiving
    async def run(self) -> None:
        """Read the mailbox while holding its reader lock (one reader per mailbox)."""
        assert self.services is not None, "run before start"
        imap = self.config.imap
        if imap is None:
            return  # sending only
        said = False
        while True:
            async with self.services.lock(f"email:reader:{imap.cursor_key}") as mine:
                if mine:
                    said = False
                    await self._read_while_held(imap, mine)
                    log.warning("Courriel : verrou de lecture perdu (base redémarrée ?) ; la "
                                "lecture s'arrête jusqu'à ce qu'il soit repris / mailbox reader "
                                "lock lost: reading stops until it is held again (%s)",
                                imap.cursor_key)
                    continue
            if not said:
                log.warning("Courriel : un autre processus Axi lit déjà %s ; celui-ci envoie "
                            "seulement / another axi process reads this mailbox: this one only "
                            "sends", imap.cursor_key)
                said = True
            await asyncio.sleep(self.config.lock_retry_s)

    async def _read_while_held(self, imap: ImapConfig, held: Any) -> None:
        """Read until the reader lock is lost (its connection died: the database restarted,
        an idle connection was killed), so two processes never read the same mailbox for
        longer than `lock_check_s`. The reader is cancelled at once while it waits (IDLE,
        a fetch, a reconnection's pause); a batch being stored is finished first, and the
        reader stops right after it."""
        lost = asyncio.Event()
        reader = asyncio.create_task(self._read_for_ever(imap, lost), name="email-reader")
        try:
            while await held.still_held():
                done, _ = await asyncio.wait({reader}, timeout=self.config.lock_check_s)
                if done:
                    reader.result()  # the reader never ends on its own: re-raise its crash
                    return
            lost.set()
            if self._storing:
                await asyncio.wait({reader}, timeout=60.0)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        self.lock_losses += 1

    async def _read_for_ever(self, imap: ImapConfig, lost: asyncio.Event | None = None) -> None:
        delay = 1.0
        while lost is None or not lost.is_set():
            session = ImapSession(imap)
            try:
                await session.open()
                self.session = session
                delay = 1.0
                while lost is None or not lost.is_set():
                    await self.read_new(session, lost)
                    if lost is not None and lost.is_set():
                        return
                    if not session.news:  # mail announced during the pass: read again first
                        await session.wait_for_news()
            except ImapError as exc:
                self.last_error = str(exc)
                self.reconnects += 1
                log.warning("Courriel : connexion IMAP perdue, nouvel essai dans %.0f s / IMAP "
                            "connection lost, retrying in %.0f s: %s", delay, delay, exc)
            finally:
                self.session = None
                await session.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def read_new(self, session: ImapSession, lost: asyncio.Event | None = None) -> int:
        """Accept the mail not accepted yet; returns how many messages were stored."""
        assert self.services is not None and self.config.imap is not None
        key = self.config.imap.cursor_key
        cursor = Cursor.loads(await self.services.read_cursor(CHANNEL, key))
        stored = 0
        async for batch, moved in new_mail(session, cursor):
            if batch and os.environ.get(CRASH_ENV) == "email:before_accept":
                os._exit(137)  # test-only: the worst moment, before anything is stored
            inbounds = await self.inbounds(batch)
            self._storing = True  # the lock's watcher lets this batch end (see _read_while_held)
            try:
                await self.services.accept_batch(
                    inbounds, CursorUpdate(CHANNEL, key, moved.dumps()))
                stored += len(inbounds)
                self.accepted += len(inbounds)
                if self.config.done_folder and batch:
                    try:
                        await session.move([f.uid for f in batch], self.config.done_folder)
                    except ImapError as exc:  # stored already: moving is a nicety
                        log.warning("mail not moved to %s: %s", self.config.done_folder, exc)
            finally:
                self._storing = False
            if lost is not None and lost.is_set():
                break  # the lock is lost: the next batch is for whoever holds it now
        return stored

    async def inbounds(self, batch: list[Fetched]) -> list[Inbound]:
        """The batch as Inbounds, holds (guards, suspects, caps) decided in order."""
        counted: dict[str | None, int] = {}
        result = []
        for fetched in batch:
            parsed = await asyncio.to_thread(
                parse_mail, fetched.raw, our_addresses=self.config.ours,
                authserv_id=self.config.authserv_id or "",
                max_attachment_bytes=self.config.max_attachment_bytes)
            hold = (f"trop volumineux : {fetched.too_big:,} octets (seul l'en-tête est gardé)"
                    if fetched.too_big else await self._hold(parsed, counted))
            if hold is not None:
                kind = hold.split(" :", 1)[0]
                self.held[kind] = self.held.get(kind, 0) + 1
            result.append(to_inbound(fetched, parsed, hold=hold))
        return result

    async def _hold(self, parsed: ParsedMail, counted: dict[str | None, int]) -> str | None:
        assert self.services is not None
        if parsed.auth.forged:
            log.warning("Courriel : un en-tête Authentication-Results plus bas porte le nom de "
                        "notre serveur, tentative de falsification probable (From %s) / a lower "
                        "Authentication-Results header carries our authserv-id; the topmost "
                        "one says: %s", parsed.from_address, parsed.auth.reason)
        if parsed.no_reply is not None:
            return f"garde-fou : {parsed.no_reply}"
        if not parsed.auth.verified or parsed.from_address is None:
            return f"non authentifié : {parsed.auth.reason}"
        sender = parsed.from_address
        person = await self.services.identify(CHANNEL, sender)
        if person is not None and person.inner_circle:
            return None
        recent = self.services.recent_inbound
        if recent is not None:
            mine = await recent(CHANNEL, sender, HOUR_S) + counted.get(sender, 0)
            if mine >= self.config.max_per_sender_hour:
                return (f"plafond : déjà {mine} courriels de cette adresse en une heure "
                        f"(AXI_EMAIL_MAX_PER_SENDER_HOUR={self.config.max_per_sender_hour})")
            everyone = await recent(CHANNEL, None, HOUR_S) + counted.get(None, 0)
            if everyone >= self.config.max_per_hour:
                return (f"plafond : déjà {everyone} courriels en une heure "
                        f"(AXI_EMAIL_MAX_PER_HOUR={self.config.max_per_hour})")
        counted[sender] = counted.get(sender, 0) + 1
        counted[None] = counted.get(None, 0) + 1
        return None

    # ------------------------------------------------------------------ sending
    async def send(self, delivery: Delivery) -> str | None:
        smtp = self.config.smtp
        if smtp is None:
            raise SendError("no SMTP server configured (AXI_SMTP_HOST)", retryable=False)
        try:
            message = compose(delivery, sender=self.config.address)
        except (ValueError, TypeError) as exc:  # never a crash at every outbox pass
            raise SendError(f"mail not composed: {type(exc).__name__}: {exc}"[:300],
                            retryable=False) from exc
        recipients = [delivery.address, *(a for a in delivery.cc if carried(a))]
        try:
            await aiosmtplib.send(
                message, sender=self.config.address, recipients=recipients,
                hostname=smtp.host, port=smtp.port, username=smtp.user, password=smtp.password,
                use_tls=smtp.tls == "ssl", start_tls=True if smtp.tls == "starttls" else False,
                tls_context=smtp.ssl_context, timeout=smtp.timeout_s)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            await self._refused(delivery, f"recipients refused: {codes}",
                                permanent=all(c >= 500 for c in codes))
        except aiosmtplib.SMTPResponseException as exc:
            await self._refused(delivery, f"SMTP {exc.code}: {exc.message}"[:300],
                                permanent=exc.code >= 500)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendError(f"SMTP {smtp.host}:{smtp.port}: {type(exc).__name__}: {exc}"[:300],
                            retryable=True) from exc
        return str(message["Message-ID"])

    async def _refused(self, delivery: Delivery, why: str, *, permanent: bool) -> None:
        if not permanent:
            raise SendError(why, retryable=True)
        # a failed notice is not told about (the notice about a refusal could be refused
        # in turn: no chain)
        if self.services is not None and delivery.kind != "notice":
            try:  # once per address: the notification key
                await self.services.notify(
                    "@créateur", f"Je n'ai pas pu envoyer un courriel à {delivery.address} : le "
                    f"serveur l'a refusé définitivement ({why}). Je ne réessaierai pas.",
                    key=f"courriel-refuse:{delivery.address.lower()}", kind="notice")
            except Exception as exc:  # never in the way of recording the failure
                log.warning("could not tell Ludo about a refused mail: %s", exc)
        raise SendError(why, retryable=False)


def external_id(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def to_inbound(fetched: Fetched, parsed: ParsedMail, *, hold: str | None) -> Inbound:
    """What the core stores for one mail (pure)."""
    text = parsed.text.strip()
    if parsed.subject:
        text = f"Objet : {parsed.subject}\n\n{text}".strip()
    attachments = [Attachment(filename=RAW_NAME, content_type="message/rfc822",
                              size=len(fetched.raw), ref="original", data=fetched.raw)]
    attachments += [Attachment(filename=a.filename, content_type=a.content_type, size=a.size,
                               data=a.data, missing=a.missing) for a in parsed.attachments]
    thread: dict[str, Any] = {"sujet": parsed.subject[:300]}
    if parsed.references:
        thread["references"] = list(parsed.references[-20:])
    return Inbound(
        channel=CHANNEL, sender=(parsed.from_address or "inconnu@adresse.invalid").lower(),
        verified=parsed.auth.verified and parsed.from_address is not None, text=text,
        external_id=external_id(fetched.raw), received_at=datetime.now(UTC),
        attachments=tuple(attachments), thread_ref=parsed.message_id,
        display_name=parsed.from_name, forwarded_from=parsed.forwarded_from,
        hold=hold, thread_meta=thread)
