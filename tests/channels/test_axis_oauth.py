"""OAuth 2.1 for Claude.ai's connector (channels/axis_oauth.py, bot/axis_connect.py), the
whole flow with httpx against a real uvicorn: metadata, dynamic registration, /authorize
waiting on Ludo's answer (a confirmation he presses on Telegram), the code, PKCE checked,
the token working on /mcp with the official client, refresh with rotation, revocation;
"non" and expiry end in access_denied; strangers can never keep Ludo out (one pending
request per address, the newest ends the oldest, "non" frees its place at once); the
page and Ludo's question show the same short code; only https or loopback redirects."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import text

from bot.axis_connect import CODE_ALPHABET, MAX_PENDING, human_code
from bot.channel import Delivery
from memory.confirmations import parse_button
from memory.database import Database
from tests.channels.axis_support import PUBLIC_HOST, AxisWeb, axis_axi, mcp_session, text_of
from tests.fakes.ollama_server import FakeOllama
from tests.waiting import until

CALLBACK = "https://claude.ai/api/mcp/auth_callback"
ISSUER = f"https://{PUBLIC_HOST}"


@pytest.fixture
async def box(db: Database, database_url: str | None, test_data_dir: Path,
              ollama_server: FakeOllama) -> AsyncIterator[AxisWeb]:
    async with axis_axi(db, database_url, test_data_dir, ollama_server) as b:
        yield b


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def register(http: httpx.AsyncClient) -> dict[str, Any]:
    r = await http.post("/register", json={
        "redirect_uris": [CALLBACK], "client_name": "Claude",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_post"})
    assert r.status_code == 201, r.text
    client: dict[str, Any] = r.json()
    return client


async def authorize(http: httpx.AsyncClient, client: dict[str, Any], challenge: str,
                    state: str = "etat-1") -> httpx.Response:
    return await http.get("/authorize", params={
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": CALLBACK,
        "code_challenge": challenge, "code_challenge_method": "S256", "state": state,
        "scope": "axis", "resource": f"{ISSUER}/mcp"})


def query(location: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def token(http: httpx.AsyncClient, client: dict[str, Any], **form: str) -> httpx.Response:
    return await http.post("/token", data={"client_id": client["client_id"],
                                           "client_secret": client["client_secret"], **form})


async def test_the_whole_flow_with_ludos_accord(box: AxisWeb) -> None:
    async with httpx.AsyncClient(base_url=box.url) as http:
        meta = (await http.get("/.well-known/oauth-authorization-server")).json()
        assert meta["issuer"] == ISSUER and meta["registration_endpoint"] == f"{ISSUER}/register"
        assert meta["code_challenge_methods_supported"] == ["S256"]
        client = await register(http)
        verifier, challenge = pkce()
        started = await authorize(http, client, challenge)
        assert started.status_code == 302
        waiting_url = started.headers["location"]
        assert waiting_url.startswith("/axis/connexion/")  # relative: behind the tunnel
        waiting = await http.get(waiting_url)
        assert waiting.status_code == 200
        assert "Demande envoyée à Ludo : validez sur Telegram, puis revenez ici." in waiting.text
        assert 'http-equiv="refresh"' in waiting.text
        assert waiting.headers["cache-control"] == "no-store"

        question = await box.question("axis.connecter")
        assert "Axis (Claude.ai) demande à se connecter" in question.text
        assert "claude.ai" in question.text
        assert (await http.get(waiting_url)).status_code == 200  # nothing before his answer
        await box.press(question, "Oui")

        async def redirected() -> httpx.Response | None:
            r = await http.get(waiting_url)
            return r if r.status_code == 302 else None
        done: httpx.Response = await until(redirected, 20, message="never redirected")
        back = done.headers["location"]
        assert back.startswith(CALLBACK + "?")
        answer = query(back)
        assert answer["state"] == "etat-1" and answer["iss"] == ISSUER
        code = answer["code"]
        assert (await http.get(waiting_url)).status_code == 410  # the approval served once

        wrong = await token(http, client, grant_type="authorization_code", code=code,
                            redirect_uri=CALLBACK, code_verifier=pkce()[0])
        assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
        issued = await token(http, client, grant_type="authorization_code", code=code,
                             redirect_uri=CALLBACK, code_verifier=verifier)
        assert issued.status_code == 200, issued.text
        tokens = issued.json()
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 3600
        assert tokens["scope"] == "axis" and tokens["refresh_token"].startswith("axr_")
        again = await token(http, client, grant_type="authorization_code", code=code,
                            redirect_uri=CALLBACK, code_verifier=verifier)
        assert again.status_code == 400  # a code serves once

        # the access token is an axis jeton of the Axis person, expiring, stored hashed
        [record] = await box.axi.store.list_tokens(oauth=True)
        assert record.relation == "axis" and record.client_oauth == client["client_id"]
        assert record.expire_le is not None
        async with box.axi.db.sessions() as session:
            stored = (await session.execute(text(
                "SELECT string_agg(cle || donnees::text, ' ') FROM oauth_etats"))).scalar()
        assert code not in stored and tokens["refresh_token"] not in stored

        async with mcp_session(box.url, tokens["access_token"]) as mcp:
            assert "Briefing d'Axi" in text_of(await mcp.call_tool("briefing", {}))

        refreshed = await token(http, client, grant_type="refresh_token",
                                refresh_token=tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        fresh = refreshed.json()
        assert fresh["refresh_token"] != tokens["refresh_token"]
        old = await http.post("/mcp", json={}, headers={
            "Authorization": f"Bearer {tokens['access_token']}"})
        assert old.status_code == 401  # the access token it was issued with ended
        async with mcp_session(box.url, fresh["access_token"]) as mcp:
            assert "Aucun message non lu" in text_of(await mcp.call_tool("lire_messages", {}))

        revoked = await http.post("/revoke", data={
            "client_id": client["client_id"], "client_secret": client["client_secret"],
            "token": fresh["access_token"]})
        assert revoked.status_code == 200
        gone = await http.post("/mcp", json={}, headers={
            "Authorization": f"Bearer {fresh['access_token']}"})
        assert gone.status_code == 401
        after = await token(http, client, grant_type="refresh_token",
                            refresh_token=fresh["refresh_token"])
        assert after.status_code == 400  # its refresh token went with it
        reused = await token(http, client, grant_type="refresh_token",
                             refresh_token=tokens["refresh_token"])
        assert reused.status_code == 400  # rotated: the old one serves no more (shown
        # again while the connection lived, it would end it: the replay test below)


async def test_no_or_expiry_ends_in_access_denied(box: AxisWeb) -> None:
    async with httpx.AsyncClient(base_url=box.url) as http:
        client = await register(http)
        refused_url = (await authorize(http, client, pkce()[1], "etat-non")).headers["location"]
        await box.press(await box.question("axis.connecter"), "Non")

        async def redirected(url: str) -> httpx.Response | None:
            r = await http.get(url)
            return r if r.status_code == 302 else None
        refused: httpx.Response = await until(lambda: redirected(refused_url), 20)
        answer = query(refused.headers["location"])
        assert answer["error"] == "access_denied" and answer["state"] == "etat-non"
        assert "Ludo n'a pas autorisé" in answer["error_description"]
        assert "code" not in answer
        assert (await http.get(refused_url)).status_code == 404  # gone once answered

        late_url = (await authorize(http, client, pkce()[1], "etat-tard")).headers["location"]
        async with box.axi.db.sessions.begin() as session:
            await session.execute(text("UPDATE oauth_etats SET expire_le = now() - interval "
                                       "'1 second' WHERE genre = 'approbation'"))
        late = await http.get(late_url)
        assert late.status_code == 302
        assert query(late.headers["location"])["error"] == "access_denied"
        assert (await http.get("/axis/connexion/" + "x" * 43)).status_code == 404


def from_ip(ip: str) -> dict[str, str]:
    """Behind the tunnel (the peer is loopback) Cloudflare names the visitor's address."""
    return {"CF-Connecting-IP": ip}


async def ask(http: httpx.AsyncClient, client: dict[str, Any], state: str,
              ip: str) -> str:
    """/authorize from `ip`: the waiting page's URL."""
    r = await http.get("/authorize", headers=from_ip(ip), params={
        "response_type": "code", "client_id": client["client_id"], "redirect_uri": CALLBACK,
        "code_challenge": pkce()[1], "code_challenge_method": "S256", "state": state,
        "scope": "axis", "resource": f"{ISSUER}/mcp"})
    assert r.status_code == 302 and r.headers["location"].startswith("/axis/connexion/"), \
        r.headers.get("location")
    return r.headers["location"]


async def ended(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    r = await http.get(url)
    assert r.status_code == 302, (r.status_code, r.text[:200])
    return query(r.headers["location"])


async def question_from(box: AxisWeb, ip: str) -> Delivery:
    """The question Ludo got on Telegram for a request from `ip`."""
    async def sent() -> Delivery | None:
        return next((d for d in reversed(box.telegram.sent)
                     if d.kind == "confirmation" and f"l'adresse {ip}." in d.text), None)
    found: Delivery = await until(sent, 20, message=f"no question for {ip}")
    return found


async def pending_questions(box: AxisWeb) -> int:
    return len([c for c in await box.axi.store.list_confirmations(pending_only=True)
                if c.action == "axis.connecter"])


async def test_strangers_never_keep_ludo_from_connecting(box: AxisWeb) -> None:
    """Registration and /authorize are open to anyone: whatever strangers ask, Ludo's own
    request gets in, and his « Non » frees its place at once."""
    async with httpx.AsyncClient(base_url=box.url) as http:
        attacker = await register(http)
        for i in range(MAX_PENDING):  # from one address: each replaces the one before
            assert (await authorize(http, attacker, pkce()[1], f"a{i}")).status_code == 302
            await box.press(await box.question("axis.connecter"), "Non")
        ludo = await register(http)
        mine = await authorize(http, ludo, pkce()[1])
        assert mine.headers["location"].startswith("/axis/connexion/"), mine.headers["location"]

        # a flood from many addresses: the newest request ends the oldest pending one
        flood = [await ask(http, attacker, f"f{i}", f"198.51.100.{i}") for i in range(6)]
        for url in flood[:3]:
            assert (await ended(http, url))["error"] == "access_denied"
        for url in flood[3:]:
            assert (await http.get(url)).status_code == 200
        assert await pending_questions(box) == MAX_PENDING  # the others' are withdrawn
        assert (await ended(http, mine.headers["location"]))["error"] == "access_denied"
        mine_now = await ask(http, ludo, "moi", "203.0.113.7")
        assert (await http.get(mine_now)).status_code == 200  # Ludo's still gets in
        assert await pending_questions(box) == MAX_PENDING
        replaced = await ended(http, flood[3])
        assert replaced["error"] == "access_denied" and replaced["state"] == "f3"
        assert "plus récente" in replaced["error_description"]


async def test_one_pending_request_per_address_or_ipv6_64(box: AxisWeb) -> None:
    async with httpx.AsyncClient(base_url=box.url) as http:
        client = await register(http)
        first = await ask(http, client, "v6-1", "2001:db8:0:1::1")
        first_question = await box.question("axis.connecter")
        second = await ask(http, client, "v6-2", "2001:db8:0:1:ffff::2")  # same /64
        assert (await ended(http, first))["state"] == "v6-1"
        other = await ask(http, client, "v6-3", "2001:db8:0:2::1")  # another /64
        v4 = await ask(http, client, "v4", "192.0.2.1")
        for url in (second, other, v4):
            assert (await http.get(url)).status_code == 200
        # the replaced request's question is withdrawn: a late « Oui » lets nobody in
        await box.press(first_question, "Oui")
        parsed = parse_button(first_question.choices[0][1])
        assert parsed is not None
        record = await box.axi.store.get_confirmation(parsed[0])
        assert record is not None and record.etat == "expiree"
        assert (await http.get(second)).status_code == 200
        # no more than a few questions per address and quarter of an hour
        for i in range(4):
            await ask(http, client, f"encore-{i}", "192.0.2.1")
        over = await http.get("/authorize", headers=from_ip("192.0.2.1"), params={
            "response_type": "code", "client_id": client["client_id"],
            "redirect_uri": CALLBACK, "code_challenge": pkce()[1],
            "code_challenge_method": "S256", "state": "trop"})
        answer = query(over.headers["location"])
        assert answer["error"] == "temporarily_unavailable" and answer["state"] == "trop"
        assert "Trop de demandes de connexion" in answer["error_description"]
        elsewhere = await http.get("/authorize", params={
            "response_type": "code", "client_id": client["client_id"],
            "redirect_uri": CALLBACK, "code_challenge": pkce()[1],
            "resource": "https://ailleurs.example/mcp"})
        assert query(elsewhere.headers["location"])["error"] == "invalid_target"


async def test_no_frees_the_place_at_once(box: AxisWeb) -> None:
    async with httpx.AsyncClient(base_url=box.url) as http:
        client = await register(http)
        urls = [await ask(http, client, f"e{i}", f"192.0.2.{i + 10}") for i in range(3)]
        await box.press(await question_from(box, "192.0.2.10"), "Non")

        async def settled() -> bool | None:
            async with box.axi.db.sessions() as session:
                states = (await session.execute(text(
                    "SELECT donnees->>'etat' FROM oauth_etats WHERE genre = 'approbation' "
                    "ORDER BY cree_le"))).scalars().all()
            return True if list(states) == ["refusee", "en_attente", "en_attente"] else None
        await until(settled, 20, message="the refused approval still pending")
        fourth = await ask(http, client, "e3", "192.0.2.99")
        for url in (*urls[1:], fourth):  # nobody was pushed out: « Non » made room
            assert (await http.get(url)).status_code == 200
        answer = await ended(http, urls[0])
        assert answer["error"] == "access_denied" and "Ludo n'a pas autorisé" in \
            answer["error_description"]


async def test_the_question_and_the_page_show_the_same_code(box: AxisWeb) -> None:
    """Ludo approves only the request on his own screen: its page and his question show
    one short code; another request's code differs."""
    async with httpx.AsyncClient(base_url=box.url) as http:
        r = await http.post("/register", json={
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "client_name": "Claude <b>officiel</b>"})
        client = r.json()
        codes = []
        for i, ip in enumerate(("192.0.2.50", "192.0.2.51")):
            page = await http.get(await ask(http, client, f"c{i}", ip))
            found = re.search(r"<strong>([A-Z0-9]{4})</strong>", page.text)
            assert found, page.text
            code = found.group(1)
            assert set(code) <= set(CODE_ALPHABET)
            question = await question_from(box, ip)
            assert f"Code de la demande : {code}." in question.text
            assert "Ne valide que si la page de connexion affiche ce code" in question.text
            assert "« Claude <b>officiel</b> »" in question.text
            assert "retour vers claude.ai" in question.text
            assert f"depuis l'adresse {ip}" in question.text
            assert "ne validez que s'il est identique" in page.text
            codes.append(code)
    assert len({human_code() for _ in range(20)}) > 1  # random for each request


async def test_the_open_endpoints_are_rate_limited_per_ip(
    db: Database, database_url: str | None, test_data_dir: Path, ollama_server: FakeOllama
) -> None:
    async with axis_axi(db, database_url, test_data_dir, ollama_server,
                        rate_per_minute=2) as box, httpx.AsyncClient(base_url=box.url) as http:
        await register(http)
        await register(http)
        third = await http.post("/register", json={"redirect_uris": [CALLBACK]})
        assert third.status_code == 429 and int(third.headers["retry-after"]) >= 1
        assert "Trop de demandes" in third.json()["message"]
        # behind the tunnel each visitor has an address of their own
        other = await http.post("/register", headers={"CF-Connecting-IP": "203.0.113.9"},
                                json={"redirect_uris": [CALLBACK]})
        assert other.status_code == 201
        assert (await http.get("/.well-known/oauth-authorization-server")).status_code == 200


async def test_only_https_or_loopback_redirects_are_registered(box: AxisWeb) -> None:
    """Else the waiting page, after « Non » or expiry, would send the browser anywhere
    (javascript:, a plain http site)."""
    async with httpx.AsyncClient(base_url=box.url) as http:
        for bad in (["javascript:alert(1)"], ["http://evil.example/cb"], ["data:text/html,x"],
                    [CALLBACK, "http://evil.example/cb"], ["https://claude.ai/cb#frag"],
                    ["ftp://claude.ai/cb"]):
            r = await http.post("/register", json={"redirect_uris": bad})
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"] == "invalid_redirect_uri", r.text
            assert "Adresse de retour refusée" in r.json()["error_description"]
        for good in ([CALLBACK], ["http://127.0.0.1:33418/callback"], ["http://localhost/cb"],
                     ["http://[::1]:8080/cb"], ["https://localhost:9000/cb"]):
            r = await http.post("/register", json={"redirect_uris": good})
            assert r.status_code == 201, (good, r.text)
    async with box.axi.db.sessions() as session:
        stored = (await session.execute(text(
            "SELECT string_agg(donnees::text, ' ') FROM oauth_etats"))).scalar()
    assert "evil" not in stored and "javascript" not in stored


async def test_unapproved_clients_are_capped_and_forgotten(box: AxisWeb) -> None:
    async with httpx.AsyncClient(base_url=box.url) as http:
        waiting = await register(http)  # its approval is pending: kept
        await authorize(http, waiting, pkce()[1])
        approved = await register(http)
        async with box.axi.db.sessions.begin() as session:
            await session.execute(text(
                "UPDATE oauth_etats SET donnees = donnees || '{\"approuve_le\": \"x\"}', "
                "cree_le = now() - interval '3 days' WHERE cle = :c"),
                {"c": approved["client_id"]})
            await session.execute(text(
                "UPDATE oauth_etats SET cree_le = now() - interval '2 hours' "
                "WHERE cle = :c"), {"c": waiting["client_id"]})
            await session.execute(text(
                "INSERT INTO oauth_etats (genre, cle, client_id, donnees, cree_le) "
                "SELECT 'client', 'vieux-' || i, 'vieux-' || i, '{}', "
                "now() - make_interval(mins => 200 - i) FROM generate_series(1, 150) i"))
            await session.execute(text(
                "INSERT INTO oauth_etats (genre, cle, client_id, donnees, cree_le) "
                "VALUES ('client', 'perime', 'perime', '{}', now() - interval '25 hours')"))
        newest = await register(http)

        async with box.axi.db.sessions() as session:
            kept = {r[0] for r in (await session.execute(text(
                "SELECT cle FROM oauth_etats WHERE genre = 'client'"))).all()}
        unapproved = kept - {approved["client_id"]}
        assert len(unapproved) <= 100, len(unapproved)
        assert {waiting["client_id"], approved["client_id"], newest["client_id"]} <= kept
        assert "perime" not in kept  # a day old: forgotten
        assert "vieux-1" not in kept and "vieux-150" in kept  # the oldest go first


async def connected(http: httpx.AsyncClient, box: AxisWeb) -> tuple[dict[str, Any], dict[str, Any]]:
    """A client registered, approved by Ludo, its code exchanged: (client, tokens)."""
    client = await register(http)
    verifier, challenge = pkce()
    waiting_url = (await authorize(http, client, challenge)).headers["location"]
    await box.press(await box.question("axis.connecter"), "Oui")

    async def redirected() -> httpx.Response | None:
        r = await http.get(waiting_url)
        return r if r.status_code == 302 else None
    done: httpx.Response = await until(redirected, 20, message="never redirected")
    issued = await token(http, client, grant_type="authorization_code",
                         code=query(done.headers["location"])["code"],
                         redirect_uri=CALLBACK, code_verifier=verifier)
    assert issued.status_code == 200, issued.text
    return client, issued.json()


async def test_a_token_revoked_by_ludo_does_not_come_back_by_refresh(box: AxisWeb) -> None:
    # `axi tokens revoke N` on the connector's access token ("it stops working at once")
    # must end the connection: its refresh token may not mint a new access token
    async with httpx.AsyncClient(base_url=box.url) as http:
        client, tokens = await connected(http, box)
        [record] = await box.axi.store.list_tokens(oauth=True)
        await box.axi.store.revoke_token(record.id)  # what `axi tokens revoke` does
        assert (await http.post("/mcp", json={}, headers={
            "Authorization": f"Bearer {tokens['access_token']}"})).status_code == 401
        again = await token(http, client, grant_type="refresh_token",
                            refresh_token=tokens["refresh_token"])
        assert again.status_code == 400, again.text
        assert await box.axi.store.list_tokens(oauth=True) == []


async def test_a_replayed_refresh_token_ends_the_connection(box: AxisWeb) -> None:
    # a stolen refresh token used by the thief first, then by Axis (or the other way
    # round): the server sees one token presented twice and cannot tell who is who, so
    # the whole connection ends, and Ludo approves again
    async with httpx.AsyncClient(base_url=box.url) as http:
        client, first = await connected(http, box)
        thief = await token(http, client, grant_type="refresh_token",
                            refresh_token=first["refresh_token"])
        assert thief.status_code == 200
        replayed = await token(http, client, grant_type="refresh_token",
                               refresh_token=first["refresh_token"])
        assert replayed.status_code == 400
        stolen = thief.json()
        assert (await http.post("/mcp", json={}, headers={
            "Authorization": f"Bearer {stolen['access_token']}"})).status_code == 401
        assert (await token(http, client, grant_type="refresh_token",
                            refresh_token=stolen["refresh_token"])).status_code == 400
