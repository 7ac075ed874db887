"""MIME (channels/email_parse.py, email_text.py, email_auth.py) under generated mail.

tests/channels/test_email_fuzz.py mutates the real fixtures; this module builds mail from
scratch instead, so it knows what went in and can prove what came out:

- nothing lost: in a well-formed mail of nested multipart/mixed parts in any transfer
  encoding and charset, every text part's words reach `full_text` and every attachment
  comes out whole, in order, with its bytes;
- no crash and clean fields, whatever the headers (hostile From, Subject, RFC 2047 words,
  8-bit bytes, Authentication-Results, a thousand junk headers): `parse_mail` always gives
  a ParsedMail whose texts are storable (no NUL, no lone surrogate), whose subject is one
  line, and a mail without a usable sender is never answered (`no_reply` says why);
- the text helpers take any input: `decode_bytes` (any bytes, any charset label),
  `html_to_text`, `normalise_text`, `fix_8bit`, `unflow` (keeps every character but the
  flowed spaces and quote marks) and `split_reply` (invents nothing);
- Authentication-Results: `verify_authentication` never raises, and vouches for a sender
  only when the topmost header bears our authserv-id and a `dmarc=pass` for the From
  domain; a lower header bearing our id is always reported as forged.
"""

from __future__ import annotations

import base64
import quopri
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from channels.email_auth import authserv_id_of, verify_authentication
from channels.email_parse import ParsedMail, parse_mail
from channels.email_text import (
    MAX_TEXT_CHARS,
    decode_bytes,
    fix_8bit,
    html_to_text,
    normalise_text,
    split_reply,
    unflow,
)
from tests.fuzz.support import ANY_CHARACTER, fuzz, hostile_text, storable

OURS = frozenset({"axi@icidordogne.fr"})
AUTHSERV = "mx.icidordogne.fr"
MAX_ATTACHMENT = 64 * 1024
Draw = Callable[[st.SearchStrategy[Any]], Any]


def parse(raw: bytes) -> ParsedMail:
    return parse_mail(raw, our_addresses=OURS, authserv_id=AUTHSERV,
                      max_attachment_bytes=MAX_ATTACHMENT, max_parts=200)


def check(m: ParsedMail) -> None:
    """What every ParsedMail must be, whatever the bytes."""
    assert isinstance(m, ParsedMail)
    assert not [p for p in m.problems if p.startswith("parser failure") or " unreadable (" in p]
    for value in (m.subject, m.text, m.full_text, m.forwarded_text, m.auth.reason, *m.to,
                  *m.problems, *m.references):
        storable(value)
    for optional in (m.message_id, m.in_reply_to, m.from_address, m.from_name, m.no_reply,
                     m.forwarded_from, *(a.filename for a in m.attachments)):
        if optional is not None:
            storable(optional)
    assert "\n" not in m.subject and "\r" not in m.subject
    assert len(m.text) <= MAX_TEXT_CHARS and len(m.full_text) <= MAX_TEXT_CHARS
    assert m.text.endswith(m.forwarded_text)
    assert m.auth.reason  # a verdict always says why
    if m.from_address is None:  # nobody to answer: held, with the reason
        assert m.no_reply is not None
    if m.auth.verified:
        assert m.from_address is not None and m.auth.reason == f"dmarc=pass by {AUTHSERV}"
    assert m.date is None or m.date.tzinfo is not None
    for attachment in m.attachments:
        assert (attachment.data is None) == (attachment.missing is not None)


# ------------------------------------------------------------------ well-formed mail
CHARSETS = ["utf-8", "iso-8859-1", "windows-1252", "us-ascii", "utf-16", "iso-8859-15", "koi8-r"]
TEXT_CTES = ["7bit", "8bit", "base64", "quoted-printable"]


@dataclass
class Built:
    raw: bytes
    markers: list[str]
    attachments: list[bytes]


def _text_part(draw: Draw, marker: str) -> EmailMessage:
    charset = draw(st.sampled_from(CHARSETS))
    words = draw(hostile_text(60))
    text = f"{words}\n{marker}\n{draw(hostile_text(30))}"
    # only what the declared charset can carry, and no lone surrogate or bare CR (the
    # builder would refuse or rewrite them): the words around the marker stay hostile
    text = text.encode(charset, errors="replace").decode(charset).replace("\r", " ")
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    data = text.encode(charset)
    cte = draw(st.sampled_from(TEXT_CTES))
    if cte == "7bit" and not data.isascii():
        cte = "base64"
    if cte == "8bit" and charset == "utf-16":
        cte = "base64"
    if cte == "base64":
        payload = base64.encodebytes(data).decode("ascii")
    elif cte == "quoted-printable":
        payload = quopri.encodestring(data).decode("ascii")
    else:
        payload = data.decode("ascii", "surrogateescape").replace("\r\n", "\n")
    part = EmailMessage()
    part["Content-Type"] = f"text/plain; charset={charset}"
    part["Content-Transfer-Encoding"] = cte
    part.set_payload(payload)
    return part


def _attachment(draw: Draw, data: bytes) -> EmailMessage:
    part = EmailMessage()
    filename = draw(st.one_of(st.none(), hostile_text(30)))
    kwargs: dict[str, Any] = {}
    if filename is not None:
        filename = filename.encode("utf-8", "replace").decode("utf-8")
        kwargs["filename"] = " ".join(filename.splitlines()) or "x"
    part.set_content(data, maintype="application", subtype="octet-stream", cte="base64",
                     **kwargs)
    return part


@st.composite
def built_mails(draw: Draw) -> Built:
    markers: list[str] = []
    attachments: list[bytes] = []

    def container(depth: int) -> EmailMessage:
        box = EmailMessage()
        box["Content-Type"] = "multipart/mixed"
        box.set_boundary(f"=_axi_{depth}_{len(markers)}_{len(attachments)}_fuzz")
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["text", "text", "attachment", "nested"]))
            if kind == "nested" and depth < 3:
                box.attach(container(depth + 1))
            elif kind == "attachment":
                data = draw(st.binary(max_size=3000))
                attachments.append(data)
                box.attach(_attachment(draw, data))
            else:
                markers.append(f"MARQUEUR{len(markers)}AXIZ")
                box.attach(_text_part(draw, markers[-1]))
        return box

    root = container(0)
    root["From"] = draw(st.sampled_from(["Marie Dupont <marie@gmail.com>", "<a@b.fr>",
                                         "=?utf-8?q?J=C3=A9r=C3=B4me?= <j@x.fr>",
                                         "b@c.fr (Bernard)"]))
    root["To"] = "axi@icidordogne.fr"
    subject = draw(hostile_text(60)).encode("utf-8", "replace").decode("utf-8")
    root["Subject"] = " ".join(subject.splitlines())  # the builder refuses line breaks
    root["MIME-Version"] = "1.0"
    return Built(root.as_bytes(), markers, attachments)


@fuzz(80)
@given(built_mails())
def test_a_well_formed_mail_loses_no_text_part_and_no_attachment(built: Built) -> None:
    m = parse(built.raw)
    check(m)
    for marker in built.markers:
        assert marker in m.full_text, (marker, m.problems)
    assert [a.data for a in m.attachments] == built.attachments
    assert all(a.size == len(a.data or b"") for a in m.attachments)


# ------------------------------------------------------------------ hostile headers
HEADER_NAMES = ["From", "To", "Cc", "Subject", "Date", "Message-ID", "In-Reply-To",
                "References", "Content-Type", "Content-Transfer-Encoding",
                "Content-Disposition", "Authentication-Results", "Auto-Submitted", "Precedence",
                "List-Id", "Return-Path", "Reply-To", "X-Junk", "Sender", "MIME-Version"]
VALUE_PIECES = ["=?utf-8?q?=C3=A9t=C3=A9?=", "=?iso-8859-1?b?6XTp?=", "=?x-inconnu?q?a?=",
                "=?utf-8?b?!!!?=", "<a@b.fr>", '"Ludo" <ludo@icidordogne.fr>', "a@b.fr, c@d.fr",
                "(commentaire (imbriqué))", "multipart/mixed; boundary=", "text/html; charset=",
                "mx.icidordogne.fr; dmarc=pass header.from=gmail.com", "; ", "\r\n ",
                "auto-replied", "bulk", "<>", "Tue, 31 Feb 2026 25:61:61 +9999", "base64",
                "attachment; filename*=utf-8''%C3%A9t%C3%A9.pdf", "\\", "\"", "@", ",", ":"]


@st.composite
def header_values(draw: Draw) -> bytes:
    pieces = draw(st.lists(st.one_of(st.sampled_from(VALUE_PIECES), hostile_text(20)),
                           max_size=6))
    value = "".join(pieces).encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        value += draw(st.binary(max_size=20))  # raw 8-bit bytes in a header
    return value.replace(b"\r\n", b"\r\n ")  # folded, not a new header


@st.composite
def hostile_mails(draw: Draw) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 14))):
        name = draw(st.one_of(st.sampled_from(HEADER_NAMES), hostile_text(10)))
        name = name.encode("utf-8", "surrogatepass").replace(b":", b"").replace(b"\n", b"")
        lines.append(name + b": " + draw(header_values()))
    if draw(st.integers(0, 9)) == 0:
        lines += [b"X-Junk-%d: %s" % (i, b"x" * 50) for i in range(1000)]
    body = draw(st.one_of(st.binary(max_size=500),
                          hostile_text(300).map(lambda s: s.encode("utf-8", "surrogatepass"))))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@fuzz(100)
@given(hostile_mails())
def test_hostile_headers_never_break_the_parser(raw: bytes) -> None:
    check(parse(raw))


# ------------------------------------------------------------------ text helpers
LABELS = ["utf-8", "UTF-8", "us-ascii", "iso-8859-1", "latin1", "cp1252", "utf-16", "utf-16-le",
          "utf-32", "utf-7", "koi8-r", "big5", "shift_jis", "gb18030", "iso-2022-jp", "euc-kr",
          "punycode", "idna", "rot13", "zlib", "base64", "hex", "unicode-escape",
          "raw-unicode-escape", "undefined", "x-inconnu", "", '"utf-8"', "utf-8\x00", "mbcs",
          "charmap", "cp65001", "ascii\ud800"]


@fuzz(200)
@given(st.binary(max_size=400), st.one_of(st.none(), st.sampled_from(LABELS), hostile_text(16)))
def test_decode_bytes_reads_any_bytes_in_any_charset(data: bytes, charset: str | None) -> None:
    text, problem = decode_bytes(data, charset)
    text.encode("utf-8")  # no lone surrogate: storable once normalised
    assert problem is None or isinstance(problem, str)
    if data.isascii() and (charset or "").strip().lower() in ("", "utf-8", "us-ascii"):
        assert text == data.decode("ascii")  # plain ASCII is read as it is


@fuzz(200)
@given(st.one_of(hostile_text(300), st.text(ANY_CHARACTER, max_size=300)))
def test_the_text_helpers_take_any_string(text: str) -> None:
    for value in (normalise_text(text), normalise_text(text, collapse_spaces=True),
                  html_to_text(text)[0]):
        storable(value)
        assert "\r" not in value
    fix_8bit(text).encode("utf-8", "surrogatepass")
    split = split_reply(normalise_text(text), subject=text[:20])
    assert isinstance(split.own, str) and isinstance(split.forwarded, str)
    assert split.forwarded_from is None or split.forwarded


@fuzz(200)
@given(st.lists(st.one_of(hostile_text(30), st.sampled_from(["> ", ">> ", " ", "-- ", "a "])),
                max_size=12).map("\n".join), st.booleans())
def test_unflow_keeps_every_character_but_flowed_spaces_and_quote_marks(
        text: str, delsp: bool) -> None:
    out = unflow(text, delsp=delsp)

    def kept(value: str) -> list[str]:
        return sorted(c for c in value if c not in " >\n")

    assert kept(out) == kept(text)


@fuzz(150)
@given(st.lists(st.one_of(hostile_text(40), st.sampled_from([
    "> cité", "Le 3 nov. 2026 à 10:02, Ludo a écrit :", "-- ", "Envoyé de mon iPhone",
    "---------- Forwarded message ---------", "De : Marie <m@x.fr>", "Envoyé : lundi",
    "À : axi@icidordogne.fr", "Objet : visite", "________________", "On Mon, 1 Jan 2026 wrote:"])),
    max_size=15).map("\n".join), st.sampled_from(["", "Fwd: visite", "TR: x", "Re: y"]))
def test_split_reply_invents_nothing(text: str, subject: str) -> None:
    full = normalise_text(text)
    split = split_reply(full, subject)
    lines = set(full.split("\n"))
    for part in (split.own, split.forwarded):
        storable(part)
        assert set(part.split("\n")) - {""} <= lines | {line.strip() for line in lines}


# ------------------------------------------------------------------ Authentication-Results
IDS = [AUTHSERV, AUTHSERV.upper(), AUTHSERV + ".", "mx.evil.example", "", "(c) " + AUTHSERV,
       "mx.icidordogne.fr.evil.example"]
RESULTS = ["dmarc=pass", "dmarc=fail", "dmarc=PASS", "dkim=pass", "spf=pass", "dmarc=none",
           "dmarc=pass (p=reject)", "dmarc = pass", "none", "dmarc=pass header.from=",
           "dmarc=pass header.from=gmail.com", "dmarc=pass header.from=GMAIL.COM.",
           "dmarc=pass header.from=\"gmail.com\"", "dmarc=pass header.from=x@gmail.com",
           "dmarc=fail header.from=gmail.com", "dmarc=pass header.from=xn--dtour-bsa.fr",
           "dmarc=pass header.from=détour.fr", "dkim=pass header.d=gmail.com"]


@st.composite
def auth_values(draw: Draw) -> str:
    head = draw(st.one_of(st.sampled_from(IDS), hostile_text(20)))
    results = draw(st.lists(st.one_of(st.sampled_from(RESULTS), hostile_text(20)), max_size=4))
    return "; ".join([head, *results])


@fuzz(200)
@given(st.lists(auth_values(), max_size=4),
       st.one_of(st.none(), st.sampled_from(["gmail.com", "GMAIL.com", "détour.fr", "x.fr"]),
                 hostile_text(15)),
       st.one_of(st.none(), st.just("more than one From address")))
def test_only_our_topmost_dmarc_pass_vouches_for_a_sender(
        values: list[str], from_domain: str | None, from_problem: str | None) -> None:
    verdict = verify_authentication(values, authserv_id=AUTHSERV, from_domain=from_domain,
                                    from_problem=from_problem)
    storable(verdict.reason)
    assert verdict.reason
    if verdict.verified:
        assert from_domain is not None and from_problem is None
        assert (authserv_id_of(values[0]) or "").rstrip(".") == AUTHSERV
        assert "dmarc" in values[0].lower() and "pass" in values[0].lower()
        assert verdict.reason == f"dmarc=pass by {AUTHSERV}"
    lower_ours = any((authserv_id_of(v) or "").rstrip(".") == AUTHSERV for v in values[1:])
    assert verdict.forged == lower_ours
