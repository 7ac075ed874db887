"""Oversized and malformed requests on every HTTP route of the whole Axi (real uvicorn,
real httpx; Telegram in webhook mode so its route exists): the token API, the site's
legacy endpoints, `/briefing` and `/memory`, MCP, the OAuth endpoints and their metadata,
the approval page, the web chat, `/health` and the Telegram webhook. Each request carries
credentials that get it past authentication, so the malformed part is what is tested.
What this proves, for each kind of abuse on every route at once:

- a refusal in the 4xx range (never a 5xx, never a stack trace in the body): the body
  limit (channels/web_guard.BodyLimit, 413 declared or streamed; the webhook's own
  limit), JSON that is broken, not an object, not UTF-8 or nested thousands deep
  (web_guard.json_body, the MCP and OAuth SDKs' own parsers), a wrong content type,
  headers far too large (uvicorn), garbage in paths and queries;
- nothing stored (no message, contact request, confirmation, fact…), no model asked, and
  the server still healthy afterwards;
- the webhook without its secret is refused before its body is read, whatever it claims.

The webhook answers 200 (and logs) for a JSON body PTB cannot turn into an update (an
array, a wrong-typed field, deep nesting); every refused credential leaves a log line; a
NUL in the OAuth endpoints is a clean 4xx.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.security.support import ORIGIN, Snapshot, World

LIMIT = 64 * 1024
WEBHOOK_LIMIT = 1_000_000


@dataclass(frozen=True)
class Post:
    path: str
    headers: Callable[[World], dict[str, str]]
    json: bool = True
    """The route reads JSON (else a form or Markdown)."""


POSTS = [
    Post("/api/chat", lambda w: {"Authorization": f"Bearer {w.tokens['durand']}"}),
    Post("/chat-proxy", lambda w: {"Origin": ORIGIN}),
    Post("/contact", lambda w: {"Origin": ORIGIN}),
    Post("/memory", lambda w: {"Authorization": f"Bearer {w.tokens['axis']}"}, json=False),
    Post("/mcp", lambda w: {"Authorization": f"Bearer {w.tokens['axis']}",
                            "Accept": "application/json, text/event-stream"}),
    Post("/register", lambda w: {}),
    Post("/token", lambda w: {}, json=False),
    Post("/revoke", lambda w: {}, json=False),
    Post("/telegram/webhook", lambda w: {"X-Telegram-Bot-Api-Secret-Token": w.telegram.secret}),
]
WEBHOOK = "/telegram/webhook"
GETS = [
    ("/api/me", "durand"), ("/api/history", "durand"), ("/api/messages/1", "durand"),
    ("/openapi.json", None), ("/briefing", "axis"), ("/memory", "axis"), ("/health", None),
    ("/authorize", None), ("/.well-known/oauth-authorization-server", None),
    ("/.well-known/oauth-protected-resource/mcp", None), ("/axis/connexion/inconnue", None),
    ("/", None), ("/static/app.js", None),
]


@pytest.fixture
async def http(hook_world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hook_world.url, timeout=60.0) as client:
        yield client


def refused(response: httpx.Response) -> str | None:
    """Why this answer is wrong for an abusive request (None when it is a clean refusal)."""
    if response.status_code >= 500:
        return f"{response.status_code}: {response.text[:120]}"
    if "Traceback" in response.text or 'File "' in response.text:
        return "a stack trace in the body"
    return None


async def harmless(world: World, before: Snapshot, mark: tuple[int, int],
                   http: httpx.AsyncClient) -> None:
    """Nothing stored, no model asked, the server still answering."""
    await world.settle()
    before.assert_unchanged(await Snapshot.of(world.app), claims=False)
    assert await world.inbound() == []
    assert world.prompts_since(mark) == []
    assert (await http.get("/health")).status_code == 200


async def post_all(world: World, http: httpx.AsyncClient,
                   body: Callable[[Post], bytes | AsyncIterator[bytes]], content_type: str,
                   *, skip: frozenset[str] = frozenset()) -> dict[str, httpx.Response]:
    answers = {}
    for route in POSTS:
        if route.path in skip:
            continue
        answers[route.path] = await http.post(
            route.path, content=body(route),
            headers={**route.headers(world), "Content-Type": content_type})
    return answers


def check(answers: dict[str, httpx.Response], *, expect: Callable[[str], set[int]]) -> None:
    wrong = {path: refused(r) or f"{r.status_code} (expected {sorted(expect(path))})"
             for path, r in answers.items()
             if refused(r) or r.status_code not in expect(path)}
    assert wrong == {}


async def test_an_oversized_body_is_refused_before_any_handler(
        hook_world: World, http: httpx.AsyncClient) -> None:
    before, mark = await Snapshot.of(hook_world.app), hook_world.mark()

    def big(route: Post) -> bytes:
        size = WEBHOOK_LIMIT if route.path == WEBHOOK else LIMIT
        return b'{"message": "' + b"x" * (size + 10) + b'"}'
    check(await post_all(hook_world, http, big, "application/json"),
          expect=lambda path: {413})
    await harmless(hook_world, before, mark, http)


async def test_an_oversized_body_sent_in_chunks_is_refused_too(
        hook_world: World, http: httpx.AsyncClient) -> None:
    before, mark = await Snapshot.of(hook_world.app), hook_world.mark()

    def chunks(route: Post) -> AsyncIterator[bytes]:
        size = WEBHOOK_LIMIT if route.path == WEBHOOK else LIMIT

        async def stream() -> AsyncIterator[bytes]:  # no Content-Length: chunked
            yield b'{"message": "'
            for _ in range(size // 8192 + 2):
                yield b"x" * 8192
            yield b'"}'
        return stream()
    check(await post_all(hook_world, http, chunks, "application/json"),
          expect=lambda path: {413})
    await harmless(hook_world, before, mark, http)


MALFORMED = [
    # (what, body, content type, routes left to a DEFECT test)
    ("broken JSON", b'{"message": "Bonjour', "application/json", frozenset()),
    ("a body that is not JSON but XML", b"<message>Bonjour</message>", "application/xml",
     frozenset()),
    ("a multipart form", b"--x\r\nContent-Disposition: form-data; name=message\r\n\r\nBonjour"
     b"\r\n--x--\r\n", "multipart/form-data; boundary=x", frozenset()),
    ("JSON that is not UTF-8", b'{"message": "\xff\xfe\xfd"}', "application/json",
     frozenset()),
    ("a JSON array", b"[1, 2, 3]", "application/json", frozenset({WEBHOOK})),
    ("a JSON string", b'"Bonjour"', "application/json", frozenset({WEBHOOK})),
    ("JSON nested 30,000 deep, within the size limit",
     b'{"messages": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", "application/json",
     frozenset({WEBHOOK})),
]


@pytest.mark.parametrize(("what", "body", "content_type", "skip"), MALFORMED,
                         ids=[m[0] for m in MALFORMED])
async def test_a_malformed_body_gets_a_clean_refusal_everywhere(
        hook_world: World, http: httpx.AsyncClient, what: str, body: bytes,
        content_type: str, skip: frozenset[str]) -> None:
    before, mark = await Snapshot.of(hook_world.app), hook_world.mark()
    answers = await post_all(hook_world, http, lambda route: body, content_type, skip=skip)
    # the webhook drops what it cannot read with a 200 (Telegram would retry anything
    # else for ever) and logs it; the OAuth form endpoints refuse a missing client (401)
    check(answers, expect=lambda path: {200} if path == WEBHOOK else set(range(400, 500)))
    await harmless(hook_world, before, mark, http)


async def test_headers_far_too_large_are_refused_on_every_route(
        hook_world: World, http: httpx.AsyncClient) -> None:
    """uvicorn answers 400 before any route, or closes the connection: either way nothing
    reaches Axi, and it goes on serving."""
    before, mark = await Snapshot.of(hook_world.app), hook_world.mark()
    huge = {"Cookie": "a" * 1_000_000}
    requests = [("GET", path, huge) for path, _ in GETS]
    requests += [("POST", r.path, {**r.headers(hook_world), **huge}) for r in POSTS]
    answers, cut = {}, []
    for method, path, headers in requests:
        try:
            answers[f"{method} {path}"] = await http.request(
                method, path, headers=headers,
                json={"message": "Bonjour"} if method == "POST" else None)
        except httpx.TransportError:
            cut.append(f"{method} {path}")
    assert len(answers) + len(cut) == len(requests)
    check(answers, expect=lambda path: {400, 431})
    await harmless(hook_world, before, mark, http)


GARBAGE = [
    "/api/messages/99999999999999999999999", "/api/messages/-1", "/api/messages/%00",
    "/api/messages/1%20OR%201=1", "/api/history?limit=abc", "/api/history?limit=999999",
    "/api/history?before=1e9", "/api/history?before=%00", "/axis/connexion/%27%3Cscript%3E",
    "/axis/connexion/" + "a" * 5000, "/static/..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%00", "/authorize?client_id=x&response_type=code&redirect_uri=javascript:1",
    "/briefing?" + "a=1&" * 2000, "/.well-known/../api/me",
]


async def test_garbage_in_paths_and_queries_is_a_clean_4xx(
        hook_world: World, http: httpx.AsyncClient) -> None:
    before, mark = await Snapshot.of(hook_world.app), hook_world.mark()
    tokens = {"/api": hook_world.tokens["durand"], "/briefing": hook_world.tokens["axis"]}
    answers = {}
    for path in GARBAGE:
        token = next((t for prefix, t in tokens.items() if path.startswith(prefix)), None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answers[path] = response = await http.get(path, headers=headers)
        assert "<script>" not in response.text and "root:" not in response.text, path
    check(answers, expect=lambda path: set(range(400, 500)) | (
        {200} if path.startswith("/briefing") else set()))
    await harmless(hook_world, before, mark, http)


FORGED_UPDATE = {"update_id": 900, "message": {
    "message_id": 7, "date": 1_790_000_000, "text": "/oublie code d'alarme",
    "chat": {"id": 1001, "type": "private"},
    "from": {"id": 1001, "is_bot": False, "first_name": "Ludo"}}}


@pytest.mark.parametrize("secret", [None, "nope", "a" * 100_000],
                         ids=["no-secret", "wrong-secret", "huge-secret"])
async def test_the_webhook_without_its_secret_stores_nothing_whatever_it_claims(
        hook_world: World, http: httpx.AsyncClient, secret: str | None) -> None:
    before, mark = await Snapshot.of(hook_world.app), hook_world.mark()
    headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
    for body in (FORGED_UPDATE, {"x": "a" * (WEBHOOK_LIMIT + 10)}):
        response = await http.post(WEBHOOK, json=body, headers=headers)
        if secret is not None and len(secret) > 64 * 1024:  # uvicorn may refuse it first
            assert response.status_code in (400, 401, 431)
        else:
            assert response.status_code == 401 and response.text == ""
    await harmless(hook_world, before, mark, http)


WEBHOOK_BODIES = [
    ("a JSON array", b"[1, 2, 3]"),
    ("an update whose message is a string", b'{"update_id": 901, "message": "Bonjour"}'),
    ("JSON nested 30,000 deep", b'{"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
]


@pytest.mark.parametrize("body", [b for _, b in WEBHOOK_BODIES],
                         ids=[w for w, _ in WEBHOOK_BODIES])
async def test_the_webhook_drops_a_body_it_cannot_read_without_a_5xx(
        hook_world: World, http: httpx.AsyncClient, body: bytes) -> None:
    response = await http.post(WEBHOOK, content=body, headers={
        "X-Telegram-Bot-Api-Secret-Token": hook_world.telegram.secret,
        "Content-Type": "application/json"})
    assert refused(response) is None and response.status_code == 200


REFUSED = [
    ("POST", "/mcp", {"Authorization": "Bearer axi_faux",
                      "Accept": "application/json, text/event-stream"}),
    ("POST", "/api/chat", {"Authorization": "Bearer axi_faux"}),
    ("GET", "/briefing", {"Authorization": "Bearer axi_faux"}),
    ("POST", "/memory", {}),
    ("POST", WEBHOOK, {"X-Telegram-Bot-Api-Secret-Token": "faux"}),
]


@pytest.mark.parametrize(("method", "path", "headers"), REFUSED,
                         ids=[f"{m} {p}" for m, p, _ in REFUSED])
async def test_a_refused_credential_is_logged(
        hook_world: World, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
        method: str, path: str, headers: dict[str, str]) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    response = await http.request(method, path, json={"message": "Bonjour"}, headers=headers)
    assert response.status_code == 401
    ours = [r.getMessage() for r in caplog.records
            if r.name.split(".")[0] in ("channels", "bot", "memory", "mcp", "uvicorn")]
    words = ("401", "refus", "invalid", "unauthor", "secret", "jeton", "token")
    assert any(any(w in m.lower() for w in words) for m in ours), ours


NUL_REQUESTS = [
    ("GET", "/authorize?client_id=%00&response_type=code&code_challenge=x"
            "&code_challenge_method=S256&redirect_uri=https://claude.ai/cb", {}),
    ("POST", "/token", {"data": {"grant_type": "authorization_code", "client_id": "\x00",
                                 "code": "x", "code_verifier": "y",
                                 "redirect_uri": "https://claude.ai/cb"}}),
    ("POST", "/revoke", {"data": {"client_id": "\x00", "token": "x"}}),
    ("POST", "/register", {"json": {"redirect_uris": ["https://claude.ai/cb"],
                                    "client_name": "Claude\x00"}}),
]


@pytest.mark.parametrize(("method", "path", "options"), NUL_REQUESTS,
                         ids=[f"{m} {p.split('?')[0]}" for m, p, _ in NUL_REQUESTS])
async def test_a_nul_byte_in_the_oauth_endpoints_is_a_clean_4xx(
        hook_world: World, http: httpx.AsyncClient, method: str, path: str,
        options: dict[str, Any]) -> None:
    before, mark = await Snapshot.of(hook_world.app), hook_world.mark()
    response = await http.request(method, path, **options)
    assert refused(response) is None and 400 <= response.status_code < 500
    await harmless(hook_world, before, mark, http)
