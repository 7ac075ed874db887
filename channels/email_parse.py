"""One raw mail in, one `ParsedMail` out: the pure half of Axi's email channel.

The IMAP/SMTP channel (`channels/email.py` and its helpers) fetches bytes and sends
replies; everything it needs to know about a message comes from `parse_mail` here: who
wrote it and whether our mail server vouches for that (`auth`, rules in
`channels/email_auth.py`), the thread ids, the new words Axi should answer (`text`, quotes
and signatures removed by `channels/email_text.py`), the attachments, whether it forwards
someone else's words, and whether Axi must never answer it automatically (`no_reply`:
loops with auto-responders, lists and bounces).

Mail from the Internet is hostile input. `parse_mail` never raises, whatever the bytes, and
stays fast on pathological ones: header values are capped before Python's header parser
sees them (it is slow, even quadratic, on some long values, and recurses on nested
comments), the MIME walk is bounded in parts and depth, oversized attachments are measured
without being decoded, and the text is capped. What went wrong is listed in `problems`.

Pure: standard library, `authres` and `inscriptis`; no I/O. The bounded header policy and
helpers are in `channels/email_headers.py`, the MIME walk in `channels/email_mime.py`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesParser
from typing import Any, TypeVar

from channels import email_text
from channels.email_auth import AuthVerdict, verify_authentication
from channels.email_headers import (
    MAX_PROBLEMS,
    MAX_REFERENCES,
    MAX_TEXT_PART_BYTES,
    Headers,
    addr_spec,
    message_ids,
    new_policy,
    printable,
    single_line,
)
from channels.email_mime import MailAttachment, MimeWalk

__all__ = ["AuthVerdict", "MailAttachment", "ParsedMail", "parse_mail"]

T = TypeVar("T")


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None  # e.g. "<abc@example.com>", None if absent/garbage
    in_reply_to: str | None
    references: tuple[str, ...]  # message ids in order
    subject: str  # decoded (RFC 2047), "" if missing, single line
    from_address: str | None  # addr-spec of the (first) From, domain lower-cased
    from_name: str | None  # display name, decoded
    to: tuple[str, ...]  # addr-specs of To + Cc
    date: datetime | None  # aware
    text: str  # the new words (quotes and signature removed), then any forwarded block
    full_text: str  # the whole readable body before quote/signature removal
    attachments: tuple[MailAttachment, ...]
    forwarded_from: str | None  # original author of a forwarded mail ("" if unknown), else None
    auth: AuthVerdict
    no_reply: str | None  # why Axi must never auto-answer it (English), else None
    problems: tuple[str, ...] = ()  # defects noticed, English
    # The forwarded block at the end of `text` (someone else's words), "" if none: the
    # sender's own words are text[: len(text) - len(forwarded_text)].
    forwarded_text: str = ""


# --- no_reply --------------------------------------------------------------------------------

_NO_REPLY_LOCALS = ("noreply", "nepasrepondre", "donotreply", "nereponds")
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:r[ée]ponse\s+automatique|automatic\s+reply|auto[- ]?reply|out\s+of\s+(?:the\s+)?office|"
    r"message\s+d['’]absence|absent(?:e|\(e\))?\s+du\s+bureau|absence\s*(?:$|[:\-–(]|du\s|de\s+bureau))",
    re.I,
)


def _token(value: str) -> str:
    return re.split(r"[;(\s]", value.strip(), maxsplit=1)[0].lower()[:60]


def _no_reply(
    headers: Headers,
    from_address: str | None,
    subject: str,
    our_addresses: frozenset[str],
    content_type: str,
) -> str | None:
    raw = headers.raw
    if from_address and from_address.lower() in {a.strip().lower() for a in our_addresses}:
        return "our own address"
    auto = headers.first_raw("auto-submitted")
    if auto is not None and _token(auto) != "no":
        return f"auto-submitted: {_token(auto) or 'empty'}"
    precedence = _token(headers.first_raw("precedence") or "")
    if precedence in ("bulk", "list", "junk"):
        return f"precedence: {precedence}"
    if "list-id" in raw or "list-unsubscribe" in raw:
        return "mailing list"
    local = (from_address or "").rpartition("@")[0].lower()
    return_path = headers.first_raw("return-path")
    if (
        (return_path is not None and return_path.strip() in ("", "<>"))
        or local in ("mailer-daemon", "postmaster")
        or content_type == "multipart/report"
    ):
        return "bounce"
    if "x-auto-response-suppress" in raw:
        return "x-auto-response-suppress"
    flat = unicodedata.normalize("NFKD", local.split("+")[0])
    flat = re.sub(r"[^a-z]", "", flat.encode("ascii", errors="ignore").decode())
    if any(word in flat for word in _NO_REPLY_LOCALS):
        return "no-reply sender"
    if any(name in raw for name in ("x-autoreply", "x-autorespond", "x-autoresponder")):
        return "auto-reply"
    if _AUTO_REPLY_SUBJECT.match(subject):
        return "auto-reply"
    if from_address is None:
        return "no sender address"
    return None


# --- parse_mail ----------------------------------------------------------------------------


def _guard(problems: list[str], label: str, default: T, compute: Callable[[], T]) -> T:
    try:
        return compute()
    except Exception as error:  # one broken field never costs the others
        problems.append(f"{label} unreadable ({type(error).__name__})")
        return default


def _parse_message(raw: bytes, problems: list[str]) -> tuple[Message, bool]:
    """The parsed message and whether its MIME structure was parsed (else headers only)."""
    try:
        return BytesParser(policy=new_policy(problems)).parsebytes(raw), True
    except Exception as error:  # e.g. RecursionError on thousands of nested multiparts
        problems.append(f"MIME structure unparsable ({type(error).__name__}): headers and raw body only")
    try:
        return BytesParser(policy=new_policy(problems)).parsebytes(raw, headersonly=True), False
    except Exception as error:
        problems.append(f"headers unparsable ({type(error).__name__})")
        return Message(), False


def _raw_body_text(raw: bytes) -> str:
    head_end = re.search(rb"\r?\n\r?\n", raw)
    body = raw[head_end.end() :] if head_end else raw
    text, _ = email_text.decode_bytes(body[:MAX_TEXT_PART_BYTES], None)
    return email_text.normalise_text(text)


def parse_mail(
    raw: bytes,
    *,
    our_addresses: frozenset[str],
    authserv_id: str,
    max_attachment_bytes: int = 10 * 1024 * 1024,
    max_parts: int = 200,
) -> ParsedMail:
    """Everything the email channel needs from one raw RFC 5322 message.

    Never raises on any input bytes (a totally broken message still gives a ParsedMail
    with problems)."""
    problems: list[str] = []
    try:
        return _parse(raw, our_addresses, authserv_id, max_attachment_bytes, max_parts, problems)
    except Exception as error:  # a bug of ours: still a ParsedMail, never answered
        problems.append(f"parser failure ({type(error).__name__})")
        text = _guard(problems, "body", "", lambda: _raw_body_text(bytes(raw)))
        return ParsedMail(
            message_id=None, in_reply_to=None, references=(), subject="", from_address=None,
            from_name=None, to=(), date=None, text=text, full_text=text, attachments=(),
            forwarded_from=None, auth=AuthVerdict(False, "message could not be parsed"),
            no_reply="unparsable message", problems=tuple(problems[:MAX_PROBLEMS]),
        )  # fmt: skip


def _parse(
    raw: bytes,
    our_addresses: frozenset[str],
    authserv_id: str,
    max_attachment_bytes: int,
    max_parts: int,
    problems: list[str],
) -> ParsedMail:
    if not isinstance(raw, bytes):
        raw = raw.encode("utf-8", errors="surrogateescape") if isinstance(raw, str) else bytes(raw)
    message, complete = _parse_message(raw, problems)
    headers = _guard(problems, "headers", Headers(Message()), lambda: Headers(message))

    subject = _guard(problems, "Subject", "", lambda: headers.text("subject") or "")
    from_headers: list[Any] = _guard(problems, "From", [], lambda: headers.parsed("from"))
    from_address: str | None = None
    from_name: str | None = None
    from_problem: str | None = None
    from_addresses: list[Any] = _guard(
        problems, "From", [], lambda: list(from_headers[0].addresses) if from_headers else []
    )
    if len(from_headers) > 1:
        from_problem = "more than one From header"
    elif len(from_addresses) > 1:
        from_problem = "more than one From address"
    if from_addresses:
        from_address = _guard(problems, "From", None, lambda: addr_spec(from_addresses[0]))
        name = _guard(problems, "From", "", lambda: single_line(str(from_addresses[0].display_name), 200))
        from_name = name or None
    if from_address is None:
        from_problem = from_problem or "unparsable From"
        if from_headers:
            problems.append("From address unparsable")
    if from_problem and from_problem.startswith("more than one"):
        problems.append(from_problem)

    def recipients() -> tuple[str, ...]:
        found: dict[str, None] = {}
        for name in ("to", "cc"):
            for header in headers.parsed(name):
                for address in getattr(header, "addresses", ()):
                    spec = addr_spec(address)
                    if spec:
                        found.setdefault(spec, None)
        return tuple(found)[:500]

    def date() -> datetime | None:
        values = headers.parsed("date")
        if not values:
            return None
        value = getattr(values[0], "datetime", None)
        if not isinstance(value, datetime):
            problems.append("Date unparsable")
            return None
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)

    def references() -> tuple[str, ...]:
        ids = message_ids(headers.first_raw("references"))
        if len(ids) > MAX_REFERENCES:
            ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
        return tuple(ids)

    def first_id(name: str) -> str | None:
        ids = message_ids(headers.first_raw(name))
        return ids[0] if ids else None

    auth = _guard(
        problems,
        "Authentication-Results",
        AuthVerdict(False, "Authentication-Results unreadable"),
        lambda: verify_authentication(
            headers.raw.get("authentication-results", []),
            authserv_id=authserv_id,
            from_domain=from_address.rpartition("@")[2] if from_address else None,
            from_problem=from_problem,
        ),
    )
    if auth.forged:
        problems.append("a lower Authentication-Results header bears our authserv-id")

    walk = MimeWalk(max_parts, max_attachment_bytes, problems)
    bodies: list[str] = []
    if complete:
        _guard(problems, "body", None, lambda: walk.visit(message, 0, bodies))
    else:
        bodies.append(_guard(problems, "body", "", lambda: _raw_body_text(raw)))
    own_body = "\n\n".join(b for b in bodies if b)[: email_text.MAX_TEXT_CHARS + 1]
    split = _guard(problems, "text", email_text.ReplySplit(own_body, "", None),
                   lambda: email_text.split_reply(own_body, subject))  # fmt: skip
    forwarded_parts = [split.forwarded] if split.forwarded else []
    forwarded_parts += [block for _, block in walk.forwards]
    forwarded_text = "\n\n".join(forwarded_parts)
    forwarded_from = split.forwarded_from
    if not forwarded_from and walk.forwards:  # None or "": the attached message's From
        forwarded_from = walk.forwards[0][0]
    full_text = "\n\n".join(x for x in (own_body, *(b for _, b in walk.forwards)) if x)
    text = "\n\n".join(x for x in (split.own, forwarded_text) if x)
    if not text:
        text = full_text
    if len(full_text) > email_text.MAX_TEXT_CHARS:
        problems.append(f"text cut to {email_text.MAX_TEXT_CHARS} characters")
        full_text = full_text[: email_text.MAX_TEXT_CHARS]
    if len(text) > email_text.MAX_TEXT_CHARS:
        text = text[: email_text.MAX_TEXT_CHARS]
        own_length = len(split.own) + 2 if split.own else 0
        forwarded_text = text[own_length:] if forwarded_text else ""
    if not text.endswith(forwarded_text):  # never, but the channel relies on it
        forwarded_text = ""
    content_type = _guard(problems, "Content-Type", "text/plain", message.get_content_type)
    guard_failed: str | None = "loop guard failed"
    no_reply = _guard(
        problems, "loop guard", guard_failed,
        lambda: _no_reply(headers, from_address, subject, our_addresses, content_type),
    )  # fmt: skip
    defects = walk.defects | {type(d).__name__ for d in getattr(message, "defects", ())}
    if defects:
        problems.append("MIME defects: " + ", ".join(sorted(defects))[:150])
    return ParsedMail(
        message_id=_guard(problems, "Message-ID", None, lambda: first_id("message-id")),
        in_reply_to=_guard(problems, "In-Reply-To", None, lambda: first_id("in-reply-to")),
        references=_guard(problems, "References", (), references),
        subject=subject,
        from_address=from_address,
        from_name=from_name,
        to=_guard(problems, "To", (), recipients),
        date=_guard(problems, "Date", None, date),
        text=text,
        full_text=full_text,
        attachments=tuple(walk.attachments),
        forwarded_from=forwarded_from,
        auth=auth,
        no_reply=printable(no_reply) if no_reply else no_reply,
        problems=tuple(dict.fromkeys(printable(p[:200]) for p in problems))[:MAX_PROBLEMS],
        forwarded_text=forwarded_text,
    )
