"""A loopback Telegram Bot API server, for driving the real python-telegram-bot (PTB) in tests
through `Bot(token, base_url=fake.base_url, base_file_url=fake.base_file_url)`.

It speaks the Bot API as PTB uses it: POST (or GET) to `/bot<token>/<method>` with the
parameters form-encoded (multipart when a file is uploaded), every non-string value JSON
encoded (`chat_id=42`, `reply_markup={"inline_keyboard": …}`); it answers
`{"ok": true, "result": …}` or `{"ok": false, "error_code": …, "description": …}`.

Updates are scripted from the test (any thread) and served by a real long poll:

    fake.message(42, "bonjour")              # queued for getUpdates, returned as a dict
    fake.callback(42, "confirm:1")           # a button pressed on the bot's last message
    fake.fail("sendMessage", 429, retry_after=3)
    fake.drop("getUpdates")                  # connection closed without a response
    fake.get_updates_delay_s = 2.0           # a slow, wedged poll
    fake.send_delay_s = 2.0                  # sendMessage delivers, then answers late
    fake.rate_limit = True                   # Telegram's flood limits answer 429

and everything the bot did is recorded: `calls`, `sent`, `chat_messages(chat_id)`, `drafts`,
`commands`, `webhook`. As Telegram, `text` in a returned Message is the text after entity
parsing (tags stripped, `&lt;` decoded) with its `entities`; `sent` entries also keep the
text exactly as posted (`raw_text`) and the `parse_mode`.

A second getUpdates while one is pending ends the first with 409 "terminated by other
getUpdates request", as Telegram does when two pollers run at once.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import html
import itertools
import json
import random
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from tests.fakes.loopback import LoopbackServer, loopback_fixtures

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_POLL_S = 50.0  # Telegram's own cap on a long poll's timeout
RATE_LIMITED_METHODS = frozenset({"sendmessage", "editmessagetext", "senddocument"})

# parameters that are always strings in the Bot API (never JSON-decoded, e.g. text "123")
STRING_PARAMS = frozenset({
    "text", "caption", "parse_mode", "callback_query_id", "url", "secret_token", "file_id",
    "language_code", "action", "description", "short_description", "name", "title",
    "inline_message_id", "message_effect_id", "business_connection_id", "emoji", "data",
    "ip_address", "document", "photo", "voice", "audio", "video",
})

DEFAULT_DESCRIPTIONS = {
    400: "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; "
         "make sure that only one bot instance is running",
    500: "Internal Server Error",
}
BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx/1.18.0</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass
class Call:
    """One request the bot made. `params` are decoded (ints, JSON objects); `files` holds
    the uploaded parts' bytes; `status` is the HTTP status the fake answered (0: dropped)."""

    method: str
    params: dict[str, Any]
    at: float
    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 200


class ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: dict[str, Any] | None = None):
        super().__init__(description)
        self.status, self.description, self.parameters = status, description, parameters


def bad_request(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


# ---------------------------------------------------------------------- HTML parse_mode
_TAG_ENTITY = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough", "del": "strikethrough",
    "code": "code", "pre": "pre", "a": "text_link", "tg-spoiler": "spoiler", "span": "spoiler",
    "blockquote": "blockquote",
}
_ATTR_VALUE = r"(?:\"[^\"]*\"|'[^']*'|[^\s\"'>]+)"
_START_TAG = re.compile(rf"<([a-zA-Z][a-zA-Z0-9-]*)((?:\s+[a-zA-Z-]+(?:\s*=\s*{_ATTR_VALUE})?)*)\s*>")
_ATTR = re.compile(r"([a-zA-Z-]+)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'>]+))?")
_END_TAG = re.compile(r"</([a-zA-Z][a-zA-Z0-9-]*)\s*>")
_CHAR_REF = re.compile(r"&(lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(source: str) -> tuple[str, list[dict[str, Any]]]:
    """The text and entities Telegram makes of a parse_mode=HTML text, or ApiError 400
    "can't parse entities" (a small but real check: only Telegram's tags, balanced, with
    `&`, `<` and `>` escaped outside tags)."""

    def fail(detail: str) -> ApiError:
        return bad_request(f"can't parse entities: {detail}")

    def byte_offset(i: int) -> int:
        return len(source[:i].encode())

    out: list[str] = []
    offset = 0  # in UTF-16 code units, as entity offsets are
    stack: list[tuple[str, int, dict[str, str]]] = []
    entities: list[dict[str, Any]] = []
    i = 0
    while i < len(source):
        c = source[i]
        if c == "<":
            end = _END_TAG.match(source, i)
            if end:
                name = end.group(1).lower()
                if not stack:
                    raise fail(f'Unexpected end tag at byte offset {byte_offset(i)}')
                open_name, start, attrs = stack.pop()
                if name != open_name:
                    raise fail(f'Unmatched end tag at byte offset {byte_offset(i)}, expected '
                               f'"</{open_name}>", found "</{name}>"')
                _close_entity(open_name, start, offset, attrs, stack, entities)
                i = end.end()
                continue
            start_tag = _START_TAG.match(source, i)
            if not start_tag:
                raise fail(f"Unsupported start tag at byte offset {byte_offset(i)}: "
                           "'<' must be escaped as &lt;")
            name = start_tag.group(1).lower()
            attrs = {m.group(1).lower(): html.unescape((m.group(2) or "").strip("\"'"))
                     for m in _ATTR.finditer(start_tag.group(2))}
            if name not in _TAG_ENTITY or (
                name == "span" and attrs.get("class") != "tg-spoiler"
            ):
                raise fail(f'Unsupported start tag "{name}" at byte offset {byte_offset(i)}')
            stack.append((name, offset, attrs))
            i = start_tag.end()
            continue
        if c == ">":
            raise fail(f"Character '>' at byte offset {byte_offset(i)} must be escaped as &gt;")
        if c == "&":
            ref = _CHAR_REF.match(source, i)
            if not ref:
                raise fail(f"Character '&' at byte offset {byte_offset(i)} must be escaped as &amp;")
            text = html.unescape(ref.group(0))
            i = ref.end()
        else:
            text = c
            i += 1
        out.append(text)
        offset += _utf16_len(text)
    if stack:
        raise fail(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _close_entity(name: str, start: int, end: int, attrs: dict[str, str],
                  stack: list[tuple[str, int, dict[str, str]]],
                  entities: list[dict[str, Any]]) -> None:
    if end <= start:
        return
    kind = _TAG_ENTITY[name]
    entity: dict[str, Any] = {"type": kind, "offset": start, "length": end - start}
    if kind == "text_link":
        if not attrs.get("href"):
            return  # Telegram keeps the text, without a link
        entity["url"] = attrs["href"]
    elif kind == "blockquote" and "expandable" in attrs:
        entity["type"] = "expandable_blockquote"
    elif kind == "code" and stack and stack[-1][0] == "pre":
        language = attrs.get("class", "")
        if language.startswith("language-"):
            stack[-1][2]["language"] = language.removeprefix("language-")
            return  # Telegram folds it into the enclosing pre entity
    elif kind == "pre" and attrs.get("language"):
        entity["language"] = attrs["language"]
    entities.append(entity)


# ---------------------------------------------------------------------- request decoding
def _decode_param(name: str, value: str) -> Any:
    if name in STRING_PARAMS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes],
                                                               dict[str, str]]:
    """Fields, files (bytes) and file names of a multipart/form-data body."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    names: dict[str, str] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is None:
            fields[name] = data.decode()
        else:
            files[name] = data
            names[name] = filename
    return fields, files, names


class _App(Starlette):
    """Keeps the connection's transport in the scope, so a handler can drop it."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        cycle = getattr(send, "__self__", None)  # uvicorn's RequestResponseCycle
        scope["axi.transport"] = getattr(cycle, "transport", None)
        await super().__call__(scope, receive, send)


# ---------------------------------------------------------------------- the fake
class FakeTelegram:
    TOKEN = f"123456:{secrets.token_hex(8)}"  # the loopback bot's token: made per run
    bot_id = 999
    bot_username = "axi_test_bot"
    bot_first_name = "Axi"

    def __init__(self) -> None:
        self.server = LoopbackServer(_App(routes=[
            Route("/bot{token}/{method}", self._api, methods=["GET", "POST"]),
            Route("/file/bot{token}/{file_path:path}", self._file, methods=["GET"]),
        ]))
        self._lock = threading.RLock()
        self.calls: list[Call] = []
        self.sent: list[dict[str, Any]] = []
        self.drafts: list[Call] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._poll_generation = 0
        self.reset()

    # ------------------------------------------------------------------ control
    def reset(self) -> None:
        with self._lock:
            self.handed: dict[tuple[int, int], float] = {}
            """When a getUpdates first returned each message ((chat id, message id) →
            time.monotonic()): bench/telegram.py tells the fake's own delay from it."""
            self.calls.clear()
            self.sent.clear()
            self.drafts.clear()
            self.commands.clear()
            self._updates: list[dict[str, Any]] = []
            self.next_update_id = random.randint(100_000, 900_000_000)
            self.allowed_updates: list[str] | None = None
            self._messages: dict[int, dict[int, dict[str, Any]]] = {}
            self._next_message_id: dict[int, int] = {}
            self._chats: dict[int, dict[str, Any]] = {}
            self._files: dict[str, tuple[bytes, str]] = {}
            self._callback_ids: set[str] = set()
            self._ids = itertools.count(1)
            self._failures: dict[str, deque[tuple[int, str, int | None] | None]] = {}
            self._drops: dict[str, int] = {}
            self.webhook: str | None = None
            self.webhook_secret: str | None = None
            self.get_updates_delay_s = 0.0
            self.send_delay_s = 0.0
            self.rate_limit = False
            self.rate_limited = 0
            self.rate_violations = 0
            """Calls beyond the flood limits, counted whether or not `rate_limit` refused them."""
            self._recent_all: deque[float] = deque()
            self._recent_chat: dict[int, deque[float]] = {}
            self._poll_generation += 1  # a poll left from the last test ends (409)
        self._wake()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.url + "/bot"

    @property
    def base_file_url(self) -> str:
        return self.url + "/file/bot"

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def fail(self, method: str, status: int, *, times: int = 1, description: str = "",
             retry_after: int | None = None, after: int = 0) -> None:
        """The next `times` calls of `method` answer this error (after `after` calls
        that go through)."""
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            queue = self._failures.setdefault(method.lower(), deque())
            queue.extend([None] * after + [(status, description, retry_after)] * times)

    def drop(self, method: str, *, times: int = 1) -> None:
        """The next `times` calls of `method` get their connection closed, no response."""
        with self._lock:
            self._drops[method.lower()] = self._drops.get(method.lower(), 0) + times

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in list(self.calls) if c.method.lower() == method.lower()]

    def chat_messages(self, chat_id: int) -> list[dict[str, Any]]:
        """The chat's current messages sent by the bot (after edits and deletions), in order."""
        with self._lock:
            messages = self._messages.get(chat_id, {})
            return [json.loads(json.dumps(m)) for _, m in sorted(messages.items())
                    if m.get("from", {}).get("id") == self.bot_id]

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by an offset."""
        with self._lock:
            return list(self._updates)

    # ------------------------------------------------------------------ scripting updates
    def _user(self, user_id: int, first_name: str = "Ludo",
              username: str | None = None) -> dict[str, Any]:
        user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name,
                                "language_code": "fr"}
        if username:
            user["username"] = username
        return user

    def _bot_user(self) -> dict[str, Any]:
        return {"id": self.bot_id, "is_bot": True, "first_name": self.bot_first_name,
                "username": self.bot_username}

    def _chat(self, chat_id: int) -> dict[str, Any]:
        with self._lock:
            known = self._chats.get(chat_id)
        if known:
            return dict(known)
        return {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}

    def _new_message_id(self, chat_id: int) -> int:
        with self._lock:
            message_id = self._next_message_id.get(chat_id, 1)
            self._next_message_id[chat_id] = message_id + 1
            return message_id

    def _store_message(self, message: dict[str, Any]) -> None:
        chat_id, message_id = message["chat"]["id"], message["message_id"]
        with self._lock:
            self._messages.setdefault(chat_id, {})[message_id] = message
            following = self._next_message_id.get(chat_id, 1)
            self._next_message_id[chat_id] = max(following, message_id + 1)

    def _find_message(self, chat_id: int, message_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._messages.get(chat_id, {}).get(message_id)

    def _auto_file(self, kind: str, path: str, content: bytes) -> str:
        n = next(self._ids)
        file_id = f"{kind}-{n}"
        self.add_file(file_id, content, path.format(n=n))
        return file_id

    def message(self, user_id: int, text: str | None = None, *, chat_id: int | None = None,
                chat_type: str = "private", first_name: str = "Ludo", username: str | None = None,
                reply_to: int | None = None, entities: list[dict[str, Any]] | None = None,
                photo: bool = False, document: dict[str, Any] | None = None, voice: bool = False,
                location: tuple[float, float] | None = None, contact: dict[str, Any] | None = None,
                forward_from: dict[str, Any] | None = None, caption: str | None = None,
                no_from: bool = False) -> dict[str, Any]:
        """Queue a message update (a private chat with the user unless `chat_id`) and return
        it. A leading /command gets its bot_command entity, as Telegram's parser gives it.
        Photos, documents and voice notes get file ids with downloadable bytes."""
        chat_id = user_id if chat_id is None else chat_id
        user = self._user(user_id, first_name, username)
        chat: dict[str, Any] = {"id": chat_id, "type": chat_type}
        if chat_type == "private":
            chat.update({k: v for k, v in user.items() if k in ("first_name", "username")})
        else:
            chat["title"] = f"Groupe {chat_id}"
        with self._lock:
            self._chats[chat_id] = chat
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat_id), "date": int(time.time()), "chat": chat,
        }
        if not no_from:
            message["from"] = user
        if text is not None:
            message["text"] = text
            if entities is None and text.startswith("/"):
                command = re.match(r"/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?", text)
                if command:
                    entities = [{"type": "bot_command", "offset": 0,
                                 "length": _utf16_len(command.group(0))}]
            if entities:
                message["entities"] = entities
        if caption is not None:
            message["caption"] = caption
        if reply_to is not None:
            replied = self._find_message(chat_id, reply_to)
            message["reply_to_message"] = _without_reply(replied) if replied else {
                "message_id": reply_to, "date": int(time.time()), "chat": chat,
                "from": self._bot_user(), "text": "…",
            }
        if photo:
            small = self._auto_file("photo", "photos/file_{n}.jpg", b"\xff\xd8small-jpeg")
            big = self._auto_file("photo", "photos/file_{n}.jpg", b"\xff\xd8" + b"big-jpeg" * 100)
            message["photo"] = [
                {"file_id": small, "file_unique_id": f"u{small}", "width": 90, "height": 67,
                 "file_size": 10},
                {"file_id": big, "file_unique_id": f"u{big}", "width": 1280, "height": 960,
                 "file_size": 802},
            ]
        if document is not None:
            doc: dict[str, Any] = {"file_name": "document.pdf", "mime_type": "application/pdf"}
            doc.update(document)
            if "file_id" not in doc:
                doc["file_id"] = self._auto_file("document", f"documents/{doc['file_name']}",
                                                 b"%PDF-1.4 fake")
            if doc["file_id"] not in self._files:
                self.add_file(doc["file_id"], b"%PDF-1.4 fake", f"documents/{doc['file_name']}")
            doc.setdefault("file_unique_id", f"u{doc['file_id']}")
            doc.setdefault("file_size", len(self._files[doc["file_id"]][0]))
            message["document"] = doc
        if voice:
            file_id = self._auto_file("voice", "voice/file_{n}.oga", b"OggS fake voice")
            message["voice"] = {"file_id": file_id, "file_unique_id": f"u{file_id}",
                                "duration": 3, "mime_type": "audio/ogg", "file_size": 15}
        if location is not None:
            message["location"] = {"latitude": location[0], "longitude": location[1]}
        if contact is not None:
            message["contact"] = {"phone_number": "+33600000000", "first_name": "Julie", **contact}
        if forward_from is not None:
            sender = {"is_bot": False, "first_name": "Quelqu'un", **forward_from}
            message["forward_origin"] = {"type": "user", "date": int(time.time()) - 60,
                                         "sender_user": sender}
        return self._queue({"message": message})

    def edited(self, user_id: int, message_id: int, text: str, *,
               chat_id: int | None = None) -> dict[str, Any]:
        chat_id = user_id if chat_id is None else chat_id
        original = self._find_message(chat_id, message_id)
        message: dict[str, Any] = dict(original) if original else {
            "message_id": message_id, "date": int(time.time()) - 10, "chat": self._chat(chat_id),
            "from": self._user(user_id),
        }
        message.update({"text": text, "edit_date": int(time.time())})
        message.pop("entities", None)
        return self._queue({"edited_message": message})

    def callback(self, user_id: int, data: str, *, message_id: int | None = None,
                 chat_id: int | None = None) -> dict[str, Any]:
        """A button pressed on the bot's message `message_id` (default: its last one in the
        chat); the update's `callback_query.id` is what answerCallbackQuery takes."""
        chat_id = user_id if chat_id is None else chat_id
        mine = self.chat_messages(chat_id)
        if message_id is None and mine:
            message: dict[str, Any] = mine[-1]
        else:
            found = self._find_message(chat_id, message_id) if message_id is not None else None
            message = json.loads(json.dumps(found)) if found else {
                "message_id": message_id or 1, "date": int(time.time()),
                "chat": self._chat(chat_id), "from": self._bot_user(), "text": "…",
            }
        query_id = str(random.randint(10**17, 10**18))
        with self._lock:
            self._callback_ids.add(query_id)
        return self._queue({"callback_query": {
            "id": query_id, "from": self._user(user_id), "message": message,
            "chat_instance": str(-chat_id * 7919), "data": data,
        }})

    def raw_update(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue any dict (an unknown update type, garbage); update_id assigned if missing."""
        return self._queue(dict(update))

    def add_file(self, file_id: str, content: bytes, file_path: str = "photos/x.jpg") -> None:
        with self._lock:
            self._files[file_id] = (content, file_path)

    def file_content(self, file_id: str) -> bytes:
        with self._lock:
            return self._files[file_id][0]

    def _queue(self, update: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if "update_id" not in update:
                update = {"update_id": self.next_update_id, **update}
            if isinstance(update.get("update_id"), int):
                self.next_update_id = max(self.next_update_id, update["update_id"] + 1)
            message = update.get("message")
            if isinstance(message, dict) and isinstance(message.get("chat"), dict) \
                    and isinstance(message.get("message_id"), int):
                self._store_message(message)
            self._updates.append(update)
        self._wake()
        return update

    def _wake(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed (server stopped)
                pass

    # ------------------------------------------------------------------ HTTP
    async def _api(self, request: Request) -> Response:
        token, method = request.path_params["token"], request.path_params["method"]
        params, files, file_names = await self._read_params(request)
        call = Call(method, params, time.monotonic(), files)
        self.calls.append(call)
        if method.lower() == "sendmessagedraft":
            self.drafts.append(call)
        if token != self.TOKEN:
            call.status = 401
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"},
                                status_code=401)
        with self._lock:
            dropping = self._drops.get(method.lower(), 0) > 0
            if dropping:
                self._drops[method.lower()] -= 1
            failure = self._failures.get(method.lower())
            injected = failure.popleft() if failure else None
        if dropping:
            call.status = 0
            return await self._drop_connection(request)
        try:
            if injected is not None:
                raise self._injected_error(method, *injected)
            self._check_rate(method, params)
            result = await self._dispatch(method, params, files, file_names)
            if self.send_delay_s and method.lower() == "sendmessage":
                await asyncio.sleep(self.send_delay_s)  # delivered; the answer comes late
        except ApiError as exc:
            call.status = exc.status
            if exc.status == 502 and not exc.description:
                return Response(BAD_GATEWAY_HTML, status_code=502, media_type="text/html")
            body: dict[str, Any] = {"ok": False, "error_code": exc.status,
                                    "description": exc.description}
            if exc.parameters:
                body["parameters"] = exc.parameters
            return JSONResponse(body, status_code=exc.status)
        return JSONResponse({"ok": True, "result": result})

    async def _drop_connection(self, request: Request) -> Response:
        transport = request.scope.get("axi.transport")
        if transport is not None:
            transport.abort()  # later writes to it are discarded
            await asyncio.sleep(0.01)  # uvicorn sees the connection lost before we return
        return Response(status_code=500)

    @staticmethod
    def _injected_error(method: str, status: int, description: str,
                        retry_after: int | None) -> ApiError:
        if status == 429:
            return ApiError(429, description or f"Too Many Requests: retry after {retry_after}",
                            {"retry_after": retry_after})
        if status == 502:
            return ApiError(502, description)
        if status == 409 and not description and method.lower() != "getupdates":
            description = "Conflict: can't use getUpdates method while webhook is active"
        return ApiError(status, description or DEFAULT_DESCRIPTIONS.get(status, "Error"))

    async def _read_params(self, request: Request) -> tuple[dict[str, Any], dict[str, bytes],
                                                             dict[str, str]]:
        raw: dict[str, str] = dict(request.query_params)
        files: dict[str, bytes] = {}
        names: dict[str, str] = {}
        body = await request.body()
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            fields, files, names = _parse_multipart(content_type, body)
            raw.update(fields)
        elif content_type.startswith("application/json") and body:
            decoded = json.loads(body)
            return (decoded if isinstance(decoded, dict) else {}), files, names
        elif body:
            raw.update(parse_qsl(body.decode(), keep_blank_values=True))
        return {k: _decode_param(k, v) for k, v in raw.items()}, files, names

    async def _file(self, request: Request) -> Response:
        token, path = request.path_params["token"], request.path_params["file_path"]
        self.calls.append(Call("file", {"file_path": path}, time.monotonic()))
        with self._lock:
            found = [content for content, p in self._files.values() if p == path]
        if token != self.TOKEN:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"},
                                status_code=401)
        if not found:
            return JSONResponse({"ok": False, "error_code": 404, "description": "Not Found"},
                                status_code=404)
        return Response(found[0], media_type="application/octet-stream")

    # ------------------------------------------------------------------ flood limits
    def _check_rate(self, method: str, params: dict[str, Any]) -> None:
        if method.lower() not in RATE_LIMITED_METHODS:
            return
        now = time.monotonic()
        chat_id = params.get("chat_id")
        with self._lock:
            for recent in (self._recent_all, *self._recent_chat.values()):
                while recent and recent[0] <= now - 1.0:
                    recent.popleft()
            in_chat = self._recent_chat.setdefault(chat_id, deque()) if isinstance(
                chat_id, int) else deque()
            if in_chat or len(self._recent_all) >= 30:
                self.rate_violations += 1
                if self.rate_limit:
                    self.rate_limited += 1
                    raise ApiError(429, "Too Many Requests: retry after 1", {"retry_after": 1})

    def _count_rate(self, method: str, params: dict[str, Any]) -> None:
        """A flood-limited call that succeeded counts toward the limits."""
        if method.lower() not in RATE_LIMITED_METHODS:
            return
        now = time.monotonic()
        chat_id = params.get("chat_id")
        with self._lock:
            self._recent_all.append(now)
            if isinstance(chat_id, int):
                self._recent_chat.setdefault(chat_id, deque()).append(now)

    # ------------------------------------------------------------------ methods
    async def _dispatch(self, method: str, params: dict[str, Any], files: dict[str, bytes],
                        file_names: dict[str, str]) -> Any:
        name = method.lower()
        if name == "getupdates":
            return await self._get_updates(params)
        if name == "senddocument":
            result = self._send_document(params, files, file_names)
        else:
            handler = getattr(self, f"_m_{name}", None)
            if handler is None:
                raise ApiError(404, "Not Found")
            result = handler(params)
        self._count_rate(method, params)
        return result

    def _m_getme(self, params: dict[str, Any]) -> Any:
        return {**self._bot_user(), "can_join_groups": True, "can_read_all_group_messages": False,
                "supports_inline_queries": False, "can_connect_to_business": False,
                "has_main_web_app": False}

    async def _get_updates(self, params: dict[str, Any]) -> Any:
        offset = _int(params.get("offset"), 0)
        limit = max(1, min(100, _int(params.get("limit"), 100)))
        timeout = max(0.0, min(MAX_POLL_S, float(params.get("timeout") or 0)))
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.webhook:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is active;"
                                    " use deleteWebhook to delete the webhook first")
            if isinstance(params.get("allowed_updates"), list):
                self.allowed_updates = params["allowed_updates"] or None
            if offset < 0:
                self._updates = self._updates[offset:]
            elif offset:
                self._updates = [u for u in self._updates if _update_id(u) >= offset]
            self._poll_generation += 1
            generation = self._poll_generation
        self._wake()  # an older pending poll ends with 409
        if self.get_updates_delay_s:
            await asyncio.sleep(self.get_updates_delay_s)
        deadline = time.monotonic() + timeout
        while True:
            event = asyncio.Event()
            with self._lock:
                if generation != self._poll_generation:
                    raise ApiError(409, DEFAULT_DESCRIPTIONS[409])
                batch = self._deliverable(offset)[:limit]
                if not batch:
                    self._waiters.append((loop, event))
            remaining = deadline - time.monotonic()
            if batch or remaining <= 0:
                self._hand(batch)
                return batch
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                pass
            finally:
                with self._lock:
                    if (loop, event) in self._waiters:
                        self._waiters.remove((loop, event))

    def _hand(self, batch: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        for update in batch:
            message = update.get("message")
            if isinstance(message, dict) and isinstance(message.get("chat"), dict):
                key = (_int(message["chat"].get("id"), 0), _int(message.get("message_id"), 0))
                self.handed.setdefault(key, now)

    def _deliverable(self, offset: int) -> list[dict[str, Any]]:
        allowed = self.allowed_updates
        if allowed:
            self._updates = [u for u in self._updates
                             if not (set(u) - {"update_id"}) or set(u) & set(allowed)]
        return [json.loads(json.dumps(u)) for u in self._updates
                if offset <= 0 or _update_id(u) >= offset]

    def _m_setwebhook(self, params: dict[str, Any]) -> Any:
        with self._lock:
            self.webhook = str(params.get("url") or "") or None
            self.webhook_secret = params.get("secret_token")
            if params.get("drop_pending_updates"):
                self._updates.clear()
            self._poll_generation += 1
        self._wake()
        return True

    def _m_deletewebhook(self, params: dict[str, Any]) -> Any:
        with self._lock:
            self.webhook = self.webhook_secret = None
            if params.get("drop_pending_updates"):
                self._updates.clear()
        return True

    def _m_getwebhookinfo(self, params: dict[str, Any]) -> Any:
        with self._lock:
            return {"url": self.webhook or "", "has_custom_certificate": False,
                    "pending_update_count": len(self._updates)}

    def _text_and_entities(self, text: Any, parse_mode: Any, entities: Any, *,
                           limit: int, what: str) -> tuple[str, list[dict[str, Any]]]:
        text = "" if text is None else str(text)
        if isinstance(parse_mode, str) and parse_mode.lower() == "html":
            plain, parsed = parse_html(text)
        else:
            plain, parsed = text, (entities if isinstance(entities, list) else [])
        if len(plain) > limit:
            raise bad_request(f"{what} is too long")
        return plain, parsed

    def _check_markup(self, markup: Any) -> None:
        if markup is None:
            return
        if not isinstance(markup, dict):
            raise bad_request("can't parse reply keyboard markup JSON object")
        for row in markup.get("inline_keyboard", []):
            for button in row:
                data = button.get("callback_data")
                if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
                    raise bad_request("BUTTON_DATA_INVALID")
                if not button.get("text"):
                    raise bad_request("text buttons are unallowed in the inline keyboard")

    def _chat_id(self, params: dict[str, Any]) -> int:
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int):
            raise bad_request("chat not found")
        return chat_id

    def _new_bot_message(self, params: dict[str, Any], chat_id: int,
                         content: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
        reply = params.get("reply_parameters")
        reply_to = reply.get("message_id") if isinstance(reply, dict) else None
        if reply_to is None and isinstance(params.get("reply_to_message_id"), int):
            reply_to = params["reply_to_message_id"]
        allow_missing = (isinstance(reply, dict) and reply.get("allow_sending_without_reply")) \
            or params.get("allow_sending_without_reply")
        replied = self._find_message(chat_id, reply_to) if reply_to is not None else None
        if reply_to is not None and replied is None and not allow_missing:
            raise bad_request("message to be replied not found")
        markup = params.get("reply_markup")
        self._check_markup(markup)
        message: dict[str, Any] = {
            "message_id": self._new_message_id(chat_id), "from": self._bot_user(),
            "chat": self._chat(chat_id), "date": int(time.time()), **content,
        }
        if replied is not None:
            message["reply_to_message"] = _without_reply(replied)
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        self._store_message(message)
        record = json.loads(json.dumps(message))
        record["parse_mode"] = params.get("parse_mode")
        record["reply_markup"] = markup
        if reply_to is not None:
            record["reply_to_message_id"] = reply_to
        return record, reply_to

    def _m_sendmessage(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        text, entities = self._text_and_entities(
            params.get("text"), params.get("parse_mode"), params.get("entities"),
            limit=MAX_TEXT, what="message")
        if not text.strip():
            raise bad_request("message text is empty")
        content: dict[str, Any] = {"text": text}
        if entities:
            content["entities"] = entities
        content["raw_text"] = params.get("text")
        with self._lock:  # in the chat and in `sent` at once: a test never sees one alone
            record, _ = self._new_bot_message(params, chat_id, content)
            self.sent.append(record)
        return _public(record)

    def _send_document(self, params: dict[str, Any], files: dict[str, bytes],
                       file_names: dict[str, str]) -> Any:
        chat_id = self._chat_id(params)
        caption, entities = self._text_and_entities(
            params.get("caption"), params.get("parse_mode"), params.get("caption_entities"),
            limit=MAX_CAPTION, what="message caption")
        document = params.get("document")
        if "document" in files:
            content, file_name = files["document"], file_names.get("document") or "document"
        elif isinstance(document, str) and document.startswith("attach://") \
                and document[len("attach://"):] in files:
            attach = document[len("attach://"):]
            content, file_name = files[attach], file_names.get(attach) or "document"
        elif isinstance(document, str) and document in self._files:
            content, path = self._files[document]
            file_name = path.rsplit("/", 1)[-1]
        else:
            raise bad_request("there is no document in the request")
        file_id = f"document-{next(self._ids)}"
        self.add_file(file_id, content, f"documents/{file_name}")
        doc = {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_name": file_name,
               "mime_type": "application/octet-stream", "file_size": len(content)}
        message_content: dict[str, Any] = {"document": doc}
        if caption:
            message_content["caption"] = caption
            if entities:
                message_content["caption_entities"] = entities
        message_content["raw_caption"] = params.get("caption")
        with self._lock:  # in the chat and in `sent` at once
            record, _ = self._new_bot_message(params, chat_id, message_content)
            self.sent.append(record)
        return _public(record)

    def _editable(self, params: dict[str, Any]) -> dict[str, Any]:
        if params.get("inline_message_id"):
            raise bad_request("inline messages are not supported by the fake")
        chat_id = self._chat_id(params)
        message = self._find_message(chat_id, _int(params.get("message_id"), 0))
        if message is None:
            raise bad_request("message to edit not found")
        if message.get("from", {}).get("id") != self.bot_id:
            raise bad_request("message can't be edited")
        return message

    def _m_editmessagetext(self, params: dict[str, Any]) -> Any:
        message = self._editable(params)
        text, entities = self._text_and_entities(
            params.get("text"), params.get("parse_mode"), params.get("entities"),
            limit=MAX_TEXT, what="message")
        if not text.strip():
            raise bad_request("message text is empty")
        if "text" not in message:
            raise bad_request("there is no text in the message to edit")
        markup = params.get("reply_markup")
        self._check_markup(markup)
        new_markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        if (text, entities or None, new_markup) == (
            message["text"], message.get("entities"), message.get("reply_markup")
        ):
            raise bad_request("message is not modified: specified new message content and reply "
                              "markup are exactly the same as a current content and reply markup "
                              "of the message")
        with self._lock:
            message["text"] = text
            message.pop("entities", None)
            if entities:
                message["entities"] = entities
            message.pop("reply_markup", None)
            if new_markup:
                message["reply_markup"] = new_markup
            message["edit_date"] = int(time.time())
            message["raw_text"] = params.get("text")
            return _public(message)

    def _m_editmessagereplymarkup(self, params: dict[str, Any]) -> Any:
        message = self._editable(params)
        markup = params.get("reply_markup")
        self._check_markup(markup)
        new_markup = markup if isinstance(markup, dict) and markup.get("inline_keyboard") else None
        if new_markup == message.get("reply_markup"):
            raise bad_request("message is not modified: specified new message content and reply "
                              "markup are exactly the same as a current content and reply markup "
                              "of the message")
        with self._lock:
            message.pop("reply_markup", None)
            if new_markup:
                message["reply_markup"] = new_markup
            message["edit_date"] = int(time.time())
            return _public(message)

    def _m_deletemessage(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        with self._lock:
            if self._messages.get(chat_id, {}).pop(_int(params.get("message_id"), 0), None) is None:
                raise bad_request("message to delete not found")
        return True

    def _m_sendmessagedraft(self, params: dict[str, Any]) -> Any:
        chat_id = self._chat_id(params)
        if self._chat(chat_id)["type"] != "private":
            raise bad_request("TEXTDRAFT_PEER_INVALID: drafts can be sent to private chats only")
        if not _int(params.get("draft_id"), 0):
            raise bad_request("draft_id must be non-zero")
        self._text_and_entities(params.get("text"), params.get("parse_mode"),
                                params.get("entities"), limit=MAX_TEXT, what="message")
        return True

    def _m_sendchataction(self, params: dict[str, Any]) -> Any:
        self._chat_id(params)
        return True

    @staticmethod
    def _scope_key(params: dict[str, Any]) -> str:
        scope = params.get("scope")
        if not isinstance(scope, dict) or scope.get("type", "default") == "default":
            return "default"
        return json.dumps(scope, sort_keys=True)

    def _m_setmycommands(self, params: dict[str, Any]) -> Any:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise bad_request("can't parse commands JSON object")
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        with self._lock:
            self.commands[self._scope_key(params)] = commands
        return True

    def _m_deletemycommands(self, params: dict[str, Any]) -> Any:
        with self._lock:
            self.commands.pop(self._scope_key(params), None)
        return True

    def _m_getmycommands(self, params: dict[str, Any]) -> Any:
        with self._lock:
            return self.commands.get(self._scope_key(params), [])

    def _m_answercallbackquery(self, params: dict[str, Any]) -> Any:
        with self._lock:
            query_id = str(params.get("callback_query_id"))
            if query_id not in self._callback_ids:
                raise bad_request("query is too old and response timeout expired or query ID is "
                                  "invalid")
            self._callback_ids.discard(query_id)
        return True

    def _m_getfile(self, params: dict[str, Any]) -> Any:
        file_id = str(params.get("file_id"))
        with self._lock:
            found = self._files.get(file_id)
        if found is None:
            raise bad_request("invalid file_id")
        content, path = found
        return {"file_id": file_id, "file_unique_id": f"u{file_id}", "file_size": len(content),
                "file_path": path}

    def _m_logout(self, params: dict[str, Any]) -> Any:
        return True

    def _m_close(self, params: dict[str, Any]) -> Any:
        return True


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _update_id(update: dict[str, Any]) -> int:
    return _int(update.get("update_id"), 0)


def _without_reply(message: dict[str, Any]) -> dict[str, Any]:
    copy = _public(message)
    copy.pop("reply_to_message", None)
    return copy


def _public(message: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored message as the Bot API returns it (no fake-only keys)."""
    copy = json.loads(json.dumps(message))
    for key in ("raw_text", "raw_caption", "parse_mode", "reply_to_message_id"):
        copy.pop(key, None)
    if not isinstance(copy.get("reply_markup"), dict) or "inline_keyboard" not in copy["reply_markup"]:
        copy.pop("reply_markup", None)
    return copy


# ---------------------------------------------------------------------- fixtures
telegram_server_session, telegram_server = loopback_fixtures(FakeTelegram, "telegram_server")
