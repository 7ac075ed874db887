"""The mail test servers work with the real client libraries Axi uses: aioimaplib against
Dovecot (implicit TLS verified through the fake's CA, and plain), aiosmtplib against the
SMTP capture (plain, STARTTLS, implicit TLS, AUTH), and their failure modes (restart
mid-IDLE, UIDVALIDITY change, 451, server down) behave as the channel's tests assume.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from aioimaplib import aioimaplib

from tests.fakes import mail_fixtures
from tests.fakes.dovecot import Dovecot, imap_utf7, imap_utf7_decode
from tests.fakes.smtp_capture import SmtpCapture
from tests.waiting import until

# the fixtures (assigned, not imported: an import would trip ruff's F811 on each test)
dovecot_server = mail_fixtures.dovecot_server
dovecot = mail_fixtures.dovecot
smtp_capture_factory = mail_fixtures.smtp_capture_factory
smtp_capture = mail_fixtures.smtp_capture

RAW = (b"From: Mme Durand <durand@example.org>\r\n"
       b"To: Axi <axi@icidordogne.fr>\r\n"
       b"Subject: =?utf-8?q?Maison_=C3=A0_Vergt?=\r\n"
       b"Message-ID: <1@example.org>\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n"
       b"Content-Transfer-Encoding: 8bit\r\n"
       b"\r\n"
       b"Bonjour, la maison \xc3\xa0 Vergt est-elle toujours \xc3\xa0 vendre ?\r\n")


def raw_mail(n: int) -> bytes:
    return RAW.replace(b"<1@", f"<{n}@".encode())


@contextlib.asynccontextmanager
async def imap(server: Dovecot, *, tls: bool = True, folder: str = "INBOX",
               lost: list[Any] | None = None) -> AsyncIterator[Any]:
    """A logged-in aioimaplib client with `folder` selected."""
    client: Any
    if tls:
        client = aioimaplib.IMAP4_SSL(server.host, server.ssl_port, timeout=10,
                                      ssl_context=server.ssl_context())
    else:
        client = aioimaplib.IMAP4(server.host, server.port, timeout=10,
                                  conn_lost_cb=(lost.append if lost is not None else None))
    try:
        await client.wait_hello_from_server()
        assert (await client.login(server.user, server.password)).result == "OK"
        if folder:
            assert (await client.select(folder)).result == "OK"
        yield client
    finally:
        transport = client.protocol.transport
        if transport is not None and not transport.is_closing():
            with contextlib.suppress(Exception):
                if client.has_pending_idle():
                    client.idle_done()
                await asyncio.wait_for(client.logout(), 2)
        if transport is not None:
            transport.close()


def selected_uidvalidity(response: Any) -> int:
    for line in response.lines:
        text = bytes(line)
        if b"UIDVALIDITY" in text:
            return int(text.split(b"UIDVALIDITY ")[1].split(b"]")[0])
    raise AssertionError(f"no UIDVALIDITY in {response.lines}")


def search_uids(response: Any) -> list[int]:
    assert response.result == "OK", response
    words = bytes(response.lines[0]).split()
    return [int(w) for w in words if w.isdigit()]


# ---------------------------------------------------------------------- Dovecot
@pytest.mark.parametrize("tls", [True, False], ids=["imaps", "plain"])
async def test_aioimaplib_reads_the_appended_bytes_exactly(dovecot: Dovecot, tls: bool) -> None:
    uids = [dovecot.append(raw_mail(1)), dovecot.append(raw_mail(2), flags=["\\Seen"])]
    assert uids == [1, 2]  # a fresh mailbox per test: UIDs from 1
    assert dovecot.uids() == uids
    async with imap(dovecot, tls=tls) as client:
        assert search_uids(await client.uid_search("ALL", charset=None)) == uids
        fetched = await client.uid("fetch", "1", "(UID BODY.PEEK[])")
        assert fetched.result == "OK"
        assert bytes(fetched.lines[1]) == raw_mail(1)
    # BODY.PEEK[] marks nothing read; the flags given to APPEND are kept
    assert "\\Seen" not in dovecot.flags(1)
    assert "\\Seen" in dovecot.flags(2)
    assert dovecot.messages() == [raw_mail(1), raw_mail(2)]


async def test_tls_is_verified_and_plain_port_offers_starttls(dovecot: Dovecot) -> None:
    with socket.create_connection((dovecot.host, dovecot.port), timeout=5) as sock:
        sock.sendall(b"a CAPABILITY\r\n")
        said = b""
        while b"a OK" not in said:
            said += sock.recv(4096)
        assert b"STARTTLS" in said
    with pytest.raises(ssl.SSLCertVerificationError):  # a client must not trust it blindly
        client = aioimaplib.IMAP4_SSL(dovecot.host, dovecot.ssl_port, timeout=5,
                                      ssl_context=ssl.create_default_context())
        await client.wait_hello_from_server()
    client = aioimaplib.IMAP4(dovecot.host, dovecot.port, timeout=5)
    await client.wait_hello_from_server()
    assert (await client.login(dovecot.user, "not the password")).result == "NO"
    await client.logout()


async def test_idle_gets_exists_when_mail_arrives_from_another_connection(
        dovecot: Dovecot) -> None:
    async with imap(dovecot) as client:
        idle = await client.idle_start(timeout=30)
        started = time.monotonic()
        uid = await asyncio.to_thread(dovecot.append, raw_mail(1))
        push = await client.wait_server_push(timeout=10)
        assert any(b"EXISTS" in bytes(line) for line in push), push
        assert time.monotonic() - started < 5  # Dovecot batches notifications for 0.5 s
        client.idle_done()
        assert (await asyncio.wait_for(idle, 5)).result == "OK"
        assert search_uids(await client.uid_search("ALL", charset=None)) == [uid]


@pytest.mark.parametrize("graceful", [False, True], ids=["killed", "stopped"])
async def test_restart_drops_the_idle_connection_and_keeps_port_and_mail(
        dovecot: Dovecot, graceful: bool) -> None:
    uid = dovecot.append(raw_mail(1))
    validity, port, ssl_port = dovecot.uidvalidity(), dovecot.port, dovecot.ssl_port
    lost: list[Any] = []
    async with imap(dovecot, tls=False, lost=lost) as client:
        await client.idle_start(timeout=30)
        await asyncio.to_thread(dovecot.restart, graceful=graceful)
        # aioimaplib ends nothing by itself: the connection is closed under it, and only a
        # graceful stop says so in the IDLE stream (SIGKILL: no BYE, wait_server_push blocks)
        await until(lambda: client.protocol.transport.is_closing() and lost, within=5)
        if graceful:
            push = await client.wait_server_push(timeout=5)
            assert any(b"BYE" in bytes(line) for line in push), push
    assert (dovecot.port, dovecot.ssl_port) == (port, ssl_port)
    async with imap(dovecot) as client:
        selected = await client.select("INBOX")
        assert selected_uidvalidity(selected) == validity
        assert search_uids(await client.uid_search("ALL", charset=None)) == [uid]


@pytest.mark.parametrize("renumber", [False, True], ids=["same-uids", "renumbered"])
async def test_change_uidvalidity_keeps_the_messages(dovecot: Dovecot, renumber: bool) -> None:
    dovecot.append_many([raw_mail(1), raw_mail(2)])
    dovecot.append(raw_mail(3), flags=["\\Seen"])
    async with imap(dovecot) as client:
        before = selected_uidvalidity(await client.select("INBOX"))
        new = await asyncio.to_thread(dovecot.change_uidvalidity, renumber=renumber)
        # The session that had INBOX selected learns it at its next command: `* BYE IMAP
        # session state is inconsistent`, and the connection closes. aioimaplib then never
        # completes that command (it waits for its own timeout): watch the transport.
        noop = asyncio.ensure_future(client.noop())
        try:
            await until(lambda: client.protocol.transport.is_closing(), within=5)
        finally:
            noop.cancel()
    assert new != before
    async with imap(dovecot) as client:
        assert selected_uidvalidity(await client.select("INBOX")) == new
        uids = search_uids(await client.uid_search("ALL", charset=None))
    assert uids == ([4, 5, 6] if renumber else [1, 2, 3])
    assert dovecot.messages() == [raw_mail(1), raw_mail(2), raw_mail(3)]
    assert "\\Seen" in dovecot.flags(uids[2])


async def test_folders_kill_and_reset(dovecot: Dovecot) -> None:
    assert imap_utf7("Traités & co") == "Trait&AOk-s &- co"
    assert imap_utf7_decode(imap_utf7("Traités & co")) == "Traités & co"
    dovecot.create_folder("Traités")
    uid = dovecot.append(raw_mail(1), folder="Traités")
    assert dovecot.folders() == ["INBOX", "Traités"]
    async with imap(dovecot, folder=imap_utf7("Traités")) as client:
        assert search_uids(await client.uid_search("ALL", charset=None)) == [uid]
    validity = dovecot.uidvalidity()
    dovecot.kill()
    with pytest.raises(OSError):
        socket.create_connection((dovecot.host, dovecot.ssl_port), timeout=2).close()
    dovecot.start()
    assert dovecot.messages("Traités") == [raw_mail(1)]
    dovecot.reset()  # what the `dovecot` fixture does before each test
    assert dovecot.folders() == ["INBOX"]
    assert dovecot.uids() == []
    assert dovecot.uidvalidity() > validity
    assert dovecot.append(raw_mail(2)) == 1


# ---------------------------------------------------------------------- SMTP capture
def mail(n: int = 1) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Axi <axi@icidordogne.fr>"
    message["To"] = "Mme Durand <durand@example.org>"
    message["Subject"] = f"Réponse {n}"
    message["Message-ID"] = f"<reply-{n}@icidordogne.fr>"
    message.set_content("Bonjour Madame, la maison à Vergt est toujours à vendre.\n")
    return message


async def test_plain_send_is_captured(smtp_capture: SmtpCapture) -> None:
    await aiosmtplib.send(mail(), hostname=smtp_capture.host, port=smtp_capture.port,
                          start_tls=False, timeout=10)
    [captured] = await smtp_capture.wait_for(1)
    assert captured.mail_from == "axi@icidordogne.fr"
    assert captured.rcpt_tos == ["durand@example.org"]
    assert captured.message["Subject"] == "Réponse 1"
    assert "la maison à Vergt" in captured.message.get_content()
    assert captured.raw.startswith(b"From: Axi <axi@icidordogne.fr>")
    assert not captured.tls and captured.auth_user is None
    assert captured.received_at <= time.time()


@pytest.mark.parametrize("tls", ["starttls", "ssl"])
async def test_tls_and_auth_send_is_captured(
        smtp_capture_factory: Callable[..., SmtpCapture], tls: str) -> None:
    server = smtp_capture_factory(tls=tls, require_starttls=(tls == "starttls"), auth=True)
    common: dict[str, Any] = {"hostname": server.host, "port": server.port, "timeout": 10,
                              "tls_context": server.ssl_context(), "username": server.user}
    mode: dict[str, Any] = {"start_tls": True} if tls == "starttls" else {"use_tls": True}
    with pytest.raises(aiosmtplib.SMTPAuthenticationError):
        await aiosmtplib.send(mail(1), password="wrong", **common, **mode)
    await aiosmtplib.send(mail(2), password=server.password, **common, **mode)
    [captured] = await server.wait_for(1)
    assert captured.tls and captured.auth_user == server.user
    assert captured.message["Subject"] == "Réponse 2"
    assert server.auth_failures >= 1  # aiosmtplib tries each mechanism (PLAIN, LOGIN)
    if tls == "starttls":  # refused in clear: STARTTLS is required before MAIL
        with pytest.raises(aiosmtplib.SMTPException):
            await aiosmtplib.send(mail(3), hostname=server.host, port=server.port,
                                  start_tls=False, timeout=10)
        assert len(server.messages) == 1


async def test_fail_next_then_success(smtp_capture: SmtpCapture) -> None:
    target: dict[str, Any] = {"hostname": smtp_capture.host, "port": smtp_capture.port,
                              "timeout": 10}
    smtp_capture.fail_next(451, "4.7.1 Greylisted, try again later")
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await aiosmtplib.send(mail(1), **target)
    assert refused.value.code == 451
    await aiosmtplib.send(mail(2), **target)
    smtp_capture.fail_next(550, "5.1.1 No such user", at="rcpt")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as no_user:
        await aiosmtplib.send(mail(3), **target)
    assert no_user.value.recipients[0].code == 550
    [captured] = await smtp_capture.wait_for(1)
    assert captured.message["Subject"] == "Réponse 2"
    assert smtp_capture.failures_answered == 2


async def test_down_refuses_connections_and_up_listens_again(smtp_capture: SmtpCapture) -> None:
    target: dict[str, Any] = {"hostname": smtp_capture.host, "port": smtp_capture.port,
                              "timeout": 5}
    port = smtp_capture.port
    smtp_capture.down()
    with pytest.raises(aiosmtplib.SMTPConnectError):
        await aiosmtplib.send(mail(1), **target)
    smtp_capture.up()
    assert smtp_capture.port == port
    await aiosmtplib.send(mail(2), **target)
    assert [c.message["Subject"] for c in await smtp_capture.wait_for(1)] == ["Réponse 2"]


def test_wait_for_sync_waits_for_a_sender_in_another_thread(smtp_capture: SmtpCapture) -> None:
    def send() -> None:
        asyncio.run(aiosmtplib.send(mail(1), hostname=smtp_capture.host,
                                    port=smtp_capture.port, timeout=10))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert len(smtp_capture.wait_for_sync(1, timeout=10)) == 1
    finally:
        sender.join()
    with pytest.raises(AssertionError, match="1 message"):
        smtp_capture.wait_for_sync(2, timeout=0.1)


# ---------------------------------------------------------------------- without Dovecot
def test_missing_dovecot_skips_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mail_fixtures, "dovecot_binary", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="dovecot-imapd"):
        mail_fixtures.require_dovecot()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        mail_fixtures.require_dovecot()
