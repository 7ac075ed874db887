"""The worst mail the fuzz (test_email_fuzz.py) throws at the parser, this time through a
real Dovecot and the whole email channel: parsing alone never raising is not enough if the
IMAP fetch, the store or the reply chokes on the same bytes, or if one poisoned message
stops the cursor and every mail after it.

About thirty deterministic worst cases, built here (nothing big in git): broken and missing
MIME boundaries, bad base64 and quoted-printable, 1 MB headers, NUL bytes, wrong and
unknown charsets, a 20 MB attachment, 1,000 parts, deep nesting, no From, two From, a
truncated message, binary garbage, 8-bit headers, bare CR or LF line ends... They are
appended to the mailbox as a mail server would deliver them, and the channel must:

- store every message Dovecot accepted exactly once (external id = SHA-256 of the bytes
  Dovecot gives back, which are not always the bytes appended: see below);
- answer it (`traite`), or hold it (`retenu`, with its reason in `metadata.retenu`), or
  (the core's decision, not the channel's) give it up with a notice to the sender
  (`abandonne`: 64 KB of binary read as text is too long for the local model) -- the
  outcome of each case is stated (HELD, GIVEN_UP, the rest answered), not just "no crash";
- move its cursor past the last one, raise nothing, log no error;
- and still answer a normal mail that arrives after them.

What Dovecot itself does with the bytes (test_what_dovecot_does_with_the_worst_bytes):
a zero-byte message is refused ("Can't save a zero byte message"), NUL bytes are stored as
0x80, bare CR and bare LF line ends are stored as CRLF. So NUL never reaches the channel
through Dovecot; the parser's own NUL handling is test_email_fuzz.py's.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from channels.email import EmailChannel, external_id
from channels.email_imap import Cursor, ImapSession
from memory.database import Database
from tests.channels.test_email_channel import email_axi, email_config, inbound, mail, settled
from tests.conftest import empty_tables
from tests.fakes import mail_fixtures
from tests.fakes.dovecot import Dovecot, DovecotError
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.smtp_capture import SmtpCapture
from tests.waiting import until

dovecot_server = mail_fixtures.dovecot_server
dovecot = mail_fixtures.dovecot
smtp_capture_factory = mail_fixtures.smtp_capture_factory
smtp_capture = mail_fixtures.smtp_capture

CLIENT = "martin@example.fr"
SEED = 20261130
MB = 1024 * 1024


def head(subject: bytes, *, sender: bytes = b"Mme Martin <martin@example.fr>",
         auth: bool = True, extra: bytes = b"") -> bytes:
    """Headers as our MX delivers an authenticated mail from the client, up to (not
    including) the Content-Type and the blank line."""
    top = (b"Authentication-Results: mx.icidordogne.fr; spf=pass smtp.mailfrom=example.fr; "
           b"dmarc=pass header.from=example.fr\r\n") if auth else b""
    slug = bytes(c if 0x21 <= c <= 0x7E and c not in b"<>" else 0x2D for c in subject[:40])
    return (top + b"From: " + sender + b"\r\nTo: axi@icidordogne.fr\r\nSubject: " + subject
            + b"\r\nMessage-ID: <pire-" + slug + b"@example.fr>\r\n"
            b"Date: Mon, 30 Nov 2026 10:00:00 +0100\r\nMIME-Version: 1.0\r\n" + extra)


PLAIN = b"Content-Type: text/plain; charset=utf-8\r\n\r\n"


def multipart(subject: bytes, parts: list[bytes], *, boundary: bytes = b"B",
              close: bool = True, declared: bytes | None = None) -> bytes:
    raw = head(subject) + b"Content-Type: multipart/mixed; boundary=\"" \
        + (declared if declared is not None else boundary) + b"\"\r\n\r\n"
    for part in parts:
        raw += b"--" + boundary + b"\r\n" + part + b"\r\n"
    return raw + (b"--" + boundary + b"--\r\n" if close else b"")


def text_part(body: bytes, *, charset: bytes = b"utf-8", cte: bytes = b"8bit") -> bytes:
    return (b"Content-Type: text/plain; charset=" + charset
            + b"\r\nContent-Transfer-Encoding: " + cte + b"\r\n\r\n" + body)


def attachment(name: bytes, data: bytes, ctype: bytes = b"application/pdf") -> bytes:
    return (b"Content-Type: " + ctype + b"\r\nContent-Disposition: attachment; filename=\""
            + name + b"\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(data).replace(b"\n", b"\r\n"))


def nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain\r\n\r\nTout au fond.\r\n"
    for level in range(depth):
        b = b"N%d" % level
        body = (b"Content-Type: multipart/mixed; boundary=" + b + b"\r\n\r\n--" + b + b"\r\n"
                + body + b"\r\n--" + b + b"--\r\n")
    return body


def forwarded(depth: int) -> bytes:
    body = b"From: x@y.fr\r\nSubject: fond\r\n\r\nLe message d'origine.\r\n"
    for _ in range(depth):
        body = b"From: x@y.fr\r\nSubject: Tr\r\nContent-Type: message/rfc822\r\n\r\n" + body
    return body


HELD = {"1 MB Authentication-Results", "no From", "two From", "From unparsable",
        "binary garbage"}
"""Held: our MX's verdict unreadable, or no single readable sender: nobody to answer."""
GIVEN_UP = {"garbage after the headers"}
"""64 KB of binary as text: too long for the local model (the core gives it up and tells
the sender; the channel's part, storing it once, is done)."""


def expected(name: str) -> str:
    """The state a worst case must end in; answered (`traite`) unless said otherwise."""
    return "retenu" if name in HELD else "abandonne" if name in GIVEN_UP else "traite"


def worst_cases() -> dict[str, bytes]:
    """name → raw bytes; deterministic (a fixed seed), built in memory."""
    rng = random.Random(SEED)
    q = b"Bonjour, la maison est-elle toujours disponible ?"
    cases: dict[str, bytes] = {
        "boundary never closed": multipart(b"Sans fin", [text_part(q)], close=False),
        "boundary param missing": head(b"Sans limite")
        + b"Content-Type: multipart/mixed\r\n\r\n--B\r\n" + text_part(q) + b"\r\n--B--\r\n",
        "boundary not the declared one": multipart(b"Autre limite", [text_part(q)],
                                                   declared=b"C"),
        "boundary swallowed": multipart(b"Avale", [text_part(q), text_part(q)]).replace(
            b"\r\n--B", b"--B"),
        "bad base64": multipart(b"Base64 casse", [
            text_part(base64.encodebytes(q)[:20] + b"!!%%**====\xff\xfe-- A", cte=b"base64"),
            attachment(b"plan.pdf", b"%PDF-1.4 " * 100).replace(b"JVBER", b"J!B=R", 1)]),
        "bad quoted-printable": head(b"QP casse")
        + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: "
        b"quoted-printable\r\n\r\nBonjour =ZZ =C3 =\r\n=E9=E9=\r\nfin=",
        "1 MB Subject": head(b"mot " * (MB // 4)) + PLAIN + q,
        "1 MB header without spaces": head(b"Longue ligne", extra=b"X-Junk: " + b"x" * MB
                                           + b"\r\n") + PLAIN + q,
        "1 MB Authentication-Results": b"Authentication-Results: mx.icidordogne.fr; "
        + b"(" * (MB // 2) + b"\r\n" + head(b"Parentheses") + PLAIN + q,
        "1 MB of recipients": head(b"Tout le monde", extra=b"To: " + b"a@b.fr, " * (MB // 8)
                                   + b"\r\n") + PLAIN + q,
        "NUL bytes": head(b"Nul\x00octet") + PLAIN + q.replace(b"e", b"e\x00"),
        "unknown charset": head(b"Jeu inconnu") + text_part(q + b" \xe9t\xe9",
                                                            charset=b"x-inconnu"),
        "wrong charset": head(b"Mauvais jeu") + text_part("Été à Périgueux".encode("latin-1"),
                                                          charset=b"utf-8"),
        "refused codecs": multipart(b"Codecs", [text_part(q, charset=c) for c in (
            b"utf-16", b"utf-7", b"punycode", b"zlib", b"rot13", b"\"", b"idna")]),
        "encoded words in garbage": head(b"=?x-inconnu?B?!!!?= =?utf-8?Q?=ZZ?= =?utf-8?B?AA==?=",
                                         sender=b"=?utf-8?B?TWFyAGll?= <martin@example.fr>")
        + PLAIN + q,
        "20 MB attachment": multipart(b"Plans", [text_part(b"Voici les plans."),
                                                 attachment(b"plans.pdf", rng.randbytes(20 * MB))]),
        "1,000 parts": multipart(b"Photos", [text_part(b"Les photos.")] + [
            attachment(b"p%d.png" % i, b"\x89PNG\r\n\x1a\n", b"image/png") for i in range(1000)]),
        "200 levels of nesting": head(b"Poupees") + nested(200),
        "50 forwards deep": head(b"Tr: Tr: Tr") + b"Content-Type: message/rfc822\r\n\r\n"
        + forwarded(50),
        "no From": head(b"Sans expediteur").replace(
            b"From: Mme Martin <martin@example.fr>\r\n", b"") + PLAIN + q,
        "two From": head(b"Deux expediteurs",
                         extra=b"From: Ludo <ludo@icidordogne.fr>\r\n") + PLAIN + q,
        "From unparsable": head(b"Adresse", sender=b"<<<@@@>>> (((") + PLAIN + q,
        "truncated": multipart(b"Coupe", [text_part(q), attachment(
            b"plan.pdf", rng.randbytes(50_000))])[:30_000],
        "headers only": head(b"Rien apres"),
        "binary garbage": rng.randbytes(65_536),
        "garbage after the headers": head(b"Bruit") + PLAIN + rng.randbytes(65_536),
        "8-bit headers": head("Été à Périgueux — réponse".encode()
                              + b" \xe9t\xe9 \xff\xfe",
                              sender="Hélène Martin".encode() + b" \xe9 <martin@example.fr>")
        + PLAIN + q,
        "bare LF": (head(b"Fins LF") + PLAIN + q).replace(b"\r\n", b"\n"),
        "bare CR": (head(b"Fins CR") + PLAIN + q).replace(b"\r\n", b"\r"),
        "HTML bomb": head(b"HTML") + b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        + b"<div>" * 100_000 + b"<p>" + q + b"</p>" + b"<table><tr><td>" * 20_000,
        "empty": b"",
    }
    return cases


@pytest.mark.parametrize("name", ["empty", "NUL bytes", "bare CR", "bare LF"])
def test_what_dovecot_does_with_the_worst_bytes(dovecot: Dovecot, name: str) -> None:
    raw = worst_cases()[name]
    if name == "empty":
        with pytest.raises(DovecotError, match="zero byte message"):
            dovecot.append(raw)
        return
    stored = dovecot.message(dovecot.append(raw))
    assert stored is not None and b"\x00" not in stored and b"\n" not in stored.replace(
        b"\r\n", b"") and b"\r" not in stored.replace(b"\r\n", b"")
    if name == "NUL bytes":
        assert stored == raw.replace(b"\x00", b"\x80")
    else:
        assert stored == raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(
            b"\n", b"\r\n")


async def cursor_of(channel: EmailChannel, axi: Any) -> Cursor | None:
    assert channel.config.imap is not None
    return Cursor.loads(await axi.store.read_cursor("email", channel.config.imap.cursor_key))


async def replies(axi: Any) -> dict[int, list[tuple[str, str]]]:
    """inbound id → (genre, state) of each outbound row answering it."""
    async with axi.store.db.sessions() as session:
        rows = (await session.execute(text(
            "SELECT en_reponse_a, coalesce(metadata->>'genre', 'reply'), etat FROM messages "
            "WHERE sens = 'sortant' AND en_reponse_a IS NOT NULL ORDER BY id"))).all()
    found: dict[int, list[tuple[str, str]]] = {}
    for answered, genre, state in rows:
        found.setdefault(int(answered), []).append((str(genre), str(state)))
    return found


async def errors_of(axi: Any) -> dict[int, str]:
    """inbound id → its `erreur` (why it was given up), when it has one."""
    async with axi.store.db.sessions() as session:
        rows = (await session.execute(text(
            "SELECT id, erreur FROM messages WHERE sens = 'entrant' AND erreur IS NOT NULL"
        ))).all()
    return {int(r[0]): str(r[1]) for r in rows}


async def nothing_to_send(axi: Any) -> bool:
    return await axi.store.pending_counts() == {}


def timed(what: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return what(), time.perf_counter() - start


async def test_the_worst_mail_through_dovecot_and_the_channel(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama, dovecot: Dovecot, smtp_capture: SmtpCapture,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    await empty_tables(db)
    cases = worst_cases()
    # one sender writes thirty mails in a minute: not the storm the caps are about here.
    # The mails are appended while the channel reads: Dovecot announces some of them at the
    # end of a SEARCH or FETCH, never again at the next IDLE (renewed every 60 s here), so
    # this also needs the reader to search again after such a pass instead of idling.
    channel = EmailChannel(email_config(dovecot, smtp_capture, max_per_sender_hour=1000,
                                        max_per_hour=1000))
    async with email_axi(db, database_url, test_data_dir, ollama_server, channel) as axi:
        assert channel.config.imap is not None
        await until(lambda: cursor_of(channel, axi), 20, message="the mailbox was never read")

        appended: dict[int, str] = {}
        refused: dict[str, str] = {}
        for name, raw in cases.items():
            try:
                uid, seconds = timed(lambda raw=raw: dovecot.append(raw))  # type: ignore[misc]
            except DovecotError as exc:
                refused[name] = str(exc)
                continue
            assert seconds < 10, f"{name}: APPEND took {seconds:.1f} s"
            appended[uid] = name
        assert list(refused) == ["empty"], refused  # a zero-byte message: nothing to deliver

        started = time.perf_counter()
        try:
            rows = await settled(axi, len(appended))
        except AssertionError as exc:
            have = {r.identifiant_externe for r in await inbound(axi)}
            missing = [appended[u] for u, r, _, _ in dovecot.fetch() if external_id(r) not in have]
            raise AssertionError(f"{exc}\nnot stored: {missing}; channel: {channel.status()}; "
                                 f"cursor: {await cursor_of(channel, axi)}") from None
        await until(lambda: nothing_to_send(axi), 30, message="replies still waiting to be sent")
        took = time.perf_counter() - started
        assert took < 40, f"{len(appended)} worst mails took {took:.1f} s to handle"

        # stored exactly once each: the external id is the hash of what Dovecot gives back
        stored = {uid: raw for uid, raw, _, _ in dovecot.fetch()}
        assert sorted(stored) == sorted(appended)
        by_ext = {r.identifiant_externe: r for r in rows}
        assert len(rows) == len(by_ext) == len(appended)
        name_of = {external_id(stored[uid]): name for uid, name in appended.items()}
        assert set(by_ext) == set(name_of), [appended[u] for u in stored
                                             if external_id(stored[u]) not in by_ext]

        # each answered, held with its reason, or (the core's decision, not the channel's)
        # given up with a notice to the sender when too long for the model
        answered, given_up = await replies(axi), await errors_of(axi)
        outcome: dict[str, str] = {}
        for ext, row in by_ext.items():
            name = name_of[ext]
            sent = answered.get(row.id)
            if row.etat == "traite":
                assert sent is not None and [s for _, s in sent] == ["envoye"], (name, sent)
                outcome[name] = "traite"
            elif row.etat == "abandonne":
                assert sent == [("notice", "envoye")], (name, sent)
                outcome[name] = f"abandonne ({given_up.get(row.id)})"
            else:
                assert row.etat == "retenu", (name, row.etat)
                reason = row.metadata.get("retenu")
                assert isinstance(reason, str) and reason.strip(), (name, row.metadata)
                assert sent is None, (name, sent)
                outcome[name] = f"retenu ({reason.split(' :')[0]})"
        # what happens to each is decided, not an accident
        assert {n: o.split(" (")[0] for n, o in outcome.items()} == {
            n: expected(n) for n in appended.values()}, outcome
        assert outcome["1 MB Authentication-Results"] == "retenu (non authentifié)"
        assert outcome["two From"] == "retenu (non authentifié)"
        for name in ("no From", "From unparsable", "binary garbage"):
            assert outcome[name] == "retenu (garde-fou)", (name, outcome[name])

        # the cursor is past the last one; nothing raised, nothing logged as an error
        cursor = await cursor_of(channel, axi)
        assert cursor is not None and cursor.last_uid == max(dovecot.uids())
        assert cursor.uidvalidity == dovecot.uidvalidity()
        assert channel.last_error is None, channel.last_error
        assert channel.reconnects == 0
        assert axi.channel_states["email"].restarts == 0  # its loop never died
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert errors == [], [r.getMessage()[:300] for r in errors]

        # the raw 20 MB mail is kept whole with its message, and fetching it is quick
        big_uid = next(u for u, n in appended.items() if n == "20 MB attachment")
        big = by_ext[external_id(stored[big_uid])]
        [original] = [f for f in await axi.store.received_files(big.id)
                      if f.nom == "original.eml"]
        assert original.contenu == stored[big_uid]
        session = ImapSession(channel.config.imap)
        await session.open()
        try:
            started = time.perf_counter()
            fetched = await session.fetch(big_uid)
            seconds = time.perf_counter() - started
        finally:
            await session.close()
        assert fetched is not None and fetched.raw == stored[big_uid]
        assert seconds < 5, f"fetching the 20 MB mail took {seconds:.1f} s"

        # and the mailbox still works: a normal mail after them is answered
        to_client = sum(1 for m in smtp_capture.messages if m.rcpt_tos == [CLIENT])
        dovecot.append(mail(CLIENT, "Après la tempête", "Vous m'entendez toujours ?",
                            message_id="<apres@example.fr>"))
        rows = await settled(axi, len(appended) + 1)
        assert rows[-1].etat == "traite" and "Après la tempête" in rows[-1].texte

        async def replied() -> bool:
            return any(m.message["In-Reply-To"] == "<apres@example.fr>"
                       for m in smtp_capture.messages)
        await until(replied, 30, message="the normal mail after the worst ones was not answered")
        await asyncio.sleep(0.3)
        assert sum(1 for m in smtp_capture.messages if m.rcpt_tos == [CLIENT]) == to_client + 1
        assert channel.last_error is None
