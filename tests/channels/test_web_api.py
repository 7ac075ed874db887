"""The token API (channels/web_api.py, web_sse.py, web_stream.py) end to end: a whole Axi
on real PostgreSQL with the loopback Ollama, its HTTP server on a loopback port (real
uvicorn, real httpx), tokens made with the store. The guard cases (401/403/413/429/404,
bad input) go through httpx's ASGI transport into the same app, which is quicker and
lets a test set the peer address."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.app import Axi
from bot.channel import ChannelSet
from channels.web import WebChannel, build_app
from channels.web_guard import WebConfig, client_ip
from channels.web_stream import LiveStreams
from memory.database import Database
from tests.bot.test_pipeline import make_settings, scripted_reply
from tests.conftest import empty_tables
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

LUDO_REPLY = "Salut, tu peux compter sur moi."
CLIENT_REPLY = "Bonjour, vous pouvez compter sur nous."
NOTE = ("Négociation de la longère de Vergt avec Mme Durand : elle monterait jusqu'à "
        "198 000 €, ne pas le lui dire.")


@dataclass
class Web:
    axi: Axi
    channel: WebChannel
    tokens: dict[str, str] = field(default_factory=dict)
    person_ids: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.channel.port}"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@asynccontextmanager
async def web_axi(db: Database, database_url: str | None, data_dir: Path, ollama: FakeOllama,
                  **config: Any) -> AsyncIterator[Web]:
    """A whole Axi serving HTTP on a loopback port, with Ludo (créateur, tutoyé), Mme
    Durand (client, vouvoyée), a chat token each, and an axis token for Ludo."""
    await empty_tables(db)
    ollama.reply = scripted_reply
    cfg = make_settings(ollama, None, database_url, data_dir, AXI_QUIET_HOURS="off")
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "reply_timeout_s": 15.0,
                              "rate_per_minute": 1000}
    values.update(config)
    channel = WebChannel(WebConfig(**values))
    async with Axi(cfg, ChannelSet({"web": channel}, frozenset({"web"}), None)) as app:
        web = Web(app, channel)
        ludo = await app.store.add_person("Ludo", relation="créateur", comment_interagir="tutoie")
        durand = await app.store.add_person("Mme Durand", relation="client")
        web.person_ids = {"ludo": ludo.id, "durand": durand.id}
        web.tokens = {"ludo": (await app.store.create_token(ludo.id)).secret,
                      "durand": (await app.store.create_token(durand.id)).secret,
                      "axis": (await app.store.create_token(ludo.id, scope="axis")).secret}
        await app.start_channels()
        app.start_loops(extractor=False, maintenance=False, embeddings=False)
        yield web


@pytest.fixture
async def web(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama) -> AsyncIterator[Web]:
    async with web_axi(db, database_url, test_data_dir, ollama_server) as w:
        yield w


def asgi_client(web: Web, peer: str = "127.0.0.1", **config: Any) -> httpx.AsyncClient:
    """The same services in a fresh app (its own limiters) through httpx's ASGI transport,
    the request coming from `peer`."""
    app = build_app(web.axi.services, WebConfig(**config), LiveStreams())
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://axi.test")


@dataclass
class Events:
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    keepalives: int = 0
    order: list[str] = field(default_factory=list)

    def named(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data in self.events if event == name]


async def read_sse(response: httpx.Response, *, stop_after: str | None = None) -> Events:
    """Parse the event stream (`event:` + `data:` blocks, `:` comments) to its end."""
    seen = Events()
    event, data = "message", ""
    async for line in response.aiter_lines():
        if line.startswith(":"):
            seen.keepalives += line.strip() == ": keep-alive"
            seen.order.append("keep-alive")
        elif line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data += line.split(":", 1)[1].strip()
        elif line == "" and data:
            seen.events.append((event, json.loads(data)))
            seen.order.append(event)
            if event == stop_after:
                break
            event, data = "message", ""
    return seen


def conversation_bodies(ollama: FakeOllama) -> list[dict[str, Any]]:
    return [b for b in ollama.chat_bodies if not b.get("format")]


# ================================================================ the whole pipeline
async def test_ludo_writes_and_reads_his_reply_through_the_pipeline(web: Web) -> None:
    async with httpx.AsyncClient(base_url=web.url, headers=web.auth("ludo")) as client:
        me = await client.get("/api/me")
        assert me.status_code == 200
        assert me.json() == {"name": "Ludo", "relation": "créateur", "scope": "chat"}
        sent = await client.post("/api/chat", json={"message": "Bonjour Axi", "extra": 1})
        assert sent.status_code == 200, sent.text
        body = sent.json()
        assert body["reply"] == LUDO_REPLY
        assert set(body) == {"reply", "message_id", "reply_id", "notices"}
        stored = await web.axi.store.get_message(body["message_id"])
        assert (stored.canal, stored.adresse, stored.verifie, stored.texte) == (
            "web", f"personne-{web.person_ids['ludo']}", True, "Bonjour Axi")
        assert stored.reference_fil and stored.reference_fil.startswith("web-")
        assert not stored.metadata.get("local_only")
        again = await client.get(f"/api/messages/{body['message_id']}")
        assert again.status_code == 200
        assert again.json() == {"message_id": body["message_id"], "state": "traite",
                                "reply": LUDO_REPLY, "reply_id": body["reply_id"],
                                "notices": []}
        local = await client.post("/api/chat", json={"message": "Et en local ?",
                                                     "local_only": True})
        assert local.status_code == 200
        assert (await web.axi.store.get_message(local.json()["message_id"])
                ).metadata.get("local_only") is True
        history = (await client.get("/api/history")).json()
        assert [(m["direction"], m["text"]) for m in history["messages"]] == [
            ("out", LUDO_REPLY), ("in", "Et en local ?"), ("out", LUDO_REPLY),
            ("in", "Bonjour Axi")]
        assert history["messages"][2]["in_reply_to"] == body["message_id"]
        assert history["next_before"] is None

    async def sent_by_the_outbox() -> bool:  # through the web channel, like any reply
        reply = await web.axi.store.get_message(body["reply_id"])
        return reply.etat == "envoye" and reply.identifiant_externe == f"web-{reply.id}"

    await until(sent_by_the_outbox, 10)


async def test_a_client_is_vouvoyee_and_never_gets_private_memory(
        web: Web, ollama_server: FakeOllama) -> None:
    await web.axi.store.remember(NOTE, type="note", relation_id=web.person_ids["durand"],
                                 importance=9)
    question = "Où en est la négociation de la longère de Vergt avec Mme Durand ?"
    ollama_server.requests.clear()
    async with httpx.AsyncClient(base_url=web.url) as client:
        client_said = await client.post("/api/chat", json={"message": question},
                                        headers=web.auth("durand"))
        assert client_said.json()["reply"] == CLIENT_REPLY
        client_prompts = json.dumps(conversation_bodies(ollama_server), ensure_ascii=False)
        assert question in client_prompts and "Vouvoie cette personne." in client_prompts
        assert "198 000" not in client_prompts
        ollama_server.requests.clear()
        ludo_said = await client.post("/api/chat", json={"message": question},
                                      headers=web.auth("ludo"))
        assert ludo_said.json()["reply"] == LUDO_REPLY
    # not vacuous: the same question from Ludo does reach the note
    assert "198 000" in json.dumps(conversation_bodies(ollama_server), ensure_ascii=False)


async def test_a_slow_model_gives_202_then_the_reply_at_its_status_url(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    async with web_axi(db, database_url, test_data_dir, ollama_server,
                       reply_timeout_s=0.2) as web:
        ollama_server.delay_s = 1.0
        async with httpx.AsyncClient(base_url=web.url + "/", headers=web.auth("ludo")) as client:
            sent = await client.post("api/chat", json={"message": "Tu es là ?"})
            assert sent.status_code == 202, sent.text
            body = sent.json()
            assert body["state"] == "en_attente" and body["notices"] == []
            assert body["status_url"] == f"messages/{body['message_id']}"
            assert sent.headers["location"] == body["status_url"]
            # resolved against the request's URL, as any HTTP client does
            status_url = str(sent.url.join(body["status_url"]))
            assert status_url.endswith(f"/api/messages/{body['message_id']}")

            async def answered() -> dict[str, Any] | None:
                got = (await client.get(status_url)).json()
                return got if got["reply"] is not None else None

            outcome = await until(answered, 20, interval=0.1)
            assert outcome["reply"] == LUDO_REPLY and outcome["state"] == "traite"
            assert outcome["message_id"] == body["message_id"]


# ================================================================ Server-Sent Events
async def test_the_reply_streams_as_events_with_keepalives(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    async with web_axi(db, database_url, test_data_dir, ollama_server,
                       keepalive_s=0.1) as web:
        ollama_server.delay_s = 0.4  # the model thinks: the stream stays alive meanwhile
        ollama_server.chunk_delay_s = 0.05
        headers = {**web.auth("ludo"), "Accept": "text/event-stream"}
        async with httpx.AsyncClient(base_url=web.url) as client, client.stream(
                "POST", "/api/chat", json={"message": "Raconte"}, headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            seen = await read_sse(response)
        assert seen.order[0] == "accepted" and seen.order[-1] == "reply"
        [accepted] = seen.named("accepted")
        chunks = [c["text"] for c in seen.named("chunk")]
        assert len(chunks) >= 2, seen.order  # pieces, as the model wrote them
        assert "".join(chunks) == LUDO_REPLY
        [reply] = seen.named("reply")
        assert reply == {"reply": LUDO_REPLY, "message_id": accepted["message_id"],
                         "reply_id": reply["reply_id"], "notices": []}
        assert isinstance(reply["reply_id"], int)
        assert seen.keepalives >= 2
        assert seen.order.index("keep-alive") < seen.order.index("chunk")
        assert len(web.channel.streams) == 0  # released


async def test_a_stream_ends_pending_and_a_client_may_leave(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    async with web_axi(db, database_url, test_data_dir, ollama_server,
                       reply_timeout_s=0.3, keepalive_s=5.0) as web:
        ollama_server.delay_s = 1.0
        headers = {**web.auth("ludo"), "Accept": "text/event-stream"}
        async with httpx.AsyncClient(base_url=web.url, headers=headers) as client:
            async with client.stream("POST", "/api/chat", json={"message": "Un"}) as response:
                seen = await read_sse(response)
            assert seen.order == ["accepted", "pending"]
            first = seen.named("pending")[0]["message_id"]
            # a client that leaves at once: its message is answered all the same
            async with client.stream("POST", "/api/chat", json={"message": "Deux"}) as response:
                left = (await read_sse(response, stop_after="accepted")).named("accepted")
            second = left[0]["message_id"]
            await until(lambda: len(web.channel.streams) == 0, 5,
                        message="a stream whose client left was not released")
            for message_id in (first, second):
                async def replied(mid: int = message_id) -> bool:
                    got = await client.get(f"/api/messages/{mid}")
                    return got.json()["reply"] == LUDO_REPLY
                await until(replied, 20, interval=0.1)


# ================================================================ guards
async def test_tokens_unauthorized_and_forbidden(web: Web) -> None:
    revoked = await web.axi.store.create_token(web.person_ids["ludo"])
    await web.axi.store.revoke_token(revoked.record.id)
    site = (await web.axi.store.create_token(web.person_ids["durand"], scope="site")).secret
    async with asgi_client(web) as client:
        for path in ("/api/me", "/api/history", "/api/messages/1"):
            for headers, status, code in [
                    ({}, 401, "jeton_manquant"),
                    ({"Authorization": "Bearer n-importe-quoi"}, 401, "jeton_invalide"),
                    ({"Authorization": f"Basic {web.tokens['ludo']}"}, 401, "jeton_manquant"),
                    ({"Authorization": f"Bearer {revoked.secret}"}, 401, "jeton_invalide"),
                    ({"Authorization": "Bearer " + "x" * 5000}, 401, "jeton_invalide"),
                    (web.auth("axis"), 403, "portee_insuffisante"),
                    ({"Authorization": f"Bearer {site}"}, 403, "portee_insuffisante")]:
                got = await client.get(path, headers=headers)
                assert (got.status_code, got.json()["error"]) == (status, code), (path, headers)
                assert got.json()["message"]  # in French, for people
                if status == 401:
                    assert got.headers["www-authenticate"].startswith("Bearer")
        posted = await client.post("/api/chat", json={"message": "Salut"}, headers=web.auth("axis"))
        assert posted.status_code == 403
        schema = await client.get("/openapi.json")  # public
        assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    assert not [m for m in await web.axi.store.conversation_page(
        f"web:personne-{web.person_ids['ludo']}")]  # nothing was accepted


async def test_too_large_is_413_declared_or_streamed(web: Web) -> None:
    limit = 2048
    async with asgi_client(web, max_request_bytes=limit) as client:
        big = await client.post("/api/chat", json={"message": "é" * limit},
                                headers=web.auth("ludo"))
        assert big.status_code == 413 and big.json()["error"] == "trop_volumineux"

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"message": "'
        for _ in range(2 * WebConfig().max_request_bytes // 1000):
            yield b"a" * 1000
        yield b'"}'

    async with httpx.AsyncClient(base_url=web.url) as client:  # chunked: no Content-Length
        streamed = await client.post("/api/chat", content=chunks(),
                                     headers={**web.auth("ludo"),
                                              "Content-Type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"] == "trop_volumineux"
        ok = await client.post("/api/chat", json={"message": "a" * 20_000},
                               headers=web.auth("ludo"))
        assert ok.status_code == 200  # the longest message fits the default limit


async def test_rate_limits_per_token_and_per_client_ip(web: Web) -> None:
    more = {name: (await web.axi.store.create_token(web.person_ids["durand"])).secret
            for name in ("c", "d")}
    bad = {"message": ""}  # counted before the body is read: nothing is stored
    async with asgi_client(web, rate_per_minute=2) as client:
        ip = {"CF-Connecting-IP": "203.0.113.5"}
        for _ in range(2):
            assert (await client.post("/api/chat", json=bad,
                                      headers={**web.auth("ludo"), **ip})).status_code == 400
        limited = await client.post("/api/chat", json=bad, headers={**web.auth("ludo"), **ip})
        assert limited.status_code == 429 and limited.json()["error"] == "trop_de_requetes"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # reading has its own, larger allowance
        assert (await client.get("/api/me", headers=web.auth("ludo"))).status_code == 200
        # per IP: other tokens from the same client IP are refused too…
        other = {"Authorization": f"Bearer {more['c']}", **ip}
        assert (await client.post("/api/chat", json=bad, headers=other)).status_code == 429
        # …but not from another IP behind the tunnel
        elsewhere = {"Authorization": f"Bearer {more['c']}", "CF-Connecting-IP": "203.0.113.6"}
        assert (await client.post("/api/chat", json=bad, headers=elsewhere)).status_code == 400
    async with asgi_client(web, peer="198.51.100.7", rate_per_minute=1) as client:
        # a peer that is not loopback: its CF-Connecting-IP is a forgery, ignored
        first = {"Authorization": f"Bearer {more['c']}", "CF-Connecting-IP": "203.0.113.7"}
        second = {"Authorization": f"Bearer {more['d']}", "CF-Connecting-IP": "203.0.113.8"}
        assert (await client.post("/api/chat", json=bad, headers=first)).status_code == 400
        assert (await client.post("/api/chat", json=bad, headers=second)).status_code == 429


def test_client_ip_trusts_cloudflare_only_from_loopback() -> None:
    def scope(peer: str, cf: str | None) -> dict[str, Any]:
        headers = [(b"cf-connecting-ip", cf.encode())] if cf is not None else []
        return {"type": "http", "client": (peer, 1234), "headers": headers}

    assert client_ip(scope("127.0.0.1", "203.0.113.9")) == "203.0.113.9"
    assert client_ip(scope("::1", "2001:db8::1")) == "2001:db8::1"
    assert client_ip(scope("127.0.0.1", "pas une ip")) == "127.0.0.1"
    assert client_ip(scope("127.0.0.1", None)) == "127.0.0.1"
    assert client_ip(scope("192.0.2.4", "203.0.113.9")) == "192.0.2.4"


async def test_a_message_id_names_only_the_persons_own_messages(web: Web) -> None:
    async with asgi_client(web) as client:
        sent = await client.post("/api/chat", json={"message": "Bonjour"},
                                 headers=web.auth("ludo"))
        mine = sent.json()["message_id"]
        assert (await client.get(f"/api/messages/{mine}",
                                 headers=web.auth("ludo"))).status_code == 200
        for raw in (str(mine), str(sent.json()["reply_id"]), "abc", "0", "-1", "1.5",
                    str(2**63), "9" * 30, "a/b", "", "%00", "٣"):
            got = await client.get(f"/api/messages/{raw}", headers=web.auth("durand"))
            assert got.status_code == 404, raw
            assert got.json()["error"] == "introuvable"


async def test_bad_chat_bodies_and_history_queries_are_400_in_french(web: Web) -> None:
    async with asgi_client(web) as client:
        auth = web.auth("ludo")
        for body, code in [({}, "message_invalide"), ({"message": "   \n"}, "message_invalide"),
                           ({"message": 12}, "message_invalide"),
                           ({"message": None}, "message_invalide"),
                           ({"message": "\x00"}, "message_invalide"),
                           ({"message": "x" * 20_001}, "message_trop_long"),
                           ({"message": "Salut", "local_only": "oui"}, "local_only_invalide"),
                           ([1, 2], "json_invalide")]:
            got = await client.post("/api/chat", json=body, headers=auth)
            assert (got.status_code, got.json()["error"]) == (400, code), body
        broken = await client.post("/api/chat", content=b"{pas du json",
                                   headers={**auth, "Content-Type": "application/json"})
        assert broken.status_code == 400
        xml = await client.post("/api/chat", content=b"<message/>",
                                headers={**auth, "Content-Type": "application/xml"})
        assert xml.status_code == 415
        for query in ("limit=0", "limit=101", "limit=abc", "limit=-3", "limit=1e2",
                      "before=0", "before=-1", "before=x", f"before={2**63}", "before=1.5"):
            got = await client.get(f"/api/history?{query}", headers=auth)
            assert got.status_code == 400, query
            assert got.json()["error"] in {"limit_invalide", "before_invalide"}
        assert (await web.axi.store.conversation_page(
            f"web:personne-{web.person_ids['ludo']}")) == []


async def test_history_pages_back_with_next_before(web: Web) -> None:
    async with asgi_client(web) as client:
        auth = web.auth("ludo")
        for text in ("Premier", "Deuxième"):
            assert (await client.post("/api/chat", json={"message": text},
                                      headers=auth)).status_code == 200
        # Mme Durand's talk is hers alone
        await client.post("/api/chat", json={"message": "Autre"}, headers=web.auth("durand"))
        page = (await client.get("/api/history?limit=3", headers=auth)).json()
        assert [(m["direction"], m["text"]) for m in page["messages"]] == [
            ("out", LUDO_REPLY), ("in", "Deuxième"), ("out", LUDO_REPLY)]
        assert page["next_before"] == page["messages"][-1]["id"]
        assert all(m["kind"] == "message" for m in page["messages"])
        assert datetime.fromisoformat(page["messages"][0]["at"]).tzinfo is not None
        rest = (await client.get(f"/api/history?before={page['next_before']}&limit=3",
                                 headers=auth)).json()
        assert [m["text"] for m in rest["messages"]] == ["Premier"]
        assert rest["next_before"] is None
        exact = (await client.get("/api/history?limit=4", headers=auth)).json()
        assert len(exact["messages"]) == 4 and exact["next_before"] is None


async def test_notices_stream_while_the_model_is_down(
        db: Database, database_url: str | None, test_data_dir: Path,
        ollama_server: FakeOllama) -> None:
    async with web_axi(db, database_url, test_data_dir, ollama_server,
                       reply_timeout_s=1.5, keepalive_s=5.0) as web:
        ollama_server.fail_status = 500  # and no fallback: the message waits, Axi says so
        async with httpx.AsyncClient(base_url=web.url) as client:
            headers = {**web.auth("ludo"), "Accept": "text/event-stream"}
            async with client.stream("POST", "/api/chat", json={"message": "Tu es là ?"},
                                     headers=headers) as response:
                seen = await read_sse(response)
            assert seen.order == ["accepted", "notice", "pending"], seen.order
            [notice] = seen.named("notice")
            assert notice["text"]
            message_id = seen.named("pending")[0]["message_id"]
            status = (await client.get(f"/api/messages/{message_id}",
                                       headers=web.auth("ludo"))).json()
            assert status == {"message_id": message_id, "state": "en_attente", "reply": None,
                              "reply_id": None, "notices": [notice["text"]]}
            waiting = await client.post("/api/chat", json={"message": "Bonjour"},
                                        headers=web.auth("durand"))
            assert waiting.status_code == 202
            assert waiting.json()["notices"] and waiting.json()["state"] == "en_attente"


async def test_a_database_outage_is_a_503_and_one_log_line(
        db: Database, test_data_dir: Path, ollama_server: FakeOllama,
        caplog: pytest.LogCaptureFixture) -> None:
    """The database cut under a running Axi (a TCP proxy, as a PostgreSQL restart does):
    the API answers 503 with Retry-After and logs one line per request — not a 500 and
    a traceback (the soak's restart logged one per request) — and serves again after."""
    import logging

    from tests.fakes.tcp_proxy import TcpProxy

    proxy = TcpProxy.for_database(db.engine.url)
    await proxy.start()
    try:
        async with web_axi(db, proxy.url_for(db.engine.url), test_data_dir,
                           ollama_server) as web, httpx.AsyncClient(base_url=web.url) as http:
            assert (await http.get("/api/history", headers=web.auth("ludo"))).status_code == 200
            await proxy.cut()
            caplog.clear()
            with caplog.at_level(logging.INFO):
                down = await http.get("/api/history", headers=web.auth("ludo"))
            assert down.status_code == 503 and down.json()["error"] == "indisponible"
            assert down.headers["retry-after"] == "30"
            assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []
            assert any("out of reach" in r.getMessage() for r in caplog.records)
            await proxy.restore()

            async def served() -> bool:
                r = await http.get("/api/history", headers=web.auth("ludo"))
                return r.status_code == 200

            await until(served, 20)
    finally:
        await proxy.close()
