"""The MIME walk of one mail: the body text and the attachments, in order, bounded in
parts, depth and size (oversized attachments are measured, never decoded), with what went
wrong noted for `ParsedMail.problems`.

Pure: standard library only; split out of `channels/email_parse.py` to keep it small.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.message import Message

from channels import email_text
from channels.email_headers import (
    LINESEP,
    MAX_DEPTH,
    MAX_PROBLEMS,
    MAX_TEXT_PART_BYTES,
    Headers,
)


@dataclass(frozen=True)
class MailAttachment:
    filename: str | None
    content_type: str
    size: int  # decoded size in bytes
    data: bytes | None  # None when over max_attachment_bytes (or undecodable)
    missing: str | None = None  # French reason when data is None, e.g. "trop volumineux (21 Mo)"


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


class MimeWalk:
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
        text = "\n".join(LINESEP.split(text))
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
        headers = Headers(inner)
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
