"""The pure rules behind the HTTP endpoints (channels/site_rules.py, web_guard.py,
web_api.py) on any input: what test_http_app proves through the app, here on many more
examples and with exact oracles.

- the legacy `/chat-proxy` body: `parse_chat` takes any object and gives the visitor's
  last message, the first one (for the visitor key) and the turns before it, or refuses
  it with a French reason naming the field; the site id is one clean line;
- the `/contact` form: `validate_contact` gives clean, bounded fields (no control
  character), or refuses with a French reason for each faulty field;
- `#memo`, the visitor key, the Origin's site: never raise, clean results;
- the client's IP behind the tunnel: `client_ip` believes `CF-Connecting-IP` only from
  a trusted peer and only when it is an IP, `rate_key` counts an IPv6 address by its /64,
  `local_client` is never true for a request that came through a proxy;
- the token API's inputs: `chat_request`, `history_query`, `message_id_of`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from starlette.responses import JSONResponse

from channels.site_rules import (
    DEFAULT_SITE,
    MESSAGE_MAX,
    SITE_ID_MAX,
    ChatRequest,
    ContactForm,
    Invalid,
    clean_site_id,
    memo_text,
    parse_chat,
    site_of_origin,
    validate_contact,
    visitor_key,
)
from channels.web_api import HISTORY_MAX, MAX_MESSAGE_CHARS, chat_request, history_query, message_id_of
from channels.web_guard import LOOPBACK, client_ip, local_client, rate_key
from tests.fuzz.support import fuzz, hostile_text, json_values
from tests.fuzz.test_http_app import chat_bodies, contact_bodies

CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def french(exc: Invalid) -> None:
    assert exc.message and isinstance(exc.message, str)
    assert all(isinstance(k, str) and v for k, v in exc.fields.items())


@fuzz(250)
@given(chat_bodies.filter(lambda b: isinstance(b, dict)))
def test_parse_chat_reads_the_widget_shape_or_refuses_it_with_a_reason(
        body: dict[str, Any]) -> None:
    try:
        asked = parse_chat(body)
    except Invalid as exc:
        french(exc)
        return
    assert isinstance(asked, ChatRequest)
    turns = body["messages"]
    users = [t for t in turns if t["role"] == "user"]
    assert users and asked.last_user.strip()

    def text(turn: dict[str, Any]) -> str:
        content = turn["content"]
        return content if isinstance(content, str) else "\n".join(b["text"] for b in content)

    assert asked.first_user == text(users[0]) and asked.last_user == text(users[-1])
    assert len(asked.earlier) <= len(turns) - 1  # the turns before the last message, at most
    assert 0 < len(asked.site_id) <= SITE_ID_MAX and not CONTROL.search(asked.site_id)
    key = visitor_key(asked.site_id, "203.0.113.7", asked.first_user)
    assert re.fullmatch("visiteur-[0-9a-f]{16}", key)
    memo = memo_text(asked.last_user)
    assert memo is None or not CONTROL.search(memo)


@fuzz(250)
@given(contact_bodies.filter(lambda b: isinstance(b, dict)))
def test_validate_contact_gives_clean_fields_or_a_reason_per_field(body: dict[str, Any]) -> None:
    try:
        form = validate_contact(body)
    except Invalid as exc:
        french(exc)
        assert exc.fields and exc.message in exc.fields.values()
        return
    assert isinstance(form, ContactForm)
    for value in (form.name, form.email, form.phone, form.bien):
        if value is not None:
            assert value == value.strip() and not CONTROL.search(value) and "\n" not in value
            value.encode("utf-8")
    assert form.name and form.email and form.message.strip()
    assert len(form.message) <= MESSAGE_MAX and not CONTROL.search(form.message.replace("\n", ""))
    form.message.encode("utf-8")


@fuzz(150)
@given(st.one_of(hostile_text(60), json_values(max_leaves=2)), hostile_text(40))
def test_site_ids_origins_and_memos_are_clean(value: Any, text: str) -> None:
    try:
        site = clean_site_id(value)
    except Invalid as exc:
        french(exc)
        assert not isinstance(value, str) and value is not None
    else:
        assert site == DEFAULT_SITE or (0 < len(site) <= SITE_ID_MAX and not CONTROL.search(site))
    origin = site_of_origin(text)
    assert origin is None or 0 < len(origin) <= SITE_ID_MAX
    memo = memo_text(text)
    assert memo is None or not CONTROL.search(memo)
    assert visitor_key(text, text, text).startswith("visiteur-")


# ------------------------------------------------------------------ the client's IP
peers = st.one_of(st.ip_addresses().map(str), st.sampled_from(["127.0.0.1", "::1",
                                                                "::ffff:127.0.0.1", "", "unix"]),
                  hostile_text(20))
header_values = st.one_of(st.ip_addresses().map(lambda a: str(a).encode()),
                          st.binary(max_size=40),
                          st.sampled_from([b"1.2.3.4, 5.6.7.8", b" 9.9.9.9 ", b"127.0.0.1",
                                           b"2001:db8::1%eth0", b"::ffff:10.0.0.1", b"\xff"]))
PROXY = [b"cf-connecting-ip", b"x-forwarded-for", b"forwarded", b"x-real-ip", b"cf-ray"]


@fuzz(250)
@given(peers, st.lists(st.tuples(st.sampled_from([*PROXY, b"origin", b"cookie"]), header_values),
                       max_size=4))
def test_the_client_ip_is_believed_only_from_the_tunnel(
        peer: str, headers: list[tuple[bytes, bytes]]) -> None:
    scope = {"type": "http", "client": (peer, 4000), "headers": headers}
    ip = client_ip(scope)
    assert isinstance(ip, str) and ip
    try:
        address = ipaddress.ip_address(peer.strip())
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    trusted = address is not None and any(address in n for n in LOOPBACK)
    if not trusted:  # a forged header from elsewhere is ignored
        assert ip == (peer or "inconnu")
    elif ip != peer:
        [cf] = [v for k, v in headers if k == b"cf-connecting-ip"][:1]
        assert ipaddress.ip_address(cf.decode("latin-1").strip())
    if any(k in PROXY for k, _ in headers):
        assert not local_client(scope)
    key = rate_key(ip)
    try:
        parsed = ipaddress.ip_address(ip)
    except ValueError:
        assert key == ip
    else:
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is None:
            assert ipaddress.ip_network(key).prefixlen == 64 and parsed in ipaddress.ip_network(key)


# ------------------------------------------------------------------ the token API's inputs
@fuzz(150)
@given(json_values(["message", "local_only"]).filter(lambda v: isinstance(v, dict)))
def test_chat_request_takes_a_message_or_says_which_field_is_wrong(body: dict[str, Any]) -> None:
    parsed = chat_request(body)
    if isinstance(parsed, JSONResponse):
        assert parsed.status_code == 400
        return
    message, local_only = parsed
    assert message == body["message"] and message.strip() and len(message) <= MAX_MESSAGE_CHARS
    assert local_only is body.get("local_only", False)


@fuzz(200)
@given(st.dictionaries(st.sampled_from(["before", "limit", "x"]),
                       st.one_of(hostile_text(25), st.integers(-(10**30), 10**30).map(str),
                                 st.sampled_from(["", " 5 ", "٣", "1e3", "0", "101", "+5"]))),
       st.one_of(hostile_text(25), st.integers(-(10**30), 10**30).map(str)))
def test_history_queries_and_message_ids_are_bounded(params: dict[str, str], path: str) -> None:
    query = history_query(params)
    if isinstance(query, JSONResponse):
        assert query.status_code == 400
    else:
        before, limit = query
        assert 1 <= limit <= HISTORY_MAX
        assert before is None or 1 <= before <= 2**63 - 1
    message_id = message_id_of(path)
    assert message_id is None or (1 <= message_id <= 2**63 - 1 and str(message_id) == path.lstrip("0"))
