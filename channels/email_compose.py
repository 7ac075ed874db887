"""The mail Axi sends, built from a `Delivery`: pure, so every header rule is tested alone.

Replies thread (`In-Reply-To`, `References`, one "Re: "), carry our own `Message-ID`
(derived from the outbound row, so a resend after a crash has the same id and mail
clients show it once), a text part and an HTML alternative, attachments, CC and Reply-To.
`Auto-Submitted` tells other robots not to answer: `auto-replied` on answers to a mail,
`auto-generated` on what Axi sends on its own (digests, alerts, questions to Ludo).
"""

from __future__ import annotations

import hashlib
import html
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import Any

from bot.channel import Delivery

MAX_REFERENCES = 20
"""The References kept (the first, then the most recent): long threads stay readable."""
DEFAULT_SUBJECT = "Message d'Axi — ICI Dordogne"
DISPLAY_NAME = "Axi — ICI Dordogne"

_REPLY_PREFIX = re.compile(r"^\s*((re|ré|réf|ref|aw|sv|antw|tr|fwd?|wg)\s*(\[\d+\])?\s*:\s*)+",
                           re.IGNORECASE)


_MSG_ID = re.compile(r"<[\x21-\x3b\x3d\x3f-\x7e]{1,900}>")
"""A message id as channels/email_headers.message_ids reads it: printable ASCII, no space."""


class IdsHeader(str):
    """An `In-Reply-To` or `References` value the `email` package sends as it is: message
    ids folded between ids, never turned into RFC 2047 encoded words. (Left to the package,
    an id longer than a line — Outlook's are about 85 characters — went out as
    `=?utf-8?q?=3C…?=`, which no mail client matches: the reply lost its thread.) Only
    well-formed ids are kept (at most 900 characters each, so a line stays within SMTP's
    998)."""

    name: str
    defects: tuple[Any, ...] = ()

    def __new__(cls, name: str, ids: Sequence[str]) -> IdsHeader:
        header = super().__new__(cls, " ".join(i for i in ids if _MSG_ID.fullmatch(i)))
        header.name = name
        return header

    def fold(self, *, policy: Any) -> str:
        first = f"{self.name}:"
        lines = [first]
        for ident in self.split():
            if lines[-1] != first and len(lines[-1]) + 1 + len(ident) > policy.max_line_length:
                lines.append("")
            lines[-1] += f" {ident}"
        return policy.linesep.join(lines) + policy.linesep


class TextHeader(str):
    """A `Subject` sent as the text it is. Given a value, the email package decodes the
    RFC 2047 words in it (`=?utf-8?q?…=0D=0A…?=`) and wrote their CR/LF out raw: a visitor's
    « bien » (the contact relay's subject) or a mail's subject (the reply's) added headers,
    or a body, to Axi's mail. Plain ASCII with no `=?` is folded as is; anything else is
    written as encoded words by `email.header.Header`, which never emits a raw CR/LF."""

    name: str
    defects: tuple[Any, ...] = ()

    def __new__(cls, name: str, value: str) -> TextHeader:
        header = super().__new__(cls, " ".join(value.split()))
        header.name = name
        return header

    def fold(self, *, policy: Any) -> str:
        value = str(self)
        if value.isascii() and "=?" not in value:
            return policy.header_factory(self.name, value).fold(policy=policy)  # type: ignore[no-any-return]
        encoded = Header(value, "utf-8", header_name=self.name,
                         maxlinelen=policy.max_line_length).encode(linesep=policy.linesep)
        return f"{self.name}: {encoded}{policy.linesep}"


class UnsendableMail(ValueError):
    """A delivery no mail can carry (its recipient's address is not one a header can
    hold): a permanent failure for the outbox, never a crash at every pass."""


def carried(address: str) -> bool:
    """Whether an address goes into a header as it is: printable, no space, and nothing
    the email package would decode as an RFC 2047 word (`=?`) into CR/LF."""
    return bool(address) and "=?" not in address and address.isprintable() \
        and not any(c.isspace() for c in address)


def reply_subject(subject: str | None) -> str:
    """One "Re: " in front of the original subject, whatever prefixes it had."""
    base = _REPLY_PREFIX.sub("", " ".join((subject or "").split()))
    return f"Re: {base}" if base else "Re: votre message"


def message_id_for(delivery: Delivery, domain: str) -> str:
    """Stable per outbound message: a resend after a crash carries the same id."""
    digest = hashlib.sha256(f"{delivery.message_id}:{delivery.address}".encode()).hexdigest()
    return f"<axi.{delivery.message_id}.{digest[:16]}@{domain}>"


def references_for(thread: Mapping[str, Any] | None, in_reply_to: str | None) -> list[str]:
    refs = [str(r) for r in (thread or {}).get("references", []) if str(r).strip()]
    if in_reply_to and in_reply_to not in refs:
        refs.append(in_reply_to)
    if len(refs) > MAX_REFERENCES:
        refs = [refs[0], *refs[-(MAX_REFERENCES - 1):]]
    return refs


def text_to_html(text: str) -> str:
    """A plain, readable HTML alternative: paragraphs, line breaks, links kept as text."""
    paragraphs = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    body = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in paragraphs)
    return ("<!DOCTYPE html><html lang=\"fr\"><body style=\"font-family: sans-serif; "
            f"font-size: 15px; line-height: 1.5\">{body}</body></html>")


def with_choices(text: str, choices: Sequence[tuple[str, str]]) -> str:
    """A question with choices, by mail: the choices are listed; the answer goes through
    Telegram or the web page (a mail's text can never approve anything)."""
    if not choices:
        return text
    listed = "\n".join(f"- {label}" for label, _ in choices)
    return (f"{text}\n\nChoix possibles :\n{listed}\n\nRépondez depuis Telegram ou la page "
            "d'Axi : une réponse par courriel ne peut pas valider une action.")


def compose(delivery: Delivery, *, sender: str, now: datetime | None = None) -> EmailMessage:
    """The message to send for `delivery`, from our address `sender`."""
    domain = sender.rpartition("@")[2] or "localhost"
    msg = EmailMessage(policy=SMTP)
    msg["From"] = Address(DISPLAY_NAME, addr_spec=sender)
    if not carried(delivery.address):
        raise UnsendableMail(f"the address {delivery.address[:100]!r} cannot be written in a "
                             "mail header")
    msg["To"] = delivery.address
    if cc := [a for a in delivery.cc if carried(a)]:
        msg["Cc"] = ", ".join(cc)
    if delivery.reply_to and carried(delivery.reply_to):  # else left out: the text says it
        msg["Reply-To"] = delivery.reply_to
    answering = delivery.kind in ("reply", "notice") and delivery.thread_ref is not None
    thread = delivery.thread_meta or {}
    if delivery.subject:
        subject = delivery.subject
    elif answering:
        subject = reply_subject(str(thread.get("sujet") or ""))
    else:
        subject = DEFAULT_SUBJECT
    msg["Subject"] = TextHeader("Subject", " ".join(subject.split())[:250])
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id_for(delivery, domain)
    if answering:
        if in_reply_to := IdsHeader("In-Reply-To", [str(delivery.thread_ref)]):
            msg["In-Reply-To"] = in_reply_to
        if refs := IdsHeader("References", references_for(thread, delivery.thread_ref)):
            msg["References"] = refs
    msg["Auto-Submitted"] = "auto-replied" if delivery.kind in ("reply", "notice") \
        else "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"  # Exchange: no out-of-office back to a robot
    text = with_choices(delivery.text, delivery.choices)
    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(delivery.html or text_to_html(text), subtype="html", charset="utf-8")
    for f in delivery.attachments:
        maintype, _, subtype = f.content_type.partition("/")
        msg.add_attachment(f.data, maintype=maintype or "application",
                           subtype=subtype or "octet-stream", filename=f.filename)
    return msg
