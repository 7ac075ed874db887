"""Telegram updates as Axi's `Inbound` values. Pure: no network, no database.

Identity is the numeric user id (`from.id`), never a name or a username. The external id
is the chat id and message id (a callback query's own id for a button), so a redelivered
update is the same message. What Axi cannot answer (channel posts, updates without a
sender, groups not allowed, other bots) becomes `Skipped` with the reason, for one log line.

Groups: only those allowed by id (AXI_TELEGRAM_GROUPS), and there only messages that
mention the bot or reply to one of its messages. The sender is still the person (their
user id); the group is the message's `room`: the reply goes there, and Axi answers there
as to the public (bot.policy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from telegram import Message, Update

from bot.inbound import Attachment, ButtonPressed, Edited, Inbound

CHANNEL = "telegram"


@dataclass(frozen=True)
class Skipped:
    update_id: int
    reason: str


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


def _content(message: Message) -> tuple[str, tuple[Attachment, ...]]:
    """The text Axi reads and the files that came with it."""
    text = message.text or message.caption or ""
    files: list[Attachment] = []
    if message.photo:
        biggest = message.photo[-1]
        files.append(Attachment("photo.jpg", "image/jpeg", biggest.file_size or 0,
                                ref=biggest.file_id))
    if message.document is not None:
        doc = message.document
        files.append(Attachment(doc.file_name or "document", doc.mime_type or
                                "application/octet-stream", doc.file_size or 0,
                                ref=doc.file_id))
    if message.voice is not None:
        files.append(Attachment("message-vocal.ogg", message.voice.mime_type or "audio/ogg",
                                message.voice.file_size or 0, ref=message.voice.file_id))
    if message.audio is not None:
        files.append(Attachment(message.audio.file_name or "audio", message.audio.mime_type
                                or "audio/mpeg", message.audio.file_size or 0,
                                ref=message.audio.file_id))
    if message.video is not None:
        files.append(Attachment(message.video.file_name or "video.mp4", message.video.mime_type
                                or "video/mp4", message.video.file_size or 0,
                                ref=message.video.file_id))
    if message.location is not None:
        loc = message.location
        text = (text + "\n" if text else "") + (
            f"[Position partagée : {loc.latitude:.5f}, {loc.longitude:.5f}]")
    if message.contact is not None:
        c = message.contact
        who = " ".join(x for x in (c.first_name, c.last_name) if x)
        text = (text + "\n" if text else "") + f"[Contact partagé : {who}, {c.phone_number}]"
    return text, tuple(files)


def _forwarded_from(message: Message) -> str | None:
    origin = getattr(message, "forward_origin", None)
    if origin is None:
        return None
    for attr in ("sender_user", "chat"):
        value = getattr(origin, attr, None)
        if value is not None:
            return _display_name(value) or getattr(value, "title", None) or "quelqu'un"
    name = getattr(origin, "sender_user_name", None)
    return name or "quelqu'un"


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
    """One update as an Inbound, or why it is skipped."""
    if update.callback_query is not None:
        query = update.callback_query
        if not query.data:
            return Skipped(update.update_id, "button without data")
        anchor = query.message if isinstance(query.message, Message) else None
        return Inbound(channel=CHANNEL, sender=str(query.from_user.id), verified=True, text="",
                       external_id=f"bouton:{query.id}", received_at=datetime.now(UTC),
                       thread_ref=str(anchor.message_id) if anchor is not None else None,
                       event=ButtonPressed(query.data[:200]),
                       display_name=_display_name(query.from_user))
    message = update.message or update.edited_message
    if message is None:
        return Skipped(update.update_id, "no message in this update (type not handled)")
    user = message.from_user
    if user is None:
        return Skipped(update.update_id, "message without a sender")
    if user.is_bot:
        return Skipped(update.update_id, "message from a bot")
    chat = message.chat
    room = None
    if chat.type != "private":
        if chat.id not in groups:
            return Skipped(update.update_id, f"group {chat.id} not allowed (AXI_TELEGRAM_GROUPS)")
        if not addressed_to_bot(message, bot_id, bot_username):
            return Skipped(update.update_id, "group message not addressed to Axi")
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
        return Skipped(update.update_id, "message with nothing Axi can read (sticker, poll…)")
    return Inbound(channel=CHANNEL, sender=str(user.id), verified=True, text=text,
                   external_id=external, received_at=_when(message), attachments=files,
                   thread_ref=str(message.message_id), display_name=_display_name(user),
                   forwarded_from=_forwarded_from(message), room=room)
