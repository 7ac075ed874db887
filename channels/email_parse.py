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

Pure: standard library, `authres` and `inscriptis`; no I/O.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy as email_policy
from email.message import Message
from email.parser import BytesParser
from typing import Any, TypeVar

from channels import email_text
from channels.email_auth import AuthVerdict, verify_authentication

__all__ = ["AuthVerdict", "MailAttachment", "ParsedMail", "parse_mail"]

MAX_RAW_HEADER_CHARS = 128 * 1024  # kept of one raw header value (References can be long)
MAX_ADDRESS_HEADER_CHARS = 16 * 1024  # To/Cc of a few hundred recipients
MAX_HEADER_CHARS = 2048  # other headers given to the `email` header parser
MAX_DEPTH = 30  # MIME nesting
MAX_TEXT_PART_BYTES = 4 * 1024 * 1024  # encoded bytes of one text part that are read
MAX_SUBJECT_CHARS = 1000
MAX_REFERENCES = 100
MAX_PROBLEMS = 50
ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "sender", "reply-to", "resent-from", "resent-to"})


@dataclass(frozen=True)
class MailAttachment:
    filename: str | None
    content_type: str
    size: int  # decoded size in bytes
    data: bytes | None  # None when over max_attachment_bytes (or undecodable)
    missing: str | None = None  # French reason when data is None, e.g. "trop volumineux (21 Mo)"


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


# --- a bounded email.policy.default --------------------------------------------------------

_LINESEP = re.compile(r"\r\n|\r|\n")


class _BoundedPolicy(email_policy.EmailPolicy):
    """`email.policy.default` whose header parsing is bounded: raw values capped, values
    longer than the parser copes with cut before parsing (the feed parser itself parses
    Content-Type while splitting parts), 8-bit bytes in headers decoded as UTF-8 or
    windows-1252, a parser crash turned into a stripped value, each value parsed once."""

    notes: list[str] | None = None
    parsed: dict[tuple[str, str], Any] | None = None

    def _note(self, problem: str) -> None:
        if self.notes is not None and len(self.notes) < MAX_PROBLEMS:
            self.notes.append(problem)

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        name, value = super().header_source_parse(sourcelines)
        if len(value) > MAX_RAW_HEADER_CHARS:
            self._note(f"header {name[:40]} over {MAX_RAW_HEADER_CHARS} characters: cut")
            value = value[:MAX_RAW_HEADER_CHARS]
        return name, value

    def header_fetch_parse(self, name: str, value: str) -> Any:
        if hasattr(value, "name"):
            return value
        key = (name.lower(), value)
        if self.parsed is not None and key in self.parsed:
            return self.parsed[key]
        text = "".join(_LINESEP.split(value))
        limit = MAX_ADDRESS_HEADER_CHARS if key[0] in ADDRESS_HEADERS else MAX_HEADER_CHARS
        if len(text) > limit:
            self._note(f"header {name[:40]} over {limit} characters: cut")
            text = text[:limit]
        text = email_text.fix_8bit(text)
        try:
            header = self.header_factory(name, text)
        except Exception as error:
            self._note(f"header {name[:40]} unparsable ({type(error).__name__})")
            try:
                header = self.header_factory(name, re.sub(r'[()\\"<>]', " ", text))
            except Exception:
                header = self.header_factory(name, "")
        if self.parsed is not None:
            self.parsed[key] = header
        return header


def _new_policy(notes: list[str]) -> _BoundedPolicy:
    factory: Any = _BoundedPolicy  # Policy.__init__ takes any declared attribute
    return factory(notes=notes, parsed={})  # type: ignore[no-any-return]


# --- small helpers -------------------------------------------------------------------------

T = TypeVar("T")


_UNICODE_SPACES = re.compile(r"[\u00a0\u2000-\u200a\u202f\u205f\u3000\n\t]")


def _single_line(value: str, limit: int) -> str:
    value = email_text.normalise_text(value, collapse_spaces=True)
    return re.sub(" {2,}", " ", _UNICODE_SPACES.sub(" ", value)).strip()[:limit]


class _Headers:
    """The raw (unfolded, undecoded) header values of a message by lower-case name, in
    order, and the parsed ones through the bounded policy."""

    def __init__(self, message: Message) -> None:
        self.message = message
        self.raw: dict[str, list[str]] = {}
        for name, value in message.raw_items():
            unfolded = "".join(_LINESEP.split(str(value)))[:MAX_RAW_HEADER_CHARS]
            self.raw.setdefault(str(name).strip().lower(), []).append(email_text.fix_8bit(unfolded))

    def first_raw(self, name: str) -> str | None:
        values = self.raw.get(name)
        return values[0] if values else None

    def parsed(self, name: str) -> list[Any]:
        return list(self.message.get_all(name) or [])

    def text(self, name: str, limit: int = MAX_SUBJECT_CHARS) -> str | None:
        values = self.parsed(name)
        return _single_line(str(values[0]), limit) if values else None


_MSGID = re.compile(r"<([\x21-\x3b\x3d\x3f-\x7e]{1,900})>")
_BARE_MSGID = re.compile(r"^\s*([\x21-\x3b\x3d\x3f-\x7e]{1,900}@[\x21-\x3b\x3d\x3f-\x7e]{1,900})\s*$")


def _message_ids(value: str | None) -> list[str]:
    if not value:
        return []
    found = [f"<{m}>" for m in _MSGID.findall(value)]
    if not found:
        bare = _BARE_MSGID.match(value)
        found = [f"<{bare.group(1)}>"] if bare else []
    return list(dict.fromkeys(found))


def _addr_spec(address: Any) -> str | None:
    """"local@domain" with the domain lower-cased, or None without both parts."""
    spec = email_text.normalise_text(str(address.addr_spec))
    local, at, domain = spec.rpartition("@")
    domain = domain.strip().lower().rstrip(".")
    if not at or not local or not domain or any(c.isspace() for c in spec) or "@" in domain:
        return None
    return f"{local}@{domain}"


def _printable(value: str) -> str:
    """`value` without lone surrogates (left by raw 8-bit header bytes) or controls."""
    return email_text.normalise_text(email_text.fix_8bit(value)).replace("\n", " ")


def _mo(size: int) -> str:
    if size < 1024 * 1024:
        return f"{max(1, -(-size // 1024))} Ko"
    megabytes = size / (1024 * 1024)
    return f"{megabytes:.1f} Mo".replace(".", ",") if megabytes < 10 else f"{round(megabytes)} Mo"


# --- the MIME walk -------------------------------------------------------------------------

_BASE64_WHITESPACE = b" \t\r\n"


def _payload_bytes(part: Message) -> bytes:
    """The undecoded body bytes of a leaf part. `get_payload()` would decode 8-bit bytes
    with the declared charset (replacing what does not fit) before we can judge it."""
    payload = getattr(part, "_payload", None)
    if isinstance(payload, bytes):
        return payload
    if not isinstance(payload, str):
        return b""
    try:
        return payload.encode("ascii", errors="surrogateescape")
    except UnicodeError:
        return payload.encode("utf-8", errors="replace")


def _base64_size(cleaned: bytes) -> int:
    return max(0, len(cleaned) * 3 // 4 - len(cleaned[-2:]) + len(cleaned[-2:].rstrip(b"=")))


def _strict_base64(cleaned: bytes) -> bytes | None:
    if len(cleaned) % 4 == 1:
        return None
    try:
        return base64.b64decode(cleaned + b"=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _lenient_base64(cleaned: bytes) -> bytes:
    for padding in (b"", b"=", b"=="):
        try:
            return binascii.a2b_base64(cleaned + padding)
        except (binascii.Error, ValueError):
            continue
    return b""


def _transfer_encoding(part: Message) -> str:
    value = part.get("content-transfer-encoding")
    return str(value or "").strip().lower()[:40]


class _Walk:
    """Collects the body text and the attachments of a message, in order."""

    def __init__(self, max_parts: int, max_attachment_bytes: int, problems: list[str]) -> None:
        self.max_parts = max(1, max_parts)
        self.max_attachment_bytes = max(0, max_attachment_bytes)
        self.problems = problems
        self.parts = 0
        self.stopped = False
        self.attachments: list[MailAttachment] = []
        self.forwards: list[tuple[str, str]] = []  # (author, rendered block) of message/rfc822 parts
        self._texts: dict[int, str] = {}
        self.defects: set[str] = set()
        self.text_chars = 0  # body text collected: past MAX_TEXT_CHARS, text parts are skipped
        self.html_budget = email_text.MAX_HTML_CHARS  # HTML converted, for all parts together

    def note(self, problem: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    # -- text --

    def text_of(self, part: Message) -> str:
        key = id(part)
        if key not in self._texts:
            self._texts[key] = self._decode_text(part)
        return self._texts[key]

    def _decode_text(self, part: Message) -> str:
        raw = _payload_bytes(part)
        if len(raw) > MAX_TEXT_PART_BYTES:
            self.note(f"text part over {MAX_TEXT_PART_BYTES} bytes: cut")
            raw = raw[:MAX_TEXT_PART_BYTES]
        cte = _transfer_encoding(part)
        if cte == "base64":
            cleaned = raw.translate(None, _BASE64_WHITESPACE)
            data = _strict_base64(cleaned)
            if data is None:
                self.note("text part: invalid base64, read leniently")
                data = _lenient_base64(cleaned)
        elif cte == "quoted-printable":
            data = binascii.a2b_qp(raw)
        else:
            if cte not in ("", "7bit", "8bit", "binary"):
                self.note(f"unknown transfer encoding {cte!r}")
            data = raw
        text, problem = email_text.decode_bytes(data, part.get_content_charset())
        if problem:
            self.note(problem)
        text = "\n".join(_LINESEP.split(text))
        if part.get_content_subtype() == "html":
            if self.html_budget <= 0:
                self.note("HTML parts past the conversion budget: skipped")
                return ""
            text = text[: self.html_budget]
            self.html_budget -= len(text)
            text, problem = email_text.html_to_text(text)
            if problem:
                self.note(problem)
            return text
        if str(part.get_param("format") or "").lower() == "flowed":
            text = email_text.unflow(text, delsp=str(part.get_param("delsp") or "").lower() == "yes")
        return email_text.normalise_text(text)

    # -- attachments --

    def attachment(self, part: Message) -> None:
        filename = part.get_filename()
        if filename is not None:
            filename = email_text.fix_8bit(str(filename))
            filename = re.split(r"[/\\]", email_text.normalise_text(filename).replace("\n", " "))[-1]
            filename = filename.strip()[:255] or None
        content_type = part.get_content_type()
        raw = _payload_bytes(part)
        cte = _transfer_encoding(part)
        data: bytes | None
        missing = None
        if cte == "base64":
            cleaned = raw.translate(None, _BASE64_WHITESPACE)
            size = _base64_size(cleaned)
            data = _strict_base64(cleaned) if size <= self.max_attachment_bytes else None
            if data is not None:
                size = len(data)
            elif size <= self.max_attachment_bytes:
                self.note(f"attachment {filename or content_type!r}: invalid base64")
                missing = "illisible"
        else:
            if cte == "quoted-printable":
                data = binascii.a2b_qp(raw)
            else:
                data = raw
            size = len(data)
        if size > self.max_attachment_bytes:
            data, missing = None, f"trop volumineux ({_mo(size)})"
        self.attachments.append(MailAttachment(filename, content_type, size, data, missing))

    # -- structure --

    def visit(self, part: Message, depth: int, sink: list[str] | None, in_forward: bool = False) -> None:
        """Walk `part`: body text into `sink` (None: attachments only, e.g. the HTML
        alternative of a plain-text body), attachments into `self.attachments`."""
        if self.stopped:
            return
        self.parts += 1
        if self.parts > self.max_parts:
            self.stopped = True
            self.note(f"more than {self.max_parts} MIME parts: the rest ignored")
            return
        if depth > MAX_DEPTH:
            self.note(f"MIME nesting deeper than {MAX_DEPTH}: ignored below")
            return
        self.defects.update(type(d).__name__ for d in getattr(part, "defects", ()))
        content_type = part.get_content_type()
        if content_type == "message/rfc822":
            self.forwarded_message(part, depth, sink, in_forward)
            return
        if part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            if content_type == "multipart/alternative" and sink is not None:
                self.alternative(children, depth, sink, in_forward)
            else:
                for child in children:
                    self.visit(child, depth + 1, sink, in_forward)
            return
        disposition = part.get_content_disposition()
        readable = content_type in ("text/plain", "text/html") or content_type.startswith("multipart/")
        if readable and disposition != "attachment":  # a multipart here has no boundary: text
            if sink is not None and self.text_chars < email_text.MAX_TEXT_CHARS:
                text = self.text_of(part)
                if text:
                    sink.append(text)
                    self.text_chars += len(text)
            return
        self.attachment(part)

    def alternative(self, children: list[Message], depth: int, sink: list[str], in_forward: bool) -> None:
        def kind(child: Message) -> str:
            if child.get_content_disposition() == "attachment":
                return "attachment"
            return child.get_content_type()

        chosen: Message | None = None
        for child in children:  # plain text first, unless it is empty
            if kind(child) == "text/plain" and self.text_of(child):
                chosen = child
                break
        if chosen is None:
            for wanted in ("text/html", "multipart/", "text/plain"):
                matching = [c for c in children if kind(c).startswith(wanted)]
                if matching:
                    chosen = matching[-1]  # the last alternative is the richest
                    break
        for child in children:
            self.visit(child, depth + 1, sink if child is chosen else None, in_forward)

    def forwarded_message(self, part: Message, depth: int, sink: list[str] | None, in_forward: bool) -> None:
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if not isinstance(inner, Message):
            self.note("message/rfc822 part without a message: kept as an attachment")
            self.attachment(part)
            return
        inner_sink: list[str] = []
        self.visit(inner, depth + 1, inner_sink, True)
        headers = _Headers(inner)
        author = headers.text("from") or ""
        lines = ["---------- Message transféré ---------", f"De : {author}"]
        for label, name in (("Date", "date"), ("Objet", "subject"), ("À", "to")):
            value = headers.text(name)
            if value:
                lines.append(f"{label} : {value}")
        block = "\n".join(lines) + "\n\n" + "\n\n".join(inner_sink)
        if in_forward:  # a forward inside a forward stays in its text
            if sink is not None:
                sink.append(block.strip())
        else:
            self.forwards.append((author, block.strip()))


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
    headers: _Headers,
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
        return BytesParser(policy=_new_policy(problems)).parsebytes(raw), True
    except Exception as error:  # e.g. RecursionError on thousands of nested multiparts
        problems.append(f"MIME structure unparsable ({type(error).__name__}): headers and raw body only")
    try:
        return BytesParser(policy=_new_policy(problems)).parsebytes(raw, headersonly=True), False
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
    headers = _guard(problems, "headers", _Headers(Message()), lambda: _Headers(message))

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
        from_address = _guard(problems, "From", None, lambda: _addr_spec(from_addresses[0]))
        name = _guard(problems, "From", "", lambda: _single_line(str(from_addresses[0].display_name), 200))
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
                    spec = _addr_spec(address)
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
        ids = _message_ids(headers.first_raw("references"))
        if len(ids) > MAX_REFERENCES:
            ids = ids[:1] + ids[-(MAX_REFERENCES - 1) :]
        return tuple(ids)

    def first_id(name: str) -> str | None:
        ids = _message_ids(headers.first_raw(name))
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

    walk = _Walk(max_parts, max_attachment_bytes, problems)
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
        no_reply=_printable(no_reply) if no_reply else no_reply,
        problems=tuple(dict.fromkeys(_printable(p[:200]) for p in problems))[:MAX_PROBLEMS],
        forwarded_text=forwarded_text,
    )
