"""`parse_mail` never raises and stays fast, whatever the bytes: 2,000 mutations of the real
fixtures (broken boundaries, bad base64, huge headers, NUL bytes, wrong charsets, many parts,
byte flips, truncation...), deterministic (derandomized, no example database), then the three
worst cases the channel must survive in well under the time between two IMAP polls."""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.email_parse import ParsedMail, parse_mail
from channels.email_text import MAX_TEXT_CHARS

FIXTURES = sorted((Path(__file__).parent / "email_fixtures").glob("*.eml"))
RAW = [path.read_bytes() for path in FIXTURES]
OURS = frozenset({"axi@icidordogne.fr"})
AUTHSERV = "mx.icidordogne.fr"
MAX_ATTACHMENT = 4096
MAX_PARTS = 200

Draw = Callable[[st.SearchStrategy[Any]], Any]


def _pos(draw: Draw, raw: bytes) -> int:
    return draw(st.integers(0, len(raw)))


def flip_bytes(draw: Draw, raw: bytes) -> bytes:
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 20))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def truncate(draw: Draw, raw: bytes) -> bytes:
    return raw[: _pos(draw, raw)]


def insert_bytes(draw: Draw, raw: bytes) -> bytes:
    at = _pos(draw, raw)
    junk = draw(st.one_of(st.binary(max_size=200),
                          st.sampled_from([b"\x00" * 50, b"\r\n\r\n", b"\r\n--", b"=\r\n"])))
    return raw[:at] + junk + raw[at:]


def nul_bytes(draw: Draw, raw: bytes) -> bytes:
    return raw.replace(b"e", b"e\x00", draw(st.integers(1, 500)))


def break_boundary(draw: Draw, raw: bytes) -> bytes:
    boundaries = re.findall(rb'boundary="?([^";\r\n]+)', raw)
    if not boundaries:
        return raw
    boundary = draw(st.sampled_from(boundaries))
    how = draw(st.sampled_from(["drop-close", "alter", "remove-param", "swallow", "nest"]))
    if how == "drop-close":
        return raw.replace(b"--" + boundary + b"--", b"")
    if how == "alter":
        return raw.replace(b"--" + boundary, b"--" + boundary[:-1], draw(st.integers(1, 3)))
    if how == "remove-param":
        return raw.replace(b"boundary=", b"boundari=")
    if how == "swallow":
        return raw.replace(b"\r\n--" + boundary, b"--" + boundary).replace(b"\n--" + boundary,
                                                                        b"--" + boundary)
    return raw.replace(boundary, boundary + b"\r\n--" + boundary, 1)


def bad_base64(draw: Draw, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    candidates = [i for i, line in enumerate(lines) if re.fullmatch(rb"[A-Za-z0-9+/]{20,}=*\r?", line)]
    if not candidates:
        return raw
    i = draw(st.sampled_from(candidates))
    garbage = draw(st.sampled_from([b"!!%%**", b"====", b"A", b"\xff\xfe", b"-- ", b""]))
    at = draw(st.integers(0, len(lines[i])))
    lines[i] = lines[i][:at] + garbage + lines[i][at + 1 :]
    return b"\n".join(lines)


HEADER_NAMES = [b"Subject", b"From", b"To", b"Cc", b"Content-Type", b"Content-Disposition", b"Date",
                b"Authentication-Results", b"References", b"Message-ID", b"Auto-Submitted", b"X-Junk"]
HEADER_SHAPES = [b"mot ", b"(", b"((a)", b"=?utf-8?q?=C3=A9?= ", b"a=b; ", b'"x\\"', b"<a@b.fr>, ",
                 b"x\r\n ", b"\xc3\xa9", b"\xe9", b"\x00", b"mx.icidordogne.fr; dmarc=pass header.from=x.fr "]


def huge_header(draw: Draw, raw: bytes) -> bytes:
    name = draw(st.sampled_from(HEADER_NAMES))
    shape = draw(st.sampled_from(HEADER_SHAPES))
    size = draw(st.integers(1_000, 150_000))
    value = shape * (size // len(shape))
    header = name + b": " + value + b"\r\n"
    if draw(st.booleans()):
        return header + raw
    return raw.replace(b"\nSubject:", b"\n" + header + b"Subject:", 1)


def wrong_charset(draw: Draw, raw: bytes) -> bytes:
    charset = draw(st.sampled_from([b"utf-8", b"us-ascii", b"iso-8859-1", b"x-inconnu", b"utf-16", b"utf-7",
                                    b"punycode", b"zlib", b"rot13", b"", b'"', b"utf-8\x00", b"cp1252",
                                    b"koi8-r"]))
    return re.sub(rb"(?i)charset=\"?[\w-]+\"?", b"charset=" + charset, raw, count=draw(st.integers(0, 3)))


def many_parts(draw: Draw, raw: bytes) -> bytes:
    count = draw(st.integers(1, 400))
    part = draw(st.sampled_from([
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nUne ligne.\r\n",
        b"Content-Type: image/png; name=p.png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n",
        b"Content-Type: multipart/mixed; boundary=in\r\n\r\n--in\r\n\r\nx\r\n--in--\r\n",
        b"Content-Type: message/rfc822\r\n\r\nFrom: x@y.fr\r\n\r\ncorps\r\n",
    ]))
    body = b"".join(b"--many\r\n" + part for _ in range(count))
    return (b"From: Marie <marie@gmail.com>\r\nContent-Type: multipart/mixed; boundary=many\r\n\r\n" + body
            + b"--many\r\nContent-Type: message/rfc822\r\n\r\n" + raw + b"\r\n--many--\r\n")


def line_endings(draw: Draw, raw: bytes) -> bytes:
    old, new = draw(st.sampled_from([(b"\r\n", b"\n"), (b"\n", b"\r\n"), (b"\r\n", b"\r"), (b"\n", b"\n\n")]))
    return raw.replace(old, new)


def shuffle_lines(draw: Draw, raw: bytes) -> bytes:
    lines = raw.split(b"\n")
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    if draw(st.booleans()):
        del lines[i]
    return b"\n".join(lines)


def authentication_results(draw: Draw, raw: bytes) -> bytes:
    value = draw(st.sampled_from([
        b"mx.icidordogne.fr; dmarc=pass header.from=gmail.com",
        b"mx.icidordogne.fr; dmarc=pass header.from=icidordogne.fr",
        b"MX.ICIDORDOGNE.FR; dmarc=pass",
        b"mx.icidordogne.fr; dmarc=pass header.from=",
        b"mx.evil.example; dmarc=pass header.from=icidordogne.fr",
        b"mx.icidordogne.fr; none",
        b"(" * 2000 + b"mx.icidordogne.fr",
        b"mx.icidordogne.fr; " + b"dkim=pass header.d=x.fr; " * 500,
    ]))
    header = b"Authentication-Results: " + value + b"\r\n"
    return header + raw if draw(st.booleans()) else raw.replace(b"\nFrom:", b"\n" + header + b"From:", 1)


MUTATIONS = [flip_bytes, truncate, insert_bytes, nul_bytes, break_boundary, bad_base64, huge_header,
             wrong_charset, many_parts, line_endings, shuffle_lines, authentication_results]


@st.composite
def mutated_mails(draw: Draw) -> bytes:
    raw: bytes = draw(st.sampled_from(RAW))
    for _ in range(draw(st.integers(1, 4))):
        mutation = draw(st.sampled_from(MUTATIONS))
        raw = mutation(draw, raw)
    return raw


def _utf8(value: str) -> None:
    value.encode("utf-8")  # no lone surrogate: the text can be stored and sent


def check(m: ParsedMail, *, max_parts: int = MAX_PARTS, max_attachment: int = MAX_ATTACHMENT) -> None:
    assert isinstance(m, ParsedMail)
    # Problems of the mail, never of the parser: no field lost to an exception of ours.
    assert not [p for p in m.problems if p.startswith("parser failure") or " unreadable (" in p]
    strings = [m.subject, m.text, m.full_text, m.forwarded_text, m.auth.reason, *m.to, *m.problems,
               *m.references, *(x for x in (m.message_id, m.in_reply_to, m.from_address, m.from_name,
                                            m.forwarded_from, m.no_reply) if x is not None)]
    strings += [a.filename for a in m.attachments if a.filename is not None]
    for value in strings:
        assert isinstance(value, str)
        _utf8(value)
    for value in (m.subject, m.text, m.full_text):
        assert "\x00" not in value
    assert "\n" not in m.subject
    assert len(m.text) <= MAX_TEXT_CHARS and len(m.full_text) <= MAX_TEXT_CHARS
    assert m.text.endswith(m.forwarded_text)
    assert m.date is None or m.date.tzinfo is not None
    if m.auth.verified:
        assert m.from_address is not None and m.auth.reason == f"dmarc=pass by {AUTHSERV}"
    assert len(m.attachments) <= max_parts
    for attachment in m.attachments:
        assert (attachment.data is None) == (attachment.missing is not None)
        assert attachment.data is None or len(attachment.data) == attachment.size <= max_attachment


@settings(max_examples=2000, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(mutated_mails())
def test_mutated_fixtures_never_raise(raw: bytes) -> None:
    m = parse_mail(raw, our_addresses=OURS, authserv_id=AUTHSERV,
                   max_attachment_bytes=MAX_ATTACHMENT, max_parts=MAX_PARTS)
    check(m)


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=3000))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    check(parse_mail(raw, our_addresses=OURS, authserv_id=AUTHSERV,
                     max_attachment_bytes=MAX_ATTACHMENT, max_parts=MAX_PARTS))


# --- worst cases ---------------------------------------------------------------------------------

HEAD = (b"Authentication-Results: mx.icidordogne.fr; dmarc=pass header.from=gmail.com\r\n"
        b"From: Marie Dupont <marie.dupont@gmail.com>\r\nTo: axi@icidordogne.fr\r\n"
        b"Subject: Plans de la maison\r\nMIME-Version: 1.0\r\n")


def timed(raw: bytes, **options: int) -> tuple[ParsedMail, float]:
    """The parse's time, in multiples of a linear floor measured just before (splitting
    the mail into lines and base64-encoding it): a parse that is linear in the size stays
    within a few floors however loaded the machine is; a quadratic one does not."""
    start = time.perf_counter()
    raw.split(b"\r\n")
    base64.b64encode(raw)
    floor = max(time.perf_counter() - start, 0.07)
    start = time.perf_counter()
    m = parse_mail(raw, our_addresses=OURS, authserv_id=AUTHSERV, **options)
    return m, (time.perf_counter() - start) / floor


@pytest.mark.parametrize("wrapped", [True, False], ids=["76-char-lines", "one-line"])
def test_a_20_mb_attachment(wrapped: bool) -> None:
    data = os.urandom(20 * 1024 * 1024)
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n") if wrapped else base64.b64encode(data)
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\nVoici les plans.\r\n--B\r\n"
           b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=plans.pdf\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded + b"\r\n--B--\r\n")
    m, floors = timed(raw)
    assert floors < 30  # about 3 here for 20 MB (0.3 s); a quadratic parse: minutes
    assert m.text == "Voici les plans." and m.auth.verified
    [attachment] = m.attachments
    assert (attachment.size, attachment.data) == (len(data), None)
    assert attachment.missing == "trop volumineux (20 Mo)"


def test_1000_parts() -> None:
    parts = b"".join(b"--B\r\nContent-Type: image/png; name=p%d.png\r\n"
                     b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n" % i for i in range(1000))
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
           b"Les photos.\r\n" + parts + b"--B--\r\n")
    m, floors = timed(raw)
    assert floors < 30
    assert m.text == "Les photos." and len(m.attachments) == 198
    assert "more than 200 MIME parts: the rest ignored" in m.problems


@pytest.mark.parametrize(
    ("name", "shape"),
    [(b"Subject", b"mot "), (b"Content-Type", b'text/plain; a="x\\"'), (b"Content-Type", b"text/plain; (("),
     (b"From", b"a@b.fr, "), (b"To", b'"x" <a@b> (c) '),
     (b"Authentication-Results", b"mx.icidordogne.fr; (")],
)
def test_a_1_mb_header(name: bytes, shape: bytes) -> None:
    value = shape * (1024 * 1024 // len(shape))
    raw = HEAD.replace(b"Subject: Plans de la maison\r\n", b"") + name + b": " + value
    raw += b"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour.\r\n"
    m, floors = timed(raw)
    assert floors < 30
    assert m.problems
    check(m, max_attachment=10 * 1024 * 1024)
