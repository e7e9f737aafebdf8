"""The local Telegram, driven by the real aiogram Bot over HTTP.

These tests pin down the Telegram behaviour our bot's error handling relies on (texts, status
codes, limits), so the sandbox cannot drift into accepting what production rejects. Time for
flood limits is moved by hand; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import html
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.default import DefaultBotProperties
from aiogram.exceptions import (
    ClientDecodeError,
    TelegramBadRequest,
    TelegramConflictError,
    TelegramForbiddenError,
    TelegramRetryAfter,
    TelegramUnauthorizedError,
)
from aiogram.filters import CommandStart
from aiogram.types import (
    BotCommand,
    BotCommandScopeAllPrivateChats,
    BufferedInputFile,
    CallbackQuery,
    InaccessibleMessage,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.telegram import CallbackAnswer, LocalTelegram, running_local_telegram
from sandbox.telegram_html import FormattedText, parse_html
from sandbox.terminal import render_text, run_terminal_chat

USER = 42


class ManualClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def tg() -> AsyncIterator[LocalTelegram]:
    async with running_local_telegram(rate_limits=False) as server:
        yield server


@pytest.fixture
async def bot(tg: LocalTelegram) -> AsyncIterator[Bot]:
    bot = tg.make_bot(default=DefaultBotProperties(parse_mode="HTML"))
    yield bot
    await bot.session.close()


@asynccontextmanager
async def polling(dp: Dispatcher, bot: Bot, tg: LocalTelegram) -> AsyncIterator[None]:
    """Run the dispatcher's long polling against the local server for the block's duration.

    Stopped with ``stop_polling``: cancelling the ``start_polling`` task would leave aiogram's
    inner per-bot polling tasks running.
    """
    task = asyncio.create_task(dp.start_polling(bot, handle_signals=False, close_bot_session=False))
    await tg.wait_for(lambda: tg.waiting_polls)  # listening, so stop_polling is valid
    try:
        yield
    finally:
        await dp.stop_polling()
        await task


def keyboard(*buttons: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[[InlineKeyboardButton(text=text, callback_data=data) for text, data in buttons]]
    )


def echo_dispatcher() -> Dispatcher:
    """A bot that echoes in bold with a button, and edits its message when the button is pressed."""
    dp = Dispatcher()

    @dp.message()
    async def echo(message: Message) -> None:
        await message.answer(f"echo: <b>{message.text}</b>", reply_markup=keyboard(("Again", "again")))

    @dp.callback_query()
    async def pressed(query: CallbackQuery) -> None:
        await query.answer("pressed")
        assert isinstance(query.message, Message)
        await query.message.edit_text("pressed <i>once</i>", reply_markup=keyboard(("Again", "again")))

    return dp


async def raw_call(tg: LocalTelegram, method: str, token: str | None = None, **data: Any) -> tuple[int, Any]:
    """POST a form to the server without aiogram, for calls aiogram cannot make."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{tg.url}/bot{token or tg.token}/{method}", data=data) as response,
    ):
        return response.status, await response.json()


# --------------------------------------------------------------------------- sending


async def test_send_message_returns_parsed_text_and_records_it(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    sent = await bot.send_message(USER, "<b>Key OK</b> &amp; <a href='https://example.com'>details</a>")

    assert sent.text == "Key OK & details"
    assert [(e.type, e.offset, e.length) for e in sent.entities or []] == [
        ("bold", 0, 6),
        ("text_link", 9, 7),
    ]
    stored = tg.last_bot_message(USER)
    assert stored is not None
    assert (stored.message_id, stored.text) == (sent.message_id, "Key OK & details")
    assert stored.html.startswith("<b>Key OK</b>")
    assert tg.requests[-1].method == "sendMessage"
    assert tg.requests[-1].status == 200


async def test_text_limit_counts_visible_characters_after_parsing(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    await bot.send_message(USER, "a" * 4096)
    await bot.send_message(USER, "<b>" + "a" * 4000 + "</b><i>" + "b" * 96 + "</i>")
    await bot.send_message(USER, "&lt;" * 4096)  # 16384 characters sent, 4096 visible
    await bot.send_message(USER, "a" * 4096 + "\n\n  ")  # trailing whitespace is trimmed first

    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "a" * 4097)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "<b>" + "a" * 4097 + "</b>")
    # UTF-16 code units: an emoji outside the BMP counts two, one in it (☀) counts one.
    await bot.send_message(USER, "🚀" * 2048)
    await bot.send_message(USER, "☀" * 4096)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "🚀" * 2048 + "a")
    assert len(tg.bot_messages(USER)) == 6


async def test_empty_text_is_refused(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    with pytest.raises(TelegramBadRequest, match="text must be non-empty"):
        await bot.send_message(USER, "<b> </b>")
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(USER, "")  # aiogram drops the empty field; Telegram sees none


@pytest.mark.parametrize(
    ("source", "detail"),
    [
        ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
        ("Key <foo>x</foo>", 'Unsupported start tag "foo" at byte offset 4'),
        ("limit 1 < 2", 'Unsupported start tag "" at byte offset 8'),
        ("<b>x</i>", 'Unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler" at byte offset 0'),
    ],
)
async def test_broken_html_cannot_be_parsed(tg: LocalTelegram, bot: Bot, source: str, detail: str) -> None:
    tg.add_user(USER)
    with pytest.raises(TelegramBadRequest) as caught:
        await bot.send_message(USER, source)
    assert caught.value.message == f"Bad Request: can't parse entities: {detail}"


async def test_html_accepts_what_telegram_accepts(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    sent = await bot.send_message(
        USER,
        "R&D &gt; ops &#128273; <span class='tg-spoiler'>s</span> <tg-spoiler>t</tg-spoiler> "
        '<pre><code class="language-python">x = 1</code></pre> <blockquote>q</blockquote>',
    )
    assert sent.text == "R&D > ops 🔑 s t x = 1 q"
    assert {e.type for e in sent.entities or []} == {"spoiler", "pre", "blockquote"}


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_escaped_text_parses_back_to_itself(text: str) -> None:
    """``html.escape`` (what our rendering uses) is always enough for Telegram's parser."""
    assert parse_html(html.escape(text)) == FormattedText(text, [])


@pytest.mark.parametrize(
    ("data", "accepted"),
    [("x" * 64, True), ("x" * 65, False), ("é" * 32, True), ("é" * 33, False)],
    ids=["64-ascii", "65-ascii", "64-bytes-of-2-byte-chars", "66-bytes-33-chars"],
)
async def test_callback_data_is_limited_to_64_bytes(
    tg: LocalTelegram, bot: Bot, data: str, accepted: bool
) -> None:
    tg.add_user(USER)
    send = bot.send_message(USER, "pick", reply_markup=keyboard(("Go", data)))
    if accepted:
        await send
        assert tg.bot_messages(USER)[0].buttons == [("Go", data)]
    else:
        with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
            await send


async def test_reply_markup_is_validated(tg: LocalTelegram) -> None:
    tg.add_user(USER)
    cases = {
        "{not json": "Bad Request: can't parse reply keyboard markup JSON object",
        '{"inline_keyboard": [[{"text": "", "callback_data": "x"}]]}': "Bad Request: BUTTON_TEXT_INVALID",
        '{"inline_keyboard": [[{"text": "t"}]]}': (
            "Bad Request: can't parse inline keyboard button: "
            "Text buttons are unallowed in the inline keyboard"
        ),
        '{"inline_keyboard": [{"text": "t"}]}': (
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
        ),
    }
    for markup, description in cases.items():
        status, body = await raw_call(tg, "sendMessage", chat_id=str(USER), text="x", reply_markup=markup)
        assert (status, body["description"]) == (400, description)


async def test_unknown_chat_and_parse_mode(tg: LocalTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(USER, "hello")
    tg.add_user(USER)
    with pytest.raises(TelegramBadRequest, match="HTML only"):
        await bot.send_message(USER, "*hi*", parse_mode="MarkdownV2")


async def test_send_document_keeps_name_and_bytes(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    sent = await bot.send_document(
        USER,
        BufferedInputFile(b"exchange,status\nbinance,ok\n", filename="keys.csv"),
        caption="<b>Export</b>",
    )
    assert sent.document is not None
    assert (sent.document.file_name, sent.caption) == ("keys.csv", "Export")
    stored = tg.last_bot_message(USER)
    assert stored is not None and stored.document is not None
    assert stored.document.content == b"exchange,status\nbinance,ok\n"


async def test_commands_are_stored_per_scope_and_language(tg: LocalTelegram, bot: Bot) -> None:
    await bot.set_my_commands([BotCommand(command="start", description="Start")])
    await bot.set_my_commands(
        [BotCommand(command="keys", description="Meine Schlüssel")],
        scope=BotCommandScopeAllPrivateChats(),
        language_code="de",
    )
    assert tg.commands[("default", "")] == [{"command": "start", "description": "Start"}]
    assert tg.commands[("all_private_chats", "de")][0]["command"] == "keys"
    got = await bot.get_my_commands(scope=BotCommandScopeAllPrivateChats(), language_code="de")
    assert [c.command for c in got] == ["keys"]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Add Key!", description="x")])
    await bot.delete_my_commands()
    assert ("default", "") not in tg.commands


async def test_chat_action_validates_action(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    assert await bot.send_chat_action(USER, "typing")
    with pytest.raises(TelegramBadRequest, match="wrong parameter action in request"):
        await bot.send_chat_action(USER, "dancing")


# --------------------------------------------------------------------------- failures


async def test_flood_limit_per_chat_and_recovery_after_retry_after() -> None:
    clock = ManualClock()
    async with running_local_telegram(clock=clock) as tg:
        tg.add_user(USER)
        flooding = tg.make_bot()
        for n in range(3):  # the burst
            await flooding.send_message(USER, f"alert {n}")
        with pytest.raises(TelegramRetryAfter) as caught:
            await flooding.send_message(USER, "alert 3")
        assert caught.value.retry_after == 1
        assert tg.errors[-1].status == 429
        assert tg.errors[-1].description == "Too Many Requests: retry after 1"

        clock.advance(caught.value.retry_after)
        await flooding.send_message(USER, "alert 3")
        assert len(tg.bot_messages(USER)) == 4
        await flooding.session.close()


async def test_flood_limit_per_bot_is_30_a_second() -> None:
    clock = ManualClock()
    async with running_local_telegram(clock=clock) as tg:
        bot = tg.make_bot()
        for user_id in range(1, 32):
            tg.add_user(user_id)
        for user_id in range(1, 31):
            await bot.send_message(user_id, "maintenance notice")
        with pytest.raises(TelegramRetryAfter):
            await bot.send_message(31, "maintenance notice")
        clock.advance(1)
        await bot.send_message(31, "maintenance notice")
        await bot.session.close()


async def test_flood_limit_per_group_is_20_a_minute() -> None:
    clock = ManualClock()
    async with running_local_telegram(clock=clock) as tg:
        tg.user_sends(USER, "/start", chat_type="supergroup", chat_id=-1001)
        bot = tg.make_bot()
        for _ in range(20):
            await bot.send_message(-1001, "status")
            clock.advance(1)
        with pytest.raises(TelegramRetryAfter) as caught:
            await bot.send_message(-1001, "status")
        assert caught.value.retry_after == 40  # the first of the 20 leaves the window at t=60
        await bot.session.close()


async def test_blocked_user_gets_forbidden_and_bot_is_told(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    tg.block_user(USER)
    with pytest.raises(TelegramForbiddenError) as caught:
        await bot.send_message(USER, "your key was revoked")
    assert caught.value.message == "Forbidden: bot was blocked by the user"
    member_updates = [u["my_chat_member"] for u in tg.pending_updates() if "my_chat_member" in u]
    assert member_updates[-1]["new_chat_member"]["status"] == "kicked"

    tg.unblock_user(USER)
    await bot.send_message(USER, "welcome back")


async def test_unknown_method_missing_fields_and_wrong_token(tg: LocalTelegram) -> None:
    tg.add_user(USER)
    assert await raw_call(tg, "sendCarrierPigeon") == (
        404,
        {"ok": False, "error_code": 404, "description": "Not Found: method not found"},
    )
    status, body = await raw_call(tg, "sendMessage", chat_id=str(USER))
    assert (status, body["description"]) == (400, "Bad Request: message text is empty")
    status, body = await raw_call(tg, "deleteMessage", chat_id=str(USER))
    assert (status, body["description"]) == (400, "Bad Request: message identifier is not specified")
    status, body = await raw_call(tg, "answerCallbackQuery")
    assert (status, body["description"]) == (400, 'Bad Request: parameter "callback_query_id" is required')
    status, body = await raw_call(tg, "SENDMESSAGE", chat_id=str(USER), text="method names ignore case")
    assert status == 200
    assert tg.requests[-1].method == "sendMessage"

    wrong = Bot("999:WRONG", session=tg.make_bot().session)
    with pytest.raises(TelegramUnauthorizedError):
        await wrong.get_me()
    await wrong.session.close()


async def test_parameters_the_current_bot_api_does_not_document_are_refused(tg: LocalTelegram) -> None:
    tg.add_user(USER)
    status, body = await raw_call(
        tg, "sendMessage", chat_id=str(USER), text="hi", disable_web_page_preview="true"
    )
    assert status == 400
    assert body["description"].startswith('Bad Request: parameter "disable_web_page_preview" is not')
    status, _ = await raw_call(
        tg, "sendMessage", chat_id=str(USER), text="hi", link_preview_options='{"is_disabled": true}'
    )
    assert status == 200


async def test_keysentry_bot_disables_link_previews_the_current_way(tg: LocalTelegram) -> None:
    from bot.app import build_bot
    from bot.settings import Settings

    tg.add_user(USER)
    bot = build_bot(Settings(_env_file=None, bot_token=tg.token, telegram_api_url=tg.url))
    try:
        await bot.send_message(USER, "see https://example.com")
    finally:
        await bot.session.close()
    sent = tg.requests[-1]
    assert sent.status == 200 and "disable_web_page_preview" not in sent.params
    assert '"is_disabled": true' in sent.params["link_preview_options"]


async def test_outage_answers_502_which_aiogram_cannot_decode(tg: LocalTelegram, bot: Bot) -> None:
    tg.set_down(True)
    with pytest.raises(ClientDecodeError):
        await bot.get_me()
    assert tg.requests[-1].status == 502
    tg.set_down(False)
    assert (await bot.get_me()).username == "keysentry_local_bot"


# --------------------------------------------------------------------------- updates and the user side


async def test_long_polling_delivers_a_message_to_a_handler(tg: LocalTelegram, bot: Bot) -> None:
    seen: list[Message] = []
    dp = Dispatcher()

    @dp.message(CommandStart())
    async def start(message: Message) -> None:
        seen.append(message)
        assert message.from_user is not None
        await message.answer(f"Hallo, <b>{message.from_user.first_name}</b>")

    async with polling(dp, bot, tg):
        tg.user_sends(USER, "/start", first_name="Bob", language_code="de")
        reply = await tg.wait_for_bot_message(USER)
        await tg.wait_for(lambda: not tg.pending_updates())  # confirmed by the next offset

    assert reply.text == "Hallo, Bob"
    assert seen[0].from_user is not None and seen[0].from_user.language_code == "de"
    assert seen[0].entities is not None and seen[0].entities[0].type == "bot_command"
    assert [m.message_id for m in tg.chat(USER)] == [1, 2]  # user and bot share the id sequence


async def test_get_updates_waits_then_wakes_confirms_and_filters(tg: LocalTelegram, bot: Bot) -> None:
    waiting = asyncio.create_task(bot.get_updates(timeout=30))
    await tg.wait_for(lambda: tg.waiting_polls == 1)
    assert not waiting.done()
    tg.user_sends(USER, "hello")
    updates = await waiting
    assert [u.message.text for u in updates if u.message] == ["hello"]

    assert await bot.get_updates(offset=updates[-1].update_id + 1) == []
    tg.user_sends(USER, "dropped: not an allowed type")
    assert await bot.get_updates(allowed_updates=["callback_query"]) == []
    assert tg.pending_updates() == []


async def test_second_poller_terminates_the_first(tg: LocalTelegram, bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=30))
    await tg.wait_for(lambda: tg.waiting_polls == 1)
    second = asyncio.create_task(bot.get_updates(timeout=30))
    with pytest.raises(TelegramConflictError, match="terminated by other getUpdates request"):
        await first
    tg.user_sends(USER, "hi")
    assert len(await second) == 1


async def test_group_channel_and_edited_updates(tg: LocalTelegram, bot: Bot) -> None:
    group = tg.user_sends(USER, "/status@keysentry_local_bot", chat_type="supergroup", chat_id=-1002)
    assert group["message"]["chat"]["type"] == "supergroup"
    assert group["message"]["entities"][0] == {"type": "bot_command", "offset": 0, "length": 27}
    post = tg.user_sends(USER, "channel news", chat_type="channel", chat_id=-1003)
    assert "sender_chat" in post["channel_post"] and "from" not in post["channel_post"]
    await bot.send_message(-1002, "ok")

    tg.user_sends(USER, "api key: abc")
    edited = tg.user_edits(USER, 1, "api key: abd")
    assert edited["edited_message"]["text"] == "api key: abd"


async def test_button_press_round_trip(tg: LocalTelegram, bot: Bot) -> None:
    async with polling(echo_dispatcher(), bot, tg):
        tg.user_sends(USER, "hi")
        message = await tg.wait_for_bot_message(USER)
        assert message.buttons == [("Again", "again")]
        query_id = tg.user_presses(USER, message, "Again")
        answer = await tg.wait_for(lambda: tg.callback_answer(query_id))
        await tg.wait_for(lambda: message.edits == 1)

    assert (answer.text, answer.show_alert) == ("pressed", False)
    assert message.text == "pressed once"
    assert message.callback_answers == [answer]
    with pytest.raises(TelegramBadRequest, match="query is too old and response timeout expired"):
        await bot.answer_callback_query(query_id)  # a query is answered once


async def test_edit_rules(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    sent = await bot.send_message(USER, "<b>Binance</b>: OK", reply_markup=keyboard(("Refresh", "r")))
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text(
            "<strong>Binance</strong>: OK",
            chat_id=USER,
            message_id=sent.message_id,
            reply_markup=keyboard(("Refresh", "r")),
        )
    await bot.edit_message_text("<b>Binance</b>: OK", chat_id=USER, message_id=sent.message_id)
    stored = tg.message(USER, sent.message_id)
    assert stored.reply_markup is None  # editing without reply_markup drops the keyboard, as on Telegram
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("x", chat_id=USER, message_id=999)


async def test_edit_reply_markup(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    sent = await bot.send_message(USER, "Key revoked", reply_markup=keyboard(("Update key", "upd")))
    await bot.edit_message_reply_markup(chat_id=USER, message_id=sent.message_id)
    assert tg.message(USER, sent.message_id).buttons == []
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_reply_markup(chat_id=USER, message_id=sent.message_id)


async def test_forged_callback_on_a_deleted_message(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    sent = await bot.send_message(USER, "Delete key?", reply_markup=keyboard(("Yes", "del:1")))
    await bot.delete_message(USER, sent.message_id)
    query_id = tg.user_sends_callback(USER, sent.message_id, "del:999")
    [update] = await bot.get_updates()
    assert update.callback_query is not None
    assert (update.callback_query.id, update.callback_query.data) == (query_id, "del:999")
    assert isinstance(update.callback_query.message, InaccessibleMessage)
    await bot.answer_callback_query(query_id, text="That message is gone", show_alert=True)
    assert tg.callback_answer(query_id) == CallbackAnswer(
        query_id, "That message is gone", True, None, USER, sent.message_id
    )


async def test_webhook_is_stored_and_blocks_polling(tg: LocalTelegram, bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="An HTTPS URL must be provided"):
        await bot.set_webhook("http://example.com/hook")
    await bot.set_webhook("https://example.com/hook", secret_token="s3cret")
    assert (await bot.get_webhook_info()).url == "https://example.com/hook"
    assert tg.webhook is not None and tg.webhook["secret_token"] == "s3cret"
    with pytest.raises(TelegramConflictError, match="webhook is active"):
        await bot.get_updates()

    tg.user_sends(USER, "queued while the webhook was set")
    await bot.delete_webhook(drop_pending_updates=True)
    assert tg.pending_updates() == []
    assert await bot.get_updates() == []


async def test_bot_deletes_the_users_secret_message(tg: LocalTelegram, bot: Bot) -> None:
    update = tg.user_sends(USER, "secret: s3cr3t")
    await bot.delete_message(USER, update["message"]["message_id"])
    assert [m.deleted for m in tg.user_messages(USER)] == [True]
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER, update["message"]["message_id"])


async def test_wait_for_reports_the_conversation_on_timeout(tg: LocalTelegram) -> None:
    tg.user_sends(USER, "is anybody there?")
    with pytest.raises(AssertionError, match=r"chat 42 \(private\):\n  #1 user 42: 'is anybody there\?'"):
        await tg.wait_for(lambda: False, timeout=0.01)


async def test_wait_for_bot_message_reads_each_message_once(tg: LocalTelegram, bot: Bot) -> None:
    tg.add_user(USER)
    await bot.send_message(USER, "first")
    await bot.send_message(USER, "second: key revoked")
    await bot.send_message(USER, "third")
    assert (await tg.wait_for_bot_message(USER)).text == "first"
    assert (await tg.wait_for_bot_message(USER, contains="revoked")).text == "second: key revoked"
    assert (await tg.wait_for_bot_message(USER)).text == "third"


# --------------------------------------------------------------------------- terminal chat


async def test_terminal_chat_relays_both_ways(tg: LocalTelegram, bot: Bot) -> None:
    out = io.StringIO()

    async def typed_lines() -> AsyncIterator[str]:
        yield "hello"
        await tg.wait_for_bot_message(USER)
        yield "1"
        await tg.wait_for(lambda: tg.callback_answers and tg.bot_messages(USER)[0].edits)
        yield "9"
        yield "/quit"

    async with polling(echo_dispatcher(), bot, tg):
        await run_terminal_chat(
            tg, USER, banner="Local chat. /quit exits.", input_func=typed_lines().__anext__, output=out
        )

    assert out.getvalue().splitlines() == [
        "Local chat. /quit exits.",
        "bot #2: echo: hello",
        "        [1] Again",
        "bot notice: pressed",
        "bot #2 (edited): pressed once",
        "                 [1] Again",
        "(message #2 has buttons 1-1)",
    ]


async def test_terminal_chat_ends_at_end_of_input(tg: LocalTelegram) -> None:
    async def no_input() -> str:
        raise EOFError

    out = io.StringIO()
    await run_terminal_chat(tg, USER, banner="bye", input_func=no_input, output=out)
    assert out.getvalue() == "bye\n"


def test_terminal_rendering_of_entities() -> None:
    text = "🔑 Key ok, see docs"
    entities = [
        {"type": "bold", "offset": 3, "length": 3},  # the emoji is two UTF-16 units
        {"type": "text_link", "offset": 15, "length": 4, "url": "https://example.com/docs"},
    ]
    assert render_text(text, entities, ansi=False) == "🔑 Key ok, see docs (https://example.com/docs)"
    assert render_text(text, entities, ansi=True) == (
        "🔑 \x1b[0m\x1b[1mKey\x1b[0m ok, see \x1b[0m\x1b[4mdocs\x1b[0m (https://example.com/docs)"
    )
