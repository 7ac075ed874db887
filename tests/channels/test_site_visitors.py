"""The agency's website under abuse and accident (channels/site.py, bot/site_access.py),
end to end on a whole Axi: visitors who share an address never read each other, Docker's
proxy is trusted only when configured, an IPv6 /64 is one visitor, the whole site has
daily caps, text PostgreSQL refuses is cleaned rather than a 5xx, a failure logs no
visitor's words, and the agency's own server (a `site` token) is not limited per IP."""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from bot.site_access import MEMOS_PER_DAY
from channels.site import CONTACT_OK, CONTACTS_PER_DAY, MEMO_TEXTS
from memory.database import Database
from tests.channels.test_site import LEGACY_CONTACT, ORIGIN, Site, site_axi
from tests.fakes.ollama_server import FakeOllama

SECRET = "Claire Dupont, 0611223344, je divorce et dois vendre vite"
DOCKER = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
          ipaddress.ip_network("172.16.0.0/12"))


def turn(first: str, last: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": first},
                         {"role": "assistant", "content": "Bonjour !"},
                         {"role": "user", "content": last}], "site_id": "icidordogne"}


def memo(words: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": f"#memo {words}"}],
            "site_id": "icidordogne"}


@asynccontextmanager
async def from_peer(site: Site, peer: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose TCP peer is `peer` (e.g. Docker's bridge gateway), in process."""
    assert site.web.server is not None
    transport = httpx.ASGITransport(app=site.web.server.config.app,  # type: ignore[arg-type]
                                    client=(peer, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://axi",
                                 headers={"Origin": ORIGIN}) as client:
        yield client


def prompts_since(ollama: FakeOllama, calls: int) -> str:
    return json.dumps([b["messages"] for b in ollama.chat_bodies[calls:]], ensure_ascii=False)


# ------------------------------------------------------------------ one address, two people
async def test_two_visitors_behind_one_carrier_ip_never_read_each_other(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    """Two phones behind a mobile carrier's CGNAT (one public IPv4) both open the widget
    with « Bonjour »: one visitor key, but each prompt holds only its own page's turns."""
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site:
        async with site.client(ip="100.64.0.1") as first:
            assert (await first.post("/chat-proxy", json=turn("Bonjour", SECRET))).is_success
        calls = len(ollama_server.chat_bodies)
        async with site.client(ip="100.64.0.1") as second:
            answer = await second.post("/chat-proxy", json={"messages": [
                {"role": "user", "content": "Bonjour"},
                {"role": "assistant", "content": "Bonjour, que cherchez-vous ?"},
                {"role": "user", "content": "Une grange à Vergt"},
                {"role": "assistant", "content": "Nous en avons deux."},
                {"role": "user", "content": "Qu'ai-je dit ?"}], "site_id": "icidordogne"})
        assert answer.status_code == 200
        prompt = prompts_since(ollama_server, calls)
        assert "Une grange à Vergt" in prompt and "Nous en avons deux." in prompt
        assert "divorce" not in prompt and "0611223344" not in prompt
        # both are on record under the one key (forgetting it forgets both)
        visitors = await site.rows("SELECT DISTINCT adresse FROM messages WHERE canal = 'site'")
        assert len(visitors) == 1


async def test_behind_dockers_proxy_the_tunnels_ip_is_believed_only_when_configured(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    """In Docker, cloudflared reaches Axi through docker-proxy: the peer is the bridge's
    gateway. With AXI_TRUSTED_PROXIES covering it, each visitor has its own IP again."""
    async with site_axi(db, database_url, test_data_dir, ollama_server,
                        trusted_proxies=DOCKER) as site:
        async with from_peer(site, "172.18.0.1") as http:
            for ip in ("81.1.1.1", "90.9.9.9"):
                response = await http.post("/chat-proxy", json=turn("Bonjour", "Une maison ?"),
                                           headers={"CF-Connecting-IP": ip})
                assert response.status_code == 200
        visitors = await site.rows("SELECT DISTINCT adresse FROM messages WHERE canal = 'site'")
        assert len(visitors) == 2
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site:  # default
        async with from_peer(site, "172.18.0.1") as http:
            for ip in ("81.1.1.1", "90.9.9.9"):
                await http.post("/chat-proxy", json=turn("Bonjour", "Une maison ?"),
                                headers={"CF-Connecting-IP": ip})
        visitors = await site.rows("SELECT DISTINCT adresse FROM messages WHERE canal = 'site'")
        assert len(visitors) == 1  # a forged header from an untrusted peer counts for nothing


# ------------------------------------------------------------------ limits
async def test_an_ipv6_64_is_one_visitor_for_every_limit(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site:
        answers = []
        for i in range(1, 11):  # a new address of the same /64 each time
            async with site.client(ip=f"2a01:cb00:1:2::{i}") as c:
                answers.append((await c.post("/chat-proxy", json=memo(f"mémo n°{i}")))
                               .json()["content"][0]["text"])
        assert answers == [MEMO_TEXTS["asked"]] * 3 + [MEMO_TEXTS["limited"]] * 7
        [row, *_] = await site.rows("SELECT payload FROM confirmations")
        assert row.payload["ip"] == "2a01:cb00:1:2::/64"  # no more of the visitor than that
        async with site.client(ip="2a01:cb00:1:3::1") as neighbour:  # another /64
            assert (await neighbour.post("/chat-proxy", json=memo("autre"))).json()[
                "content"][0]["text"] == MEMO_TEXTS["asked"]

        contacts = []
        for i in range(1, 8):
            async with site.client(ip=f"2a01:cb00:1:2::{i}:{i}") as c:
                contacts.append((await c.post("/contact", json=LEGACY_CONTACT)).status_code)
        assert contacts == [200] * 5 + [429] * 2
        statuses = []
        for i in range(1, 32):  # the per-minute rate (30) too
            async with site.client(ip=f"2a01:cb00:1:2:{i:x}::1") as c:
                statuses.append((await c.post("/chat-proxy", json={"messages": []})).status_code)
        assert statuses[-1] == 429


async def test_the_whole_site_has_daily_caps(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    """Many addresses (a botnet, many /64s) cannot flood Ludo with memos or the agency
    with contact requests: past the day's cap, a polite refusal (429 for a contact, so
    the visitor knows it was not sent)."""
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site:
        answers = []
        for i in range(MEMOS_PER_DAY + 2):
            async with site.client(ip=f"198.51.100.{i + 1}") as c:
                answers.append((await c.post("/chat-proxy", json=memo(f"n°{i}"))).json()[
                    "content"][0]["text"])
        assert answers == [MEMO_TEXTS["asked"]] * MEMOS_PER_DAY + [MEMO_TEXTS["full"]] * 2
        async with site.app.store.db.sessions.begin() as s:  # today's requests so far
            await s.execute(text(
                "INSERT INTO demandes_contact (nom, email, message, ip, relaye_le) "
                "SELECT 'Visiteur', 'v@example.fr', 'Bonjour', '203.0.113.' || (n % 250), now() "
                "FROM generate_series(1, :n) AS n"), {"n": CONTACTS_PER_DAY})
        async with site.client(ip="192.0.2.1") as c:
            refused = await c.post("/contact", json=LEGACY_CONTACT)
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
        assert refused.json()["message"].startswith("L'agence reçoit exceptionnellement")
        assert refused.headers["access-control-allow-origin"] == ORIGIN
        assert len(await site.rows("SELECT 1 FROM demandes_contact")) == CONTACTS_PER_DAY


async def test_the_agencys_own_server_with_a_site_token_is_not_limited_per_ip(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    """`axi tokens create … --scope site`: the agency's server relays all its visitors
    from one IP. Any other token on these public endpoints is ignored (never a 401)."""
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site:
        ludo = await site.app.store.get_person("Ludo")
        server = (await site.app.store.create_token(ludo.id, scope="site")).secret
        chat = (await site.app.store.create_token(ludo.id, scope="chat")).secret

        async def contacts(token: str | None, ip: str, n: int) -> list[int]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with site.client(origin=None, ip=ip) as c:
                return [(await c.post("/contact", json=LEGACY_CONTACT, headers=headers))
                        .status_code for _ in range(n)]

        assert await contacts(server, "203.0.113.50", 8) == [200] * 8
        assert await contacts(chat, "203.0.113.51", 6) == [200] * 5 + [429]
        assert await contacts("pas-un-jeton", "203.0.113.52", 6) == [200] * 5 + [429]
        async with site.client(origin=None, ip="203.0.113.50") as c:
            headers = {"Authorization": f"Bearer {server}"}
            statuses = [(await c.post("/chat-proxy", json={"messages": []}, headers=headers))
                        .status_code for _ in range(35)]
            assert statuses == [400] * 35  # no 429: past the per-minute rate of an IP
            answers = [(await c.post("/chat-proxy", json=memo(f"n°{i}"), headers=headers))
                       .json()["content"][0]["text"] for i in range(5)]
            assert answers == [MEMO_TEXTS["asked"]] * 5
        asked = await site.rows("SELECT payload FROM confirmations")
        assert {r.payload["ip"] for r in asked} == {None}


# ------------------------------------------------------------------ text and logs
async def test_text_postgresql_refuses_is_cleaned_never_a_5xx(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site, \
            site.client() as c:
        body = ('{"name": "Jeanne", "email": "j@example.fr", '
                '"message": "Je voudrais visiter", "bien": "Longère \\ud83c"}')  # half an emoji
        contact = await c.post("/contact", content=body,
                               headers={"content-type": "application/json"})
        assert contact.status_code == 200 and contact.json()["message"] == CONTACT_OK
        [row] = await site.rows("SELECT bien FROM demandes_contact")
        assert row.bien == "Longère \ufffd"
        chat = await c.post("/chat-proxy", content=(
            '{"site_id": "icidordogne\\ud83c", "messages": [{"role": "user", '
            '"content": "Bonjour \\ud83d"}]}'), headers={"content-type": "application/json"})
        assert chat.status_code == 200
        assert chat.json()["content"][0]["text"] == "Bonjour, vous pouvez compter sur nous."
        [msg] = await site.rows("SELECT texte, metadata FROM messages WHERE canal = 'site' "
                                "AND sens = 'entrant'")
        assert msg.metadata["fil"] == {"site": "icidordogne\ufffd"}
        noted = await c.post("/chat-proxy", json=memo("visites\x00 le samedi"))
        assert noted.json()["content"][0]["text"] == MEMO_TEXTS["asked"]
        [asked] = await site.rows("SELECT payload FROM confirmations")
        assert asked.payload["texte"] == "visites le samedi"


async def test_a_contact_not_stored_logs_no_visitors_words(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site:
        async with site.app.store.db.sessions.begin() as s:  # the database refuses it
            await s.execute(text(
                "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refusé pour le test'; END $$"))
            await s.execute(text("CREATE TRIGGER test_refuse BEFORE INSERT ON demandes_contact "
                                 "FOR EACH ROW EXECUTE FUNCTION test_refuse()"))
        try:
            async with site.client() as c:
                response = await c.post("/contact", json=LEGACY_CONTACT)
        finally:
            async with site.app.store.db.sessions.begin() as s:
                await s.execute(text("DROP TRIGGER test_refuse ON demandes_contact"))
                await s.execute(text("DROP FUNCTION test_refuse()"))
    assert response.status_code == 503 and response.headers["retry-after"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "contact request not stored" in logged
    for words in ("Jeanne", "jeanne.martin@example.fr", "06 12 34 56 78", "visiter"):
        assert words not in logged


# ------------------------------------------------------------------ RGPD
async def test_a_visitors_memo_goes_with_forget_and_with_the_purge(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    async with site_axi(db, database_url, test_data_dir, ollama_server) as site:
        for ip, words in (("203.0.113.77", "je suis Paul Durand, 06 11 22 33 44"),
                          ("203.0.113.78", "je suis Marie Dubois")):
            async with site.client(ip=ip) as c:
                await c.post("/chat-proxy", json=memo(words))
        [paul, _] = await site.rows("SELECT id, payload FROM confirmations ORDER BY id")
        await site.app.store.forget_address(paul.payload["visiteur"])
        left = await site.rows("SELECT payload FROM confirmations")
        assert [r.payload["texte"] for r in left] == ["je suis Marie Dubois"]
        questions = await site.rows("SELECT texte FROM messages")
        assert questions and not any("Paul" in q.texte for q in questions)
        async with site.app.store.db.sessions.begin() as s:
            await s.execute(text("UPDATE confirmations SET cree_le = now() - interval "
                                 "'400 days', expire_le = now() - interval '393 days'"))
            await s.execute(text("UPDATE messages SET cree_le = now() - interval '400 days'"))
        await site.app.store.purge_visitor_data(365)
        assert not await site.rows("SELECT 1 FROM confirmations")
        assert not await site.rows("SELECT 1 FROM messages WHERE texte LIKE '%Marie%'")
