"""The loopback Bot API behaves like Telegram as the real python-telegram-bot uses it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from telegram import Bot, BotCommand, BotCommandScopeChat, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Conflict, InvalidToken, NetworkError, RetryAfter, TimedOut

from tests.fakes.telegram_server import FakeTelegram, parse_html

LUDO = 1001


@pytest.fixture
async def bot(telegram_server: FakeTelegram) -> AsyncIterator[Bot]:
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url,
                   base_file_url=telegram_server.base_file_url) as bot:
        yield bot


async def test_get_me(bot: Bot, telegram_server: FakeTelegram) -> None:
    me = await bot.get_me()
    assert (me.id, me.username, me.is_bot) == (999, "axi_test_bot", True)
    assert [c.method for c in telegram_server.calls] == ["getMe", "getMe"]  # initialize + ours


async def test_updates_offsets_confirm_and_limit(bot: Bot, telegram_server: FakeTelegram) -> None:
    telegram_server.next_update_id = 500
    first = telegram_server.message(LUDO, "un")
    telegram_server.message(LUDO, "deux", username="ludo")
    telegram_server.message(LUDO, "/start@axi_test_bot")

    updates = await bot.get_updates(timeout=0)
    assert [u.update_id for u in updates] == [500, 501, 502]
    assert first["update_id"] == 500
    assert updates[0].message is not None and updates[0].message.text == "un"
    assert updates[0].effective_user is not None and updates[0].effective_user.id == LUDO
    assert updates[0].effective_chat is not None and updates[0].effective_chat.type == "private"
    command = updates[2].message
    assert command is not None and command.entities[0].type == "bot_command"
    assert command.entities[0].length == len("/start@axi_test_bot")

    again = await bot.get_updates(timeout=0)  # nothing confirmed: the same again
    assert [u.update_id for u in again] == [500, 501, 502]
    limited = await bot.get_updates(offset=501, limit=1, timeout=0)  # confirms 500
    assert [u.update_id for u in limited] == [501]
    assert [u.update_id for u in await bot.get_updates(timeout=0)] == [501, 502]
    assert await bot.get_updates(offset=503, timeout=0) == ()
    assert telegram_server.pending_updates == []
    params = telegram_server.calls_to("getUpdates")[-1].params
    assert params == {"offset": 503, "timeout": 0}


async def test_long_poll_returns_when_a_message_is_queued(
    bot: Bot, telegram_server: FakeTelegram,
) -> None:
    started = time.monotonic()
    assert await bot.get_updates(timeout=timedelta(seconds=0.2)) == ()  # waited the poll's timeout, no more
    assert 0.15 < time.monotonic() - started < 1.0

    timer = threading.Timer(0.1, telegram_server.message, args=(LUDO, "réveil"))
    timer.start()
    started = time.monotonic()
    updates = await bot.get_updates(timeout=5)
    timer.join()
    assert time.monotonic() - started < 1.0
    assert [u.message.text for u in updates if u.message] == ["réveil"]


async def test_second_poller_ends_the_first_with_conflict(
    bot: Bot, telegram_server: FakeTelegram,
) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=3))
    await asyncio.sleep(0.1)
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url) as other:
        second = asyncio.create_task(other.get_updates(timeout=timedelta(seconds=0.2)))
        with pytest.raises(Conflict, match=r"(?i)terminated by other getUpdates"):
            await first
        assert await second == ()


async def test_slow_get_updates_times_out(bot: Bot, telegram_server: FakeTelegram) -> None:
    telegram_server.get_updates_delay_s = 0.5
    with pytest.raises(TimedOut):
        await bot.get_updates(timeout=0, read_timeout=0.1)


async def test_send_message_returns_a_message(bot: Bot, telegram_server: FakeTelegram) -> None:
    telegram_server.message(LUDO, "bonjour")  # message 1 in the chat
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Oui", callback_data="c:1:oui")]])
    sent = await bot.send_message(LUDO, "<b>Salut</b> &lt;Ludo&gt; é", parse_mode=ParseMode.HTML,
                                  reply_to_message_id=1, reply_markup=markup)
    assert sent.message_id == 2 and sent.chat_id == LUDO
    assert sent.text == "Salut <Ludo> é"
    assert [(e.type, e.offset, e.length) for e in sent.entities] == [("bold", 0, 5)]
    assert sent.reply_to_message is not None and sent.reply_to_message.text == "bonjour"
    assert sent.reply_markup == markup
    assert sent.from_user is not None and sent.from_user.id == 999

    call = telegram_server.calls_to("sendMessage")[0]
    assert call.params["chat_id"] == LUDO
    assert call.params["reply_parameters"] == {"message_id": 1}  # PTB's shape
    assert call.params["reply_markup"] == {
        "inline_keyboard": [[{"text": "Oui", "callback_data": "c:1:oui"}]]}
    record = telegram_server.sent[0]
    assert record["raw_text"] == "<b>Salut</b> &lt;Ludo&gt; é"
    assert record["parse_mode"] == "HTML" and record["reply_to_message_id"] == 1
    assert [m["message_id"] for m in telegram_server.chat_messages(LUDO)] == [2]

    with pytest.raises(BadRequest, match=r"(?i)message to be replied not found"):
        await bot.send_message(LUDO, "x", reply_to_message_id=77)
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(LUDO, "<b> </b>", parse_mode=ParseMode.HTML)


@pytest.mark.parametrize("text", [
    "<b>gras", "<b><i>x</b></i>", "a < b", "a > b", "Tom & Jerry", "<foo>x</foo>",
    "<span>x</span>", "x</b>",
])
async def test_html_parse_errors_are_bad_requests(
    bot: Bot, telegram_server: FakeTelegram, text: str,
) -> None:
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message(LUDO, text, parse_mode=ParseMode.HTML)
    assert telegram_server.sent == []
    assert telegram_server.calls_to("sendMessage")[0].status == 400


def test_html_parser_accepts_telegram_tags() -> None:
    text, entities = parse_html(
        '<a href="https://x.fr/?a=1&amp;b=2">lien</a> <pre><code class="language-py">x = 1</code>'
        "</pre> <tg-spoiler>s</tg-spoiler> <blockquote expandable>q</blockquote> &#128512;"
        "<s>b</s><u>u</u><em>e</em><code>c</code>"
    )
    assert text == "lien x = 1 s q 😀buec"
    assert entities[0] == {"type": "text_link", "offset": 0, "length": 4,
                           "url": "https://x.fr/?a=1&b=2"}
    assert {"type": "pre", "offset": 5, "length": 5, "language": "py"} in entities
    assert {"type": "custom_emoji"} not in entities
    assert [e["type"] for e in entities] == [
        "text_link", "pre", "spoiler", "expandable_blockquote", "strikethrough", "underline",
        "italic", "code"]
    assert entities[-1]["offset"] == len("lien x = 1 s q ") + 2 + len("bue")  # 😀: 2 UTF-16 units


async def test_message_too_long(bot: Bot, telegram_server: FakeTelegram) -> None:
    ok = "<b>" + "a" * 4096 + "</b>"  # 4096 characters once the tags are parsed
    assert (await bot.send_message(LUDO, ok, parse_mode=ParseMode.HTML)).text == "a" * 4096
    with pytest.raises(BadRequest, match=r"(?i)message is too long"):
        await bot.send_message(LUDO, "a" * 4097)


async def test_edit_message_text(bot: Bot, telegram_server: FakeTelegram) -> None:
    sent = await bot.send_message(LUDO, "brouillon")
    edited = await bot.edit_message_text("final <i>ok</i>", chat_id=LUDO,
                                         message_id=sent.message_id, parse_mode=ParseMode.HTML)
    assert not isinstance(edited, bool) and edited.text == "final ok"
    assert edited.edit_date is not None
    with pytest.raises(BadRequest, match=r"(?i)message is not modified"):
        await bot.edit_message_text("final <i>ok</i>", chat_id=LUDO,
                                    message_id=sent.message_id, parse_mode=ParseMode.HTML)
    with pytest.raises(BadRequest, match=r"(?i)message to edit not found"):
        await bot.edit_message_text("x", chat_id=LUDO, message_id=999)
    current = telegram_server.chat_messages(LUDO)
    assert [m["text"] for m in current] == ["final ok"]
    assert telegram_server.sent[0]["text"] == "brouillon"  # what was sent, not the edit


async def test_drafts_actions_commands(bot: Bot, telegram_server: FakeTelegram) -> None:
    assert await bot.send_message_draft(LUDO, draft_id=7, text="Je réfléchis…") is True
    assert await bot.send_chat_action(LUDO, ChatAction.TYPING) is True
    assert [(c.params["draft_id"], c.params["text"]) for c in telegram_server.drafts] == [
        (7, "Je réfléchis…")]
    telegram_server.message(LUDO, "salut", chat_id=-100, chat_type="supergroup")
    with pytest.raises(BadRequest):
        await bot.send_message_draft(-100, draft_id=7, text="x")
    with pytest.raises(BadRequest, match=r"(?i)can't parse entities"):
        await bot.send_message_draft(LUDO, draft_id=7, text="<b>x", parse_mode=ParseMode.HTML)

    await bot.set_my_commands([BotCommand("start", "Commencer"), BotCommand("aide", "Aide")])
    await bot.set_my_commands([BotCommand("admin", "Admin")], scope=BotCommandScopeChat(LUDO))
    assert telegram_server.commands["default"] == [
        {"command": "start", "description": "Commencer"}, {"command": "aide", "description": "Aide"}]
    assert telegram_server.commands['{"chat_id": 1001, "type": "chat"}'] == [
        {"command": "admin", "description": "Admin"}]
    assert [c.command for c in await bot.get_my_commands()] == ["start", "aide"]
    assert await bot.delete_my_commands() is True
    assert "default" not in telegram_server.commands


async def test_retry_after(bot: Bot, telegram_server: FakeTelegram) -> None:
    telegram_server.fail("sendMessage", 429, retry_after=3)
    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(LUDO, "x")
    assert caught.value.retry_after in (3, timedelta(seconds=3))
    assert (await bot.send_message(LUDO, "x")).text == "x"  # only once
    assert [c.status for c in telegram_server.calls_to("sendMessage")] == [429, 200]


async def test_error_statuses(bot: Bot, telegram_server: FakeTelegram) -> None:
    telegram_server.fail("sendMessage", 502, times=2)
    for _ in range(2):
        with pytest.raises(NetworkError, match=r"(?i)Bad Gateway"):
            await bot.send_message(LUDO, "x")
    telegram_server.fail("sendMessage", 401)
    with pytest.raises(InvalidToken, match=r"(?i)Unauthorized"):
        await bot.send_message(LUDO, "x")
    telegram_server.fail("sendMessage", 400, description="Bad Request: chat not found")
    with pytest.raises(BadRequest, match=r"(?i)chat not found"):
        await bot.send_message(LUDO, "x")
    telegram_server.fail("getUpdates", 409)
    with pytest.raises(Conflict):
        await bot.get_updates(timeout=0)
    assert (await bot.send_message(LUDO, "enfin")).text == "enfin"


async def test_wrong_token_is_unauthorized(telegram_server: FakeTelegram) -> None:
    bot = Bot("654321:WRONG", base_url=telegram_server.base_url)
    with pytest.raises(InvalidToken):
        async with bot:
            pass
    assert telegram_server.calls[0].status == 401


async def test_dropped_connection_is_a_network_error(
    bot: Bot, telegram_server: FakeTelegram,
) -> None:
    telegram_server.drop("sendMessage")
    with pytest.raises(NetworkError) as caught:
        await bot.send_message(LUDO, "x")
    assert not isinstance(caught.value, TimedOut)
    assert telegram_server.calls_to("sendMessage")[0].status == 0
    assert telegram_server.sent == []
    assert (await bot.send_message(LUDO, "x")).text == "x"  # the next one goes through


async def test_webhook_conflicts_with_polling(bot: Bot, telegram_server: FakeTelegram) -> None:
    assert await bot.set_webhook("https://axi.example/tg", secret_token="s3cret") is True
    assert telegram_server.webhook == "https://axi.example/tg"
    assert telegram_server.webhook_secret == "s3cret"
    assert (await bot.get_webhook_info()).url == "https://axi.example/tg"
    with pytest.raises(Conflict, match=r"(?i)webhook is active"):
        await bot.get_updates(timeout=0)
    telegram_server.message(LUDO, "encore là")
    assert await bot.delete_webhook() is True
    assert telegram_server.webhook is None
    assert len(await bot.get_updates(timeout=0)) == 1
    assert await bot.delete_webhook(drop_pending_updates=True) is True
    assert await bot.get_updates(timeout=0) == ()


async def test_send_document_get_file_and_download(
    bot: Bot, telegram_server: FakeTelegram,
) -> None:
    content = b"%PDF-1.4\n" + bytes(range(256)) * 4
    message = await bot.send_document(LUDO, content, filename="digest.pdf",
                                      caption="<b>Veille</b> DPE", parse_mode=ParseMode.HTML)
    assert message.document is not None and message.document.file_name == "digest.pdf"
    assert message.caption == "Veille DPE"
    call = telegram_server.calls_to("sendDocument")[0]
    assert call.files == {"document": content}
    assert call.params["chat_id"] == LUDO and call.params["caption"] == "<b>Veille</b> DPE"
    assert telegram_server.sent[0]["document"]["file_size"] == len(content)

    downloaded = await (await bot.get_file(message.document.file_id)).download_as_bytearray()
    assert bytes(downloaded) == content

    update = telegram_server.message(LUDO, photo=True, caption="la maison")
    biggest = update["message"]["photo"][-1]["file_id"]
    photo = await (await bot.get_file(biggest)).download_as_bytearray()
    assert photo.startswith(b"\xff\xd8")
    telegram_server.add_file("voice-x", b"OggS", "voice/x.oga")
    file = await bot.get_file("voice-x")
    assert file.file_path == f"{telegram_server.base_file_url}{FakeTelegram.TOKEN}/voice/x.oga"
    with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
        await bot.get_file("nope")


async def test_non_text_updates_parse(bot: Bot, telegram_server: FakeTelegram) -> None:
    telegram_server.message(LUDO, document={"file_name": "mandat.pdf"})
    telegram_server.message(LUDO, voice=True)
    telegram_server.message(LUDO, location=(45.0, 0.9))
    telegram_server.message(LUDO, contact={"phone_number": "+33612345678"})
    telegram_server.message(LUDO, "transféré", forward_from={"id": 5, "first_name": "Julie"})
    telegram_server.message(42, "dans le groupe", chat_id=-100, chat_type="group", no_from=True)
    sent = telegram_server.message(LUDO, "réponse", reply_to=1)
    telegram_server.edited(LUDO, sent["message"]["message_id"], "réponse corrigée")
    telegram_server.raw_update({"poll_answer": {
        "poll_id": "1", "option_ids": [0], "option_persistent_ids": ["a"],
        "user": {"id": LUDO, "is_bot": False, "first_name": "Ludo"}}})
    telegram_server.raw_update({"something_new": {"x": 1}})
    updates = await bot.get_updates(timeout=0)
    assert len(updates) == 10
    messages = [u.message for u in updates[:7]]
    assert all(m is not None for m in messages)
    assert messages[0] and messages[0].document and messages[0].document.file_name == "mandat.pdf"
    assert messages[1] and messages[1].voice and messages[1].voice.duration == 3
    assert messages[2] and messages[2].location and messages[2].location.latitude == 45.0
    assert messages[3] and messages[3].contact
    assert messages[3].contact.phone_number == "+33612345678"
    assert messages[4] and messages[4].forward_origin and messages[4].forward_origin.type == "user"
    assert messages[5] and messages[5].from_user is None and messages[5].chat.type == "group"
    assert messages[6] and messages[6].reply_to_message
    assert messages[6].reply_to_message.document is not None
    assert updates[7].edited_message and updates[7].edited_message.text == "réponse corrigée"
    assert updates[8].poll_answer is not None
    assert updates[9].api_kwargs == {"something_new": {"x": 1}}


async def test_callback_query_answered(bot: Bot, telegram_server: FakeTelegram) -> None:
    markup = InlineKeyboardMarkup([[InlineKeyboardButton("Oui", callback_data="oui")]])
    asked = await bot.send_message(LUDO, "Confirmer ?", reply_markup=markup)
    telegram_server.callback(LUDO, "oui")
    (update,) = await bot.get_updates(timeout=0)
    query = update.callback_query
    assert query is not None and query.data == "oui"
    assert query.message is not None and query.message.message_id == asked.message_id
    assert query.from_user.id == LUDO
    assert await query.answer("Noté") is True
    call = telegram_server.calls_to("answerCallbackQuery")[0]
    assert call.params == {"callback_query_id": query.id, "text": "Noté"}
    with pytest.raises(BadRequest, match=r"(?i)query is too old"):
        await query.answer()

    edited = await bot.edit_message_reply_markup(LUDO, asked.message_id, reply_markup=None)
    assert not isinstance(edited, bool) and edited.reply_markup is None
    assert "reply_markup" not in telegram_server.chat_messages(LUDO)[0]
    too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="x" * 65)]])
    with pytest.raises(BadRequest, match=r"(?i)BUTTON_DATA_INVALID"):
        await bot.send_message(LUDO, "x", reply_markup=too_long)


async def test_rate_limit(bot: Bot, telegram_server: FakeTelegram) -> None:
    await bot.send_message(LUDO, "un")
    await bot.send_message(LUDO + 1, "autre chat")  # another chat: its own budget
    assert telegram_server.rate_violations == 0
    await bot.send_message(LUDO, "trop tôt")  # not enforced: counted only
    assert telegram_server.rate_violations == 1 and telegram_server.rate_limited == 0

    telegram_server.rate_limit = True
    with pytest.raises(RetryAfter):
        await bot.send_message(LUDO, "trop tôt")
    with pytest.raises(RetryAfter):
        await bot.edit_message_text("trop tôt", chat_id=LUDO, message_id=1)
    assert telegram_server.rate_limited == 2
    assert await bot.send_message_draft(LUDO, draft_id=1, text="brouillon") is True  # not limited

    # 31 chats at once, each once: at most 30 get through in a second overall
    results = await asyncio.gather(
        *(bot.send_message(chat, "diffusion") for chat in range(2000, 2031)),
        return_exceptions=True)
    refused = [r for r in results if isinstance(r, RetryAfter)]
    assert refused and len(results) - len(refused) <= 30
    assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, RetryAfter)]
    assert telegram_server.rate_limited == 2 + len(refused)


async def test_reset_keeps_the_port(telegram_server: FakeTelegram) -> None:
    url = telegram_server.url
    telegram_server.message(LUDO, "x")
    telegram_server.fail("getMe", 500)
    telegram_server.reset()
    assert telegram_server.pending_updates == [] and telegram_server.url == url
    telegram_server.stop()
    telegram_server.start()
    assert telegram_server.url == url
    async with Bot(FakeTelegram.TOKEN, base_url=telegram_server.base_url) as bot:
        assert (await bot.get_me()).id == 999


async def test_ptb_application_polls_and_replies(telegram_server: FakeTelegram) -> None:
    """PTB's own Updater (deleteWebhook, long polls, the confirming poll at stop) against the fake."""
    from telegram import Update
    from telegram.ext import Application, ContextTypes, MessageHandler, filters

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(f"écho: {update.effective_message.text}")

    app = (Application.builder().token(FakeTelegram.TOKEN).base_url(telegram_server.base_url)
           .base_file_url(telegram_server.base_file_url).build())
    app.add_handler(MessageHandler(filters.TEXT, echo))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=timedelta(seconds=1))
        telegram_server.message(LUDO, "salut")
        deadline = time.monotonic() + 3
        while not telegram_server.sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await app.updater.stop()
        await app.stop()
        stopping = time.monotonic() - started
    assert [m["text"] for m in telegram_server.sent] == ["écho: salut"]
    assert telegram_server.pending_updates == []  # confirmed by the poll at stop
    assert telegram_server.calls_to("deleteWebhook")
    assert stopping < 2
