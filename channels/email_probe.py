"""`axi doctor`'s mail checks: log in to the IMAP server (and open Axi's folder) and to
the SMTP server, with the channel's own configuration, sending and reading nothing.

Why apart from channels/email.py: the channel's loops never need these, and the doctor
must say in plain words what to fix (a refused password, a wrong port, a TLS mismatch)
instead of the raw exception."""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

import aiosmtplib

from bot.channel import ProbeFailed
from channels.email_imap import ImapError, ImapSession

if TYPE_CHECKING:
    from channels.email import SmtpConfig
    from channels.email_imap import ImapConfig

TIMEOUT_S = 15.0


async def probe_imap(config: ImapConfig) -> str:
    from dataclasses import replace

    session = ImapSession(replace(config, timeout_s=min(config.timeout_s, TIMEOUT_S)))
    try:
        await session.open()
    except ImapError as exc:
        text = str(exc)
        if "login refused" in text:
            raise ProbeFailed(f"IMAP refused the login of {config.user}",
                              "check AXI_IMAP_USER and AXI_IMAP_PASSWORD (the mailbox's own "
                              "password or an application password)") from None
        if "cannot open folder" in text:
            raise ProbeFailed(f"IMAP has no folder {config.folder!r}",
                              "create it in the mailbox or fix AXI_IMAP_FOLDER") from None
        raise ProbeFailed(f"cannot reach IMAP {config.host}:{config.port} ({text[:200]})",
                          "check AXI_IMAP_HOST, AXI_IMAP_PORT and AXI_IMAP_TLS (ssl on 993, "
                          "none only on a local server)") from None
    finally:
        await session.close()
    return f"IMAP {config.user}@{config.host} ({config.folder})"


async def probe_smtp(config: SmtpConfig) -> str:
    client = aiosmtplib.SMTP(hostname=config.host, port=config.port,
                             use_tls=config.tls == "ssl",
                             start_tls=True if config.tls == "starttls" else False,
                             tls_context=config.ssl_context, timeout=TIMEOUT_S)
    try:
        await client.connect()
        if config.user:
            await client.login(config.user, config.password or "")
    except aiosmtplib.SMTPAuthenticationError:
        raise ProbeFailed(f"SMTP refused the login of {config.user}",
                          "check AXI_SMTP_USER and AXI_SMTP_PASSWORD") from None
    except (aiosmtplib.SMTPException, OSError, TimeoutError, ssl.SSLError) as exc:
        raise ProbeFailed(f"cannot reach SMTP {config.host}:{config.port} "
                          f"({type(exc).__name__}: {str(exc)[:200]})",
                          "check AXI_SMTP_HOST, AXI_SMTP_PORT and AXI_SMTP_TLS (ssl on 465, "
                          "starttls on 587)") from None
    finally:
        if client.is_connected:
            try:
                await client.quit()
            except aiosmtplib.SMTPException:
                client.close()
    return f"SMTP {config.user or 'without login'}@{config.host}"
