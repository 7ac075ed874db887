"""The people's clients, one a channel (bench/soak_world.py mixes them into the world):
how each person sends a message through its channel's real protocol, and what each saw.

- Telegram: the loopback Bot API's updates in, its sendMessage / drafts / edits out.
- Email: a raw mail appended to Dovecot's inbox (Authentication-Results on top when our MX
  vouches for the sender); the replies as the SMTP capture server received them.
- The HTTP API (`POST /api/chat`), a careful client: after a failure it looks its message
  up in its history before sending it again.
- The site's `/chat-proxy` and `/contact`, each visitor behind its own `CF-Connecting-IP`.
- Axis over MCP: `parler_a_axi`, and its mailbox for the late replies.

Apart from the world (the servers, the lifecycle, the disruptions, the checks' inputs) so
that each channel's client reads on its own; what they saw is recorded as `Seen`
(bench/soak_checks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import make_msgid
from typing import Any

import httpx

from bench.soak_checks import REPLY_TOKEN, TOKEN, DigestMail, Seen, SeenKind, Sent, dpe_numbers
from bench.soak_people import Person, Planned
from bench.soak_servers import AxiProcess
from bot.notices import STRANGER_NOTICE
from tests.fakes.dovecot import Dovecot
from tests.fakes.smtp_capture import SmtpCapture
from tests.fakes.telegram_server import FakeTelegram

log = logging.getLogger("soak")

AXI_ADDRESS = "axi@icidordogne.fr"
AUTHSERV = "mx.icidordogne.fr"
SITE_ORIGIN = "https://www.icidordogne.fr"
SITE_ID = "icidordogne-bugue"
NOT_YET = "n'a pas encore répondu"


def mail(sender: str, subject: str, body: str, *, vouched: bool) -> tuple[str, bytes]:
    """(Message-ID, raw mail) as our MX delivers it: its Authentication-Results on top when
    it vouches for the sender (dmarc=pass), none otherwise."""
    domain = sender.rpartition("@")[2]
    message_id = make_msgid(domain=domain)
    lines = []
    if vouched:
        lines.append(f"Authentication-Results: {AUTHSERV}; spf=pass smtp.mailfrom={domain}; "
                     f"dmarc=pass header.from={domain}")
    lines += [f"From: {sender}", f"To: {AXI_ADDRESS}", f"Subject: {subject}",
              f"Message-ID: {message_id}", "Date: Tue, 01 Dec 2026 10:00:00 +0100",
              "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit"]
    return message_id, ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


def plain_body(message: Any) -> str:
    try:
        part = message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""
    except (KeyError, LookupError, ValueError):
        return ""


class SoakClients:
    """Every person's client, sending and seeing; mixed into SoakWorld, which starts the
    servers and `axi run` below and holds the records declared here."""

    url: str
    reply_timeout_s: float
    people: list[Person]
    planned: list[Planned]
    tokens: dict[str, str]  # person key -> API token
    sent: dict[str, Sent]
    client_seen: list[Seen]
    cloud_texts: list[str]  # what Axis (Claude.ai) read over MCP
    mono_minus_wall: float
    axi: AxiProcess
    telegram: FakeTelegram
    dovecot: Dovecot
    smtp: SmtpCapture

    # ------------------------------------------------------------------ sending
    def _sent(self, p: Planned) -> None:
        self.sent[p.token] = Sent(p.token, p.person.key, p.channel, p.conversation, p.expect,
                                  time.monotonic(), p.seq, p.secret)

    def _attempt(self, p: Planned) -> None:
        old = self.sent[p.token]
        self.sent[p.token] = Sent(old.token, old.person, old.channel, old.conversation,
                                  old.expect, old.at, old.seq, old.secret, old.attempts + 1)

    async def send_telegram(self, p: Planned) -> None:
        assert p.person.telegram is not None
        self._sent(p)
        await asyncio.to_thread(self.telegram.message, p.person.telegram, p.text,
                                first_name=p.person.name.split()[-1])

    async def send_email(self, p: Planned) -> None:
        assert p.person.email is not None
        subject = f"Question réf. QREF-{p.token}"
        _, raw = mail(p.person.email, subject, p.text, vouched=p.person.kind != "mail_stranger")
        self._sent(p)
        await asyncio.to_thread(self.dovecot.append, raw)

    def _seen(self, channel: str, p: Planned, key: str, answer: str) -> bool:
        """Record the replies to `p` found in `answer`; True when there is one."""
        found = False
        for token in REPLY_TOKEN.findall(answer):
            self.client_seen.append(Seen(channel, p.conversation, "reply", time.monotonic(),
                                         key, token))
            found = found or token == p.token
        return found

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.axi.up.wait()

    async def send_web(self, p: Planned, http: httpx.AsyncClient, deadline: float) -> None:
        """The API's careful client: after a failure it looks its message up in its
        history before sending it again, then follows it by its status URL."""
        auth = {"Authorization": f"Bearer {self.tokens[p.person.key]}"}
        self._sent(p)
        message_id: int | None = None
        first = True
        while time.monotonic() < deadline:
            if message_id is None and not first:
                found = await self._web_history(p, http, auth)
                if found is None:
                    self._attempt(p)
                elif found[1] is not None:
                    self._seen("web", p, f"web:{found[1][0]}", found[1][1])
                    return
                else:
                    message_id = found[0]
            first = False
            try:
                if message_id is None:
                    r = await http.post(f"{self.url}/api/chat", headers=auth,
                                        json={"message": p.text, "local_only": p.local_only},
                                        timeout=self.reply_timeout_s + 45)
                else:
                    r = await http.get(f"{self.url}/api/messages/{message_id}", headers=auth,
                                       timeout=30)
            except httpx.HTTPError:
                await self._pause(0.5)
                continue
            if r.status_code in (200, 202):
                body = r.json()
                message_id = int(body.get("message_id") or message_id or 0) or None
                if body.get("reply"):
                    self._seen("web", p, f"web:{body.get('reply_id')}", str(body["reply"]))
                    return
                if r.status_code == 200 and body.get("state") not in (None, "en_attente"):
                    return  # settled without a reply: judged as lost
                await asyncio.sleep(1.0)
                continue
            await self._pause(1.0)  # 429, 5xx: the server said no; look it up and retry

    async def _web_history(self, p: Planned, http: httpx.AsyncClient, auth: dict[str, str]
                           ) -> tuple[int, tuple[int, str] | None] | None:
        """(inbound id, (reply id, reply text) or None) of the message, from the history."""
        while True:
            try:
                r = await http.get(f"{self.url}/api/history", headers=auth,
                                   params={"limit": "100"}, timeout=30)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await self._pause(1.0)
        items = r.json().get("messages") or []
        mine = [i for i in items if i.get("direction") == "in" and p.token in i.get("text", "")]
        if not mine:
            return None
        inbound = int(mine[0]["id"])
        replies = [i for i in items if i.get("direction") == "out"
                   and i.get("in_reply_to") == inbound and i.get("kind") == "message"]
        return inbound, ((int(replies[0]["id"]), str(replies[0]["text"])) if replies else None)

    async def send_site(self, p: Planned, http: httpx.AsyncClient, deadline: float,
                        page: list[dict[str, str]]) -> None:
        """The site's widget: the page's conversation so far, the visitor's IP through
        the tunnel; a visitor who gets no answer sends it again, as the widget asks."""
        headers = {"Origin": SITE_ORIGIN, "CF-Connecting-IP": p.person.ip or "203.0.113.1"}
        self._sent(p)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            if attempt > 1:
                self._attempt(p)
            body = {"system": "Tu es l'assistant du site.", "site_id": SITE_ID,
                    "messages": [*page, {"role": "user", "content": p.text}]}
            try:
                r = await http.post(f"{self.url}/chat-proxy", json=body, headers=headers,
                                    timeout=self.reply_timeout_s + 45)
            except httpx.HTTPError:
                await self._pause(0.5)
                continue
            answer = ""
            with contextlib.suppress(ValueError, KeyError, IndexError, TypeError):
                answer = str(r.json()["content"][0]["text"])
            if r.status_code == 200 and self._seen("site", p, f"site:{p.token}:{attempt}",
                                                    answer):
                page += [{"role": "user", "content": p.text},
                         {"role": "assistant", "content": answer}]
                return
            wait = float(r.headers.get("Retry-After") or 2.0) if r.status_code == 429 else 2.0
            await self._pause(wait)

    async def send_contact(self, p: Planned, http: httpx.AsyncClient, deadline: float) -> None:
        headers = {"Origin": SITE_ORIGIN, "CF-Connecting-IP": p.person.ip or "203.0.113.1"}
        name = p.person.name
        body = {"name": name, "email": f"{p.person.key}@exemple-visiteur.fr",
                "phone": "05 53 00 00 00", "message": p.text, "bien": "", "site_id": SITE_ID}
        self._sent(p)
        first = True
        while time.monotonic() < deadline:
            if not first:
                self._attempt(p)
            first = False
            try:
                r = await http.post(f"{self.url}/contact", json=body, headers=headers,
                                    timeout=60)
                if r.status_code == 200:
                    return
                if r.status_code == 400:  # the form itself is refused: sending again is vain
                    log.warning("contact form of %s refused: %s", p.token, r.text[:300])
                    return
                wait = float(r.headers.get("Retry-After") or 2.0)
            except httpx.HTTPError:
                wait = 0.5
            await self._pause(min(wait, 30.0))

    @asynccontextmanager
    async def mcp(self, token: str) -> AsyncIterator[Any]:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"},
                                      timeout=httpx2.Timeout(self.reply_timeout_s + 45)) as http:
            async with Client(streamable_http_client(f"{self.url}/mcp", http_client=http),
                              mode="auto") as client:  # type: ignore[arg-type]
                yield client

    @staticmethod
    def _tool_text(result: Any) -> str:
        return "\n".join(getattr(c, "text", "") for c in result.content)

    async def send_axis(self, p: Planned, deadline: float) -> None:
        """Axis calls `parler_a_axi`; a late reply comes through its mailbox (read by
        `axis_mailbox`); a call cut by a kill is made again, as Axis would."""
        self._sent(p)
        attempt = 0
        while time.monotonic() < deadline:
            attempt += 1
            if attempt > 1:
                self._attempt(p)
            try:
                async with self.mcp(self.tokens[p.person.key]) as client:
                    result = await client.call_tool("parler_a_axi", {"message": p.text})
            except Exception as exc:  # the connection cut by a kill, the server starting…
                log.debug("axis call for %s failed: %s", p.token, exc)
                await self._pause(0.5)
                continue
            said = self._tool_text(result)
            self.cloud_texts.append(said)
            if self._seen("axis", p, f"axis-call:{p.token}:{attempt}", said) or NOT_YET in said:
                return
            if "Trop de demandes" in said:
                await asyncio.sleep(2.0)
                continue
            return  # no reply will come: judged as lost

    async def axis_mailbox(self, stop: asyncio.Event) -> None:
        """Axis reads and acknowledges its mailbox every few seconds."""
        token = next(self.tokens[p.key] for p in self.people if p.kind == "axis")
        by_token = {p.token: p for p in self.planned}
        while not stop.is_set():
            await asyncio.sleep(2.0)
            if not self.axi.up.is_set():
                continue
            try:
                async with self.mcp(token) as client:
                    said = self._tool_text(await client.call_tool(
                        "lire_messages", {"non_lus_seulement": True}))
                    self.cloud_texts.append(said)
                    items = re.split(r"(?m)^- n°(\d+) \(", said)
                    ids = []
                    for i in range(1, len(items) - 1, 2):
                        ids.append(int(items[i]))
                        for t in REPLY_TOKEN.findall(items[i + 1]):
                            planned = by_token.get(t)
                            conversation = planned.conversation if planned else "axis:?"
                            self.client_seen.append(Seen("axis", conversation, "reply",
                                                         time.monotonic(),
                                                         f"axis-box:{items[i]}", t))
                    if ids:
                        await client.call_tool("acquitter_messages", {"ids": ids})
            except Exception as exc:
                log.debug("axis mailbox: %s", exc)

    # ------------------------------------------------------------------ seeing
    def telegram_seen(self) -> list[Seen]:
        out: list[Seen] = []
        for i, call in enumerate(list(self.telegram.calls)):
            method = call.method.lower()
            if method not in ("sendmessage", "sendmessagedraft", "editmessagetext") \
                    or call.status != 200:
                continue
            words = html.unescape(str(call.params.get("text") or ""))
            conversation = f"telegram:{call.params.get('chat_id')}"
            if method == "sendmessage" and words.strip() == STRANGER_NOTICE:
                out.append(Seen("telegram", conversation, "stranger_notice", call.at, f"tg:{i}"))
                continue
            kind: SeenKind = "reply" if method == "sendmessage" else "draft"
            for token in REPLY_TOKEN.findall(words):
                out.append(Seen("telegram", conversation, kind, call.at, f"tg:{i}", token))
        return out

    def mail_seen(self) -> tuple[list[Seen], list[DigestMail]]:
        seen: list[Seen] = []
        digests: list[DigestMail] = []
        for captured in list(self.smtp.messages):
            message = captured.message
            key = str(message["Message-ID"] or id(captured))
            subject = str(message["Subject"] or "")
            body = plain_body(message)
            at = captured.received_at + self.mono_minus_wall
            rcpt = tuple(r.lower() for r in captured.rcpt_tos)
            if subject.startswith("Veille DPE"):
                digests.append(DigestMail(key, rcpt, tuple(dpe_numbers(body))))
            elif "Nouvelle demande de contact" in body:
                for token in TOKEN.findall(body):
                    seen.append(Seen("contact", f"contact:{rcpt[0]}", "relay", at, key, token))
            else:
                for token in REPLY_TOKEN.findall(body):
                    seen.append(Seen("email", f"email:{rcpt[0] if rcpt else '?'}", "reply",
                                     at, key, token))
        return seen, digests
