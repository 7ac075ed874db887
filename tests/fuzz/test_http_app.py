"""HTTP payloads through the real app (channels/web.build_app over httpx's ASGI transport,
a whole Axi on PostgreSQL behind it: the token API, the site's legacy endpoints and the
Telegram webhook, mounted as in production).

What this proves, for generated bodies (legacy shapes with hostile values, any JSON value,
any bytes under any content type) and hostile proxy headers:

- never a 5xx nor a stack trace: a 2xx, or a 4xx whose JSON says why in French
  (`error` + `message`; the site's widget shape `content[0].text` on /chat-proxy);
- nothing stored for a refused body, and nothing lost for an accepted one: a /chat-proxy
  conversation that `parse_chat` accepts (and is no #memo) is exactly one new inbound
  message, an /api/chat message exactly one, a valid contact form exactly one contact
  request (none for a robot's honeypot);
- the webhook answers any JSON with its secret with 200, and stores what `to_inbound`
  reads as a message (by its external id); without the secret, 401 and nothing stored;
  over its limit, 413.

Axi's loops are not started: an accepted message stays pending (the handlers answer
after `reply_timeout_s`), so the examples measure the parsers, not the model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from telegram import Bot, Update

from bot.app import Axi
from bot.channel import Channel, ChannelSet
from bot.inbound import Inbound
from bot.pipeline import _params
from channels.site import SiteChannel
from channels.site_rules import Invalid, is_robot, memo_text, parse_chat, validate_contact
from channels.telegram import TelegramChannel
from channels.telegram_updates import to_inbound
from channels.web import WebChannel, build_app
from channels.web_api import chat_request
from channels.web_guard import WebConfig
from channels.web_stream import LiveStreams
from memory.database import Database
from memory.messages import InvalidInput
from memory.text import clean
from tests.bot.test_pipeline import make_settings
from tests.channels.test_telegram import telegram_config
from tests.conftest import empty_tables
from tests.fakes.ollama_server import FakeOllama
from tests.fakes.telegram_server import FakeTelegram
from tests.fuzz.support import execute, fuzz, hostile_text, json_values, scalar
from tests.fuzz.test_telegram_updates import JUNK_KEYS, VALID, updates
from tests.waiting import until

ORIGIN = "https://www.icidordogne.fr"
LIMIT = 64 * 1024
WEBHOOK = "/telegram/webhook"


@dataclass
class World:
    axi: Axi
    client: httpx.AsyncClient
    telegram: TelegramChannel
    token: str

    async def count(self, sql: str) -> int:
        return int(await scalar(self.axi, sql))

    async def inbound(self) -> int:
        return await self.count("SELECT count(*) FROM messages WHERE sens = 'entrant'")

    async def contacts(self) -> int:
        return await self.count("SELECT count(*) FROM demandes_contact")

    async def stored(self) -> tuple[int, int, int]:
        """Everything a request could store: messages, contact requests, confirmations."""
        return (await self.inbound(), await self.contacts(),
                await self.count("SELECT count(*) FROM confirmations"))


@pytest.fixture(scope="module")
async def world(db: Database, database_url: str | None, test_data_dir: Path,
                ollama_server_session: FakeOllama, telegram_server_session: FakeTelegram
                ) -> AsyncIterator[World]:
    fake = telegram_server_session
    fake.reset()
    fake.start()
    await empty_tables(db)
    settings = make_settings(ollama_server_session, None, database_url,
                             test_data_dir, AXI_QUIET_HOURS="off")
    telegram = TelegramChannel(telegram_config(fake, webhook_url=f"https://axi.test{WEBHOOK}"))
    channels: dict[str, Channel] = {"telegram": telegram, "site": SiteChannel(),
                                    "web": WebChannel("127.0.0.1", 0)}
    async with Axi(settings, ChannelSet.of(channels)) as axi:
        ludo = await axi.store.add_person("Ludo", relation="créateur",
                                          identities=[("telegram", "1001")])
        token = (await axi.store.create_token(ludo.id, scope="chat")).secret
        await axi.start_channels()
        await until(lambda: fake.webhook, 10, message="the webhook was never set")
        config = WebConfig(site_origins=(ORIGIN,), reply_timeout_s=0.05,
                           rate_per_minute=1_000_000)
        app = build_app(axi.services, config, LiveStreams())
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))  # the tunnel
        async with httpx.AsyncClient(transport=transport, base_url="http://axi.test",
                                     timeout=30.0) as client:
            yield World(axi, client, telegram, token)
    fake.reset()
    fake.start()


def as_json(value: Any) -> bytes:
    """The body a client sends: lone surrogates escaped (\\ud800), as JSON allows."""
    return json.dumps(value).encode("ascii")


def header(value: str) -> bytes:
    """A header value as it can travel: latin-1 bytes, no line break nor NUL."""
    return value.encode("latin-1", "replace").translate(None, b"\r\n\x00").strip()


def clean_refusal(response: httpx.Response) -> dict[str, Any]:
    """A 2xx, or a 4xx in French JSON; never a 5xx nor a trace. The JSON body."""
    assert response.status_code < 500, (response.status_code, response.text[:300])
    assert "Traceback" not in response.text
    body = response.json()
    assert isinstance(body, dict)
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"]
        assert isinstance(body.get("message"), str) and body["message"]
    return body


# ------------------------------------------------------------------ the legacy site shapes
blocks = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": hostile_text(50)}),
                  min_size=1, max_size=3)
good_turns = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]),
                                    "content": st.one_of(hostile_text(200), blocks)})
odd_turns = st.fixed_dictionaries({"role": json_values(max_leaves=2),
                                   "content": json_values(max_leaves=3)})
chat_bodies = st.one_of(
    # the widget's shape, every turn well formed (the visitor's words hostile)
    st.fixed_dictionaries({"messages": st.lists(good_turns, min_size=1, max_size=6)},
                          optional={"system": json_values(max_leaves=3),
                                    "site_id": st.one_of(hostile_text(30), json_values())}),
    # the same with odd turns mixed in
    st.fixed_dictionaries({"messages": st.lists(st.one_of(good_turns, odd_turns), max_size=6)},
                          optional={"site_id": json_values()}),
    json_values(["messages", "system", "site_id", "role", "content"]))


def parsed_chat(body: Any) -> Any:
    if not isinstance(body, dict):
        return None
    try:
        return parse_chat(body)
    except Invalid:
        return None


@fuzz(60)
@given(chat_bodies)
async def test_chat_proxy_takes_any_conversation_or_refuses_it_in_french(
        world: World, body: Any) -> None:
    before = await world.stored()
    response = await world.client.post("/chat-proxy", content=as_json(body),
                                       headers={"Origin": ORIGIN,
                                                "Content-Type": "application/json"})
    answer = clean_refusal(response)
    assert isinstance(answer["content"][0]["text"], str) and answer["content"][0]["text"]
    asked = parsed_chat(body)
    event("refused" if asked is None else "memo" if memo_text(asked.last_user) is not None
          else "accepted")
    after = await world.stored()
    if asked is None:
        assert response.status_code == 400 and after == before
    elif memo_text(asked.last_user) is None:  # nothing lost: the visitor's message stored
        assert response.status_code == 200 and after[0] == before[0] + 1
    else:
        assert response.status_code == 200 and after[0] == before[0]


emails = st.one_of(st.just("durand@example.fr"),
                   st.from_regex(r"[a-z0-9.+-]{1,12}@[a-z0-9-]{1,12}\.[a-z]{2,4}", fullmatch=True))
contact_bodies = st.one_of(
    # a person's form: plausible values, hostile words
    st.fixed_dictionaries(
        {"name": hostile_text(40).map("Nom ".__add__), "email": emails,
         "message": hostile_text(300).map("Bonjour ".__add__)},
        optional={"phone": st.one_of(st.just("05 53 00 00 00"), st.integers(10**8, 10**10)),
                  "bien": hostile_text(40), "site_id": json_values(max_leaves=2)}),
    # any field of any type, the honeypot sometimes filled
    st.fixed_dictionaries(
        {"name": json_values(max_leaves=2), "email": st.one_of(emails, hostile_text(30)),
         "message": json_values(max_leaves=2)},
        optional={"phone": st.one_of(hostile_text(20), st.integers()),
                  "bien": json_values(max_leaves=2),
                  "website": st.one_of(st.just(""), hostile_text(10), json_values(max_leaves=1))}),
    json_values(["name", "email", "message", "phone", "bien", "website", "hp", "_gotcha"]))


@fuzz(60)
@given(contact_bodies, st.ip_addresses(v=4).map(str))
async def test_contact_stores_a_valid_form_once_and_refuses_the_rest_with_reasons(
        world: World, body: Any, ip: str) -> None:
    await execute(world.axi, "DELETE FROM demandes_contact")  # below the caps
    before = await world.stored()
    response = await world.client.post("/contact", content=as_json(body),
                                       headers={"Origin": ORIGIN, "CF-Connecting-IP": ip,
                                                "Content-Type": "application/json"})
    answer = clean_refusal(response)
    after = await world.stored()
    valid = isinstance(body, dict) and not is_robot(body)
    if valid:
        try:
            validate_contact(body)
        except Invalid:
            valid = False
    event(f"valid: {valid}")
    if valid:  # nothing lost
        assert response.status_code == 200 and answer["ok"] is True
        assert after == (before[0], before[1] + 1, before[2])
    else:
        assert after == before
        if response.status_code == 400 and "champs" in answer:
            assert isinstance(answer["champs"], dict)


api_bodies = st.one_of(
    st.fixed_dictionaries({"message": hostile_text(200)},
                          optional={"local_only": st.one_of(st.booleans(), json_values(max_leaves=1))}),
    json_values(["message", "local_only"]))


@fuzz(40)
@given(api_bodies, st.booleans())
async def test_the_token_api_stores_exactly_the_messages_it_accepts(
        world: World, body: Any, stream: bool) -> None:
    before = await world.inbound()
    headers = {"Authorization": f"Bearer {world.token}", "Content-Type": "application/json"}
    if stream:
        headers["Accept"] = "text/event-stream"
    response = await world.client.post("/api/chat", content=as_json(body), headers=headers)
    accepted = isinstance(body, dict) and isinstance(chat_request(body), tuple) \
        and bool(clean(body["message"]).strip())  # else refused by the inbox: a 400 too
    event(f"accepted: {accepted}")
    if accepted and stream:
        assert response.status_code == 200 and "Traceback" not in response.text
    else:
        clean_refusal(response)
        assert (response.status_code in (200, 202)) == accepted
    assert await world.inbound() == before + (1 if accepted else 0)


CONTENT_TYPES = ["application/json", "text/plain", "application/json; charset=latin-1",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                 "text/html", "", "application/octet-stream", "application/json\x7f"]


@fuzz(60)
@given(st.sampled_from(["/chat-proxy", "/contact", "/api/chat"]),
       st.one_of(st.binary(max_size=300),
                 json_values().map(lambda v: json.dumps(v).encode()),
                 st.sampled_from([b'{"messages": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                                  b'{"a": 1e999999}', b'{"message": "\\ud800"}', b"\xef\xbb\xbf{}",
                                  b'{"message": 1' + b"0" * 5000 + b"}", b"null", b""])),
       st.sampled_from(CONTENT_TYPES))
async def test_any_bytes_get_a_clean_answer_and_a_refused_body_stores_nothing(
        world: World, path: str, body: bytes, content_type: str) -> None:
    before = await world.stored()
    headers = {"Origin": ORIGIN, "Authorization": f"Bearer {world.token}"}
    if content_type:
        headers["Content-Type"] = content_type
    response = await world.client.post(path, content=body, headers=headers)
    clean_refusal(response)
    if response.status_code >= 400:
        assert await world.stored() == before


proxy_values = st.one_of(hostile_text(40), st.ip_addresses().map(str),
                         st.sampled_from(["127.0.0.1", "::1", "::ffff:127.0.0.1", "1.2.3.4, 5.6.7.8",
                                          "unknown", "for=1.2.3.4", "2001:db8::1%eth0", ""]))


@fuzz(40)
@given(st.dictionaries(st.sampled_from(["CF-Connecting-IP", "X-Forwarded-For", "Forwarded",
                                        "X-Real-IP", "CF-Ray", "Origin"]), proxy_values,
                       max_size=4))
async def test_junk_proxy_headers_never_break_the_site(world: World,
                                                       headers: dict[str, str]) -> None:
    latin = {k.encode(): header(v) for k, v in headers.items()}
    response = await world.client.post(
        "/contact", json={"name": "Mme Durand", "email": "durand@example.fr", "message": "x",
                          "website": "robot"},  # a honeypot: nothing stored, any origin
        headers={b"Origin": ORIGIN.encode(), **latin})
    clean_refusal(response)
    assert response.status_code in (200, 403)


# ------------------------------------------------------------------ the Telegram webhook
BOT = Bot("123:x")


def storable(item: Inbound) -> bool:
    """Whether the inbox can keep it (else it logs why and moves on: an empty text, an
    external id past 200 characters)."""
    try:
        _params(item)
    except InvalidInput:
        return False
    return True


def reads_as_a_message(data: dict[str, Any], world: World) -> Inbound | None:
    try:
        update = Update.de_json(data, BOT)
    except Exception:
        return None
    if update is None:
        return None
    item = to_inbound(update, bot_id=world.telegram.bot_id,
                      bot_username=world.telegram.bot_username, groups=frozenset())
    return item if isinstance(item, Inbound) else None


def secret(world: World) -> dict[str, str]:
    return {"X-Telegram-Bot-Api-Secret-Token": world.telegram.secret}


async def answered_and_kept(world: World, data: Any) -> None:
    """The webhook's contract for one body with its secret: 200 (never 5xx: Telegram would
    retry it, and hold the updates behind it, for ever), what reads as a message stored
    once, nothing stored for the rest."""
    item = reads_as_a_message(data, world) if isinstance(data, dict) else None
    before = await world.inbound()
    response = await world.client.post(WEBHOOK, content=as_json(data), headers=secret(world))
    event(f"{response.status_code}, read as a message: {item is not None}")
    assert response.status_code == 200, response.status_code
    if item is not None and storable(item):  # nothing lost
        stored = await scalar(world.axi, "SELECT count(*) FROM messages WHERE canal = 'telegram' "
                                         "AND identifiant_externe = :e", e=clean(item.external_id).strip())
        assert stored == 1, (data, item)
    elif item is None:
        assert await world.inbound() == before


@fuzz(60)
@given(st.one_of(updates(), json_values(["update_id", "message", "callback_query", "chat",
                                         "from", "text", "date", "message_id"])))
async def test_the_webhook_answers_200_and_stores_what_it_can_read(
        world: World, data: Any) -> None:
    await answered_and_kept(world, data)


@fuzz(20)
@given(st.one_of(updates(), json_values()), st.one_of(st.none(), hostile_text(80)))
async def test_the_webhook_without_its_secret_stores_nothing(
        world: World, data: Any, given_secret: str | None) -> None:
    before = await world.inbound()
    headers: dict[bytes, bytes] = {}
    if given_secret is not None:
        headers[b"X-Telegram-Bot-Api-Secret-Token"] = header(given_secret)
    response = await world.client.post(WEBHOOK, content=as_json(data), headers=headers)
    assert response.status_code == 401 and await world.inbound() == before


async def test_the_webhook_refuses_a_body_over_its_limit(world: World) -> None:
    before = await world.inbound()
    body = b'{"update_id": 1, "x": "' + b"a" * 1_000_001 + b'"}'
    response = await world.client.post(WEBHOOK, content=body, headers=secret(world))
    assert response.status_code == 413 and await world.inbound() == before


@fuzz(30)
@example({"update_id": 902, "callback_query": {"id": "q", "chat_instance": "c", "data": "\x00",
                                               "from": VALID["from"]}})
@example({"update_id": 903, "message": {**VALID, "message_id": 903, "document": {
    "file_id": "f", "file_unique_id": "u", "file_name": "plan\x00.pdf"}}})
@given(updates())  # NULs in a button's data, a file's name or id, a sender's name…
async def test_a_nul_where_stored_json_holds_it_never_refuses_the_update(
        world: World, data: Any) -> None:
    await answered_and_kept(world, data)


async def test_a_nul_is_dropped_from_the_stored_json_and_nothing_else(world: World) -> None:
    button = {"update_id": 904, "callback_query": {
        "id": "q\x00904", "chat_instance": "c", "data": "confirmation:\x0012:oui",
        "from": {**VALID["from"], "first_name": "Lu\x00do"}}}
    document = {"update_id": 905, "message": {**VALID, "message_id": 905, "caption": "Le plan",
                                              "document": {"file_id": "f\x00905",
                                                           "file_unique_id": "u",
                                                           "file_name": "plan\x00.pdf"}}}
    for data in (button, document):
        response = await world.client.post(WEBHOOK, content=as_json(data),
                                           headers=secret(world))
        assert response.status_code == 200, response.status_code
    assert await scalar(world.axi, "SELECT metadata->'evenement'->>'donnees' || ' ' || "
                        "(metadata->>'nom_affiche') FROM messages WHERE identifiant_externe = "
                        "'bouton:q904'") == "confirmation:12:oui Ludo"
    assert await scalar(world.axi, "SELECT (pieces_jointes->0->>'filename') || ' ' || "
                        "(pieces_jointes->0->>'ref') FROM messages WHERE identifiant_externe "
                        "= '7:905'") == "plan.pdf f905"


@fuzz(40)
@example({"update_id": 901, "message": {**VALID, "text": 5}})
@example({"update_id": "abc", "message": VALID})
@example({"update_id": 906, "message": {**VALID, "entities": [5]}})
@example({"update_id": 907, "callback_query": {"id": "q", "chat_instance": "c", "data": "oui"}})
@given(json_values(JUNK_KEYS))
async def test_the_webhook_answers_200_to_an_update_axi_cannot_read(
        world: World, data: Any) -> None:
    await answered_and_kept(world, data)
