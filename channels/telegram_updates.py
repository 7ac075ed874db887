"""Telegram updates as Axi's `Inbound` values. Pure: no network, no database.

Identity is the numeric user id (`from.id`), never a name or a username. The external id
is the chat id and message id (a callback query's own id for a button), so a redelivered
update is the same message. What Axi cannot answer (channel posts, updates without a
sender, groups not allowed, other bots) becomes `Skipped` with the reason, for one log line.

Telegram's JSON is read one update at a time (`read_update`): PTB checks no type, so an
update it cannot read (or reads into values of the wrong type: a text that is a number, a
button without its presser) is skipped with its reason, never an exception, and the
offset moves past every update whose id is a number (`next_offset`), never from one
whose id is not: one bad update never blocks the ones behind it.

Groups: only those allowed by id (AXI_TELEGRAM_GROUPS), and there only messages that
mention the bot or reply to one of its messages. The sender is still the person (their
user id); the group is the message's `room`: the reply goes there, and Axi answers there
as to the public (bot.policy).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from telegram import Bot, Message, Update

from bot.inbound import Attachment, ButtonPressed, Edited, Inbound

CHANNEL = "telegram"


MAX_UPDATE_ID = 2**62
"""Telegram's update ids are positive 32-bit numbers; beyond this one is no update id."""


@dataclass(frozen=True)
class Skipped:
    update_id: int | None
    """None when the update has no id that is a number (the offset never moves on it)."""
    reason: str


def update_id_of(value: object) -> int | None:
    """An update id the offset may move past: a whole number, not a bool, in range."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < MAX_UPDATE_ID:
        return value
    return None


STALE_OFFSET_S = 6 * 24 * 3600.0
"""After a week without updates Telegram may restart update ids lower than our stored
offset: past this age the first poll goes without an offset (the dedupe key keeps it safe)."""


def cursor_value(offset: int, now: float) -> str:
    """The stored offset, with when it was stored (`parse_cursor` reads both)."""
    return f"{offset} {int(now)}"


def parse_cursor(value: str | None, now: float) -> int | None:
    """The stored offset, or None when there is none or it is too old to trust."""
    if not value:
        return None
    parts = value.split()
    try:
        offset = int(parts[0])
        stamp = float(parts[1]) if len(parts) > 1 else now
    except ValueError:
        return None
    return None if now - stamp > STALE_OFFSET_S else offset


def next_offset(items: Sequence[Update | Skipped]) -> int | None:
    """The offset that confirms a batch: past its highest id that is a number (None when
    no update of it has one)."""
    ids = [i for i in (update_id_of(item.update_id) for item in items) if i is not None]
    return max(ids) + 1 if ids else None


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def read_update(data: Any, bot: Bot | None) -> Update | Skipped:
    """One update of Telegram's JSON, read by PTB; what it cannot read is skipped."""
    if not isinstance(data, dict):
        return Skipped(None, f"not a JSON object but a {type(data).__name__}")
    try:
        update = Update.de_json(data, bot)
    except Exception as exc:  # PTB checks no type: any exception, from any field
        return Skipped(update_id_of(data.get("update_id")), f"PTB cannot read it ({_why(exc)})")
    if update is None:
        return Skipped(None, "empty update")
    return update


def _when(message: Message | None) -> datetime:
    date = message.date if message is not None else None
    if date is None:
        return datetime.now(UTC)
    return date if date.tzinfo is not None else date.replace(tzinfo=UTC)


def _display_name(user: object) -> str | None:
    first = getattr(user, "first_name", "") or ""
    last = getattr(user, "last_name", "") or ""
    name = f"{first} {last}".strip()
    username = getattr(user, "username", None)
    if username:
        name = f"{name} (@{username})".strip()
    return name or None


class _Unreadable(ValueError):
    """A field PTB read but Axi cannot (the wrong type): the update is skipped, why said."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _string(value: object, default: str) -> str:
    return value if isinstance(value, str) and value else default


def _file(item: Any, name: str, default_type: str) -> Attachment:
    """A file as Axi keeps it; a field of the wrong type is its default, never a crash."""
    size = item.file_size if _is_int(item.file_size) and item.file_size > 0 else 0
    ref = item.file_id if isinstance(item.file_id, str) and item.file_id else None
    return Attachment(name, _string(getattr(item, "mime_type", None), default_type), size,
                      ref=ref)


def _content(message: Message) -> tuple[str, tuple[Attachment, ...]]:
    """The text Axi reads and the files that came with it."""
    text = message.text or message.caption or ""
    files: list[Attachment] = []
    if message.photo:
        files.append(_file(message.photo[-1], "photo.jpg", "image/jpeg"))
    if message.document is not None:
        doc = message.document
        files.append(_file(doc, _string(doc.file_name, "document"),
                           "application/octet-stream"))
    if message.voice is not None:
        files.append(_file(message.voice, "message-vocal.ogg", "audio/ogg"))
    if message.audio is not None:
        files.append(_file(message.audio, _string(message.audio.file_name, "audio"),
                           "audio/mpeg"))
    if message.video is not None:
        files.append(_file(message.video, _string(message.video.file_name, "video.mp4"),
                           "video/mp4"))
    if message.location is not None:
        loc = message.location
        if not all(isinstance(v, int | float) and not isinstance(v, bool)
                   for v in (loc.latitude, loc.longitude)):
            raise _Unreadable("a location that is not two numbers")
        text = (text + "\n" if text else "") + (
            f"[Position partagée : {loc.latitude:.5f}, {loc.longitude:.5f}]")
    if message.contact is not None:
        c = message.contact
        who = " ".join(x for x in (c.first_name, c.last_name) if isinstance(x, str) and x)
        text = (text + "\n" if text else "") + (
            f"[Contact partagé : {who}, {_string(c.phone_number, '?')}]")
    return text, tuple(files)


def _forwarded_from(message: Message) -> str | None:
    origin = getattr(message, "forward_origin", None)
    if origin is None:
        return None
    for attr in ("sender_user", "chat"):
        value = getattr(origin, attr, None)
        if value is not None:
            return _display_name(value) or _string(getattr(value, "title", None),
                                                   "quelqu'un")
    return _string(getattr(origin, "sender_user_name", None), "quelqu'un")


def _mention(bot_username: str) -> re.Pattern[str]:
    """'@axi_bot', whole (not '@axi_botfake'), any case."""
    return re.compile(rf"@{re.escape(bot_username)}(?!\w)", re.IGNORECASE)


def addressed_to_bot(message: Message, bot_id: int, bot_username: str) -> bool:
    """In a group: the bot is mentioned, or the message replies to one of the bot's."""
    reply = message.reply_to_message
    if reply is not None and reply.from_user is not None and reply.from_user.id == bot_id:
        return True
    text = message.text or message.caption or ""
    return bool(bot_username) and _mention(bot_username).search(text) is not None


def without_mention(text: str, bot_username: str) -> str:
    """'@axi_bot quel prix ?' → 'quel prix ?': the mention only says who is asked."""
    if not bot_username:
        return text
    cleaned = _mention(bot_username).sub(" ", text)
    return re.sub(r"[ \t]{2,}", " ", cleaned).strip() if cleaned != text else text


def to_inbound(update: Update, *, bot_id: int, bot_username: str,
               groups: frozenset[int] = frozenset()) -> Inbound | Skipped:
    """One update as an Inbound, or why it is skipped. Never raises: PTB checks no type,
    so whatever it read of Telegram's JSON, a field Axi cannot read skips the update."""
    update_id = update_id_of(update.update_id)
    if update_id is None:
        return Skipped(None, f"update id {update.update_id!r:.40} is not a number")
    try:
        return _convert(update, update_id, bot_id=bot_id, bot_username=bot_username,
                        groups=groups)
    except _Unreadable as exc:
        return Skipped(update_id, str(exc))
    except Exception as exc:  # a value of a type no check above foresaw
        return Skipped(update_id, f"unreadable update ({_why(exc)})")


def _convert(update: Update, update_id: int, *, bot_id: int, bot_username: str,
             groups: frozenset[int]) -> Inbound | Skipped:
    if update.callback_query is not None:
        query = update.callback_query
        data = query.data
        if not isinstance(data, str) or not data.replace("\x00", "").strip():
            return Skipped(update_id, "button without data")
        presser = query.from_user
        if presser is None or not _is_int(presser.id):
            return Skipped(update_id, "button without the numeric id of who pressed it")
        if not isinstance(query.id, str) or not query.id.strip():
            raise _Unreadable("button without an id")
        anchor = query.message if isinstance(query.message, Message) else None
        return Inbound(channel=CHANNEL, sender=str(presser.id), verified=True, text="",
                       external_id=f"bouton:{query.id}", received_at=datetime.now(UTC),
                       thread_ref=str(anchor.message_id) if anchor is not None else None,
                       event=ButtonPressed(data[:200]),
                       display_name=_display_name(presser))
    message = update.message or update.edited_message
    if message is None:
        return Skipped(update_id, "no message in this update (type not handled)")
    user = message.from_user
    if user is None:
        return Skipped(update_id, "message without a sender")
    if user.is_bot:
        return Skipped(update_id, "message from a bot")
    chat = message.chat
    if not (_is_int(user.id) and _is_int(chat.id) and _is_int(message.message_id)):
        raise _Unreadable("a sender, chat or message id that is not a number")
    if not all(v is None or isinstance(v, str) for v in (message.text, message.caption)):
        raise _Unreadable("a text that is not a string")
    room = None
    if chat.type != "private":
        if chat.id not in groups:
            return Skipped(update_id, f"group {chat.id} not allowed (AXI_TELEGRAM_GROUPS)")
        if not addressed_to_bot(message, bot_id, bot_username):
            return Skipped(update_id, "group message not addressed to Axi")
        room = str(chat.id)
    text, files = _content(message)
    if room is not None:
        text = without_mention(text, bot_username)
    edited = update.edited_message is not None
    external = f"{chat.id}:{message.message_id}"
    if edited:
        stamp = int((message.edit_date or datetime.now(UTC)).timestamp())
        return Inbound(channel=CHANNEL, sender=str(user.id), verified=True, text=text,
                       external_id=f"{external}:modifie:{stamp}", received_at=_when(message),
                       attachments=files, thread_ref=str(message.message_id),
                       event=Edited(external), display_name=_display_name(user), room=room)
    if not text.strip() and not files:
        return Skipped(update_id, "message with nothing Axi can read (sticker, poll…)")
    return Inbound(channel=CHANNEL, sender=str(user.id), verified=True, text=text,
                   external_id=external, received_at=_when(message), attachments=files,
                   thread_ref=str(message.message_id), display_name=_display_name(user),
                   forwarded_from=_forwarded_from(message), room=room)
