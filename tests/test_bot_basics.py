"""The foundation end to end: real Dispatcher and Bot talking HTTP to the local Telegram."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiogram import Router
from aiogram.filters import Command
from aiogram.types import Message

from bot.app import stop_polling
from tests.harness import running_bot


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"


async def test_start_explains_and_offers_the_next_step(sqlite_url):
    async with running_bot(sqlite_url) as rig:
        reply = await rig.say(10, "/start")
        assert "keysentry" in reply.text and "/link" in reply.text
        assert len(reply.text.splitlines()[0:3]) == 3
        assert any("Link" in b.text for b in reply.buttons)


async def test_help_lists_every_command_in_one_line(sqlite_url):
    from bot.commands import COMMANDS

    async with running_bot(sqlite_url) as rig:
        reply = await rig.say(10, "/help")
        for name, _ in COMMANDS:
            assert sum(line.startswith(f"/{name} ") for line in reply.text.splitlines()) == 1


async def test_language_switch_changes_the_reply_language(sqlite_url):
    async with running_bot(sqlite_url) as rig:
        picker = await rig.say(11, "/language")
        await rig.press(11, picker, "Русский")
        confirmation = await rig.tg.wait_for_bot_message(11)
        assert "русский" in confirmation.text.lower()
        reply = await rig.say(11, "/help")
        assert "Команды" in reply.text
        await rig.press(11, await rig.say(11, "/language"), "Español")
        await rig.tg.wait_for_bot_message(11)
        assert "Comandos" in (await rig.say(11, "/help")).text


async def test_telegram_language_is_the_first_guess(sqlite_url):
    async with running_bot(sqlite_url) as rig:
        rig.tg.add_user(12, language_code="es")
        reply = await rig.say(12, "/help")
        assert "Comandos" in reply.text


async def test_group_is_told_once_to_use_a_private_chat(sqlite_url):
    async with running_bot(sqlite_url) as rig:
        reply = await rig.say(10, "/status", chat_type="group", chat_id=-500)
        assert "private" in reply.text
        rig.tg.make_bot_admin(-500)  # only an administrator may delete others' messages in a group
        rig.tg.user_sends(10, "/link binance k s", chat_type="group", chat_id=-500)
        rig.tg.user_sends(10, "/start")  # a private message after it proves the group one was processed
        await rig.tg.wait_for_bot_message(10)
        assert len(rig.tg.bot_messages(-500)) == 1
        pasted = [m for m in rig.tg.user_messages(-500) if m.text.startswith("/link")]
        assert pasted and all(m.deleted for m in pasted)  # a key pasted in a group is removed


async def test_user_outside_the_allow_list_is_refused_politely(sqlite_url):
    async with running_bot(sqlite_url, allowed_user_ids=frozenset({1})) as rig:
        refused = await rig.say(99, "/start")
        assert "private" in refused.text.lower() or "sorry" in refused.text.lower()
        welcomed = await rig.say(1, "/start")
        assert "keysentry" in welcomed.text


async def test_handler_error_becomes_a_friendly_message_with_a_reference(sqlite_url, caplog):
    broken = Router(name="broken")

    @broken.message(Command("boom"))
    async def boom(message: Message) -> None:
        raise RuntimeError("database exploded")

    async with running_bot(sqlite_url, routers=[broken]) as rig:
        reply = await rig.say(10, "/boom")
        assert "went wrong" in reply.text and "Reference:" in reply.text
        assert "exploded" not in reply.text and "Traceback" not in reply.text
        reference = reply.text.split("Reference: ")[1].split(".")[0]
        assert reference in caplog.text


async def test_shutdown_waits_for_a_reply_still_on_its_way(sqlite_url):
    """Ctrl-C or SIGTERM while a handler is mid-reply: the user still gets the reply, and nothing
    the handler talks to is closed under it (that ended in a traceback in the sandbox)."""
    slow = Router(name="slow")
    started, release = asyncio.Event(), asyncio.Event()

    @slow.message(Command("slow"))
    async def reply_later(message: Message) -> None:
        started.set()
        await release.wait()
        await message.answer("here it is")

    async with running_bot(sqlite_url, routers=[slow]) as rig:
        rig.tg.user_sends(30, "/slow")
        await asyncio.wait_for(started.wait(), 5)
        stopping = asyncio.create_task(stop_polling(rig.dp, rig.polling))
        await asyncio.wait({rig.polling}, timeout=5)
        assert rig.polling.done() and not stopping.done()  # no longer reading, still waiting
        release.set()
        await stopping
        assert [m.text for m in rig.tg.bot_messages(30)] == ["here it is"]


async def test_commands_are_registered_in_every_language(sqlite_url):
    from bot.commands import register_commands

    async with running_bot(sqlite_url) as rig:
        await register_commands(rig.bot, rig.app.i18n)
        languages = {language for _scope, language in rig.tg.commands}
        assert {"en", "ru", "es"} <= languages
        ru = next(v for (_s, lang), v in rig.tg.commands.items() if lang == "ru")
        assert any(c["command"] == "help" for c in ru)


async def test_export_contains_no_secret_and_forget_deletes_everything(sqlite_url):
    from services.core.vault import Credentials
    from services.storage.connections import new_connection

    async with running_bot(sqlite_url) as rig:
        await rig.say(20, "/start")
        async with rig.app.sessions.begin() as session:
            session.add(
                new_connection(
                    rig.app.vault,
                    user_id=20,
                    exchange="binance",
                    label="Main",
                    credentials=Credentials("A" * 64, "TopSecretValue" * 4),
                    now=rig.clock.now(),
                )
            )
        rig.tg.user_sends(20, "/export")
        exported = await rig.tg.wait_for(
            lambda: next((m for m in rig.tg.bot_messages(20) if m.document), None)
        )
        rig.tg.mark_read(20)
        data = json.loads(exported.document.content)
        assert data["connections"][0]["label"] == "Main"
        assert b"TopSecretValue" not in exported.document.content
        confirm = await rig.say(20, "/forget")
        await rig.press(20, confirm, "Delete everything")
        await rig.tg.wait_for(lambda: "deleted" in rig.tg.message(20, confirm.message_id).text)
        async with rig.app.sessions() as session:
            from services.storage.user_data import export_user

            assert (await export_user(session, 20))["connections"] == []


async def test_unknown_input_gets_one_line_pointing_at_help_and_is_never_echoed(sqlite_url):
    async with running_bot(sqlite_url) as rig:
        for text in ("/foo", "hello bot", "secret-looking " + "x" * 4000):
            reply = await rig.say(10, text)
            assert "/help" in reply.text and len(reply.text.splitlines()) == 1
            assert text.split()[0].lstrip("/") not in reply.text
        assert "command" in (await rig.say(10, "/foo")).text
        rig.tg.user_sends(10, "hello group", chat_type="group", chat_id=-501)
        await rig.say(10, "/start")  # processed after the group message
        # a group only ever gets the gate's "private chats only" notice, never the pointer
        assert not any("understand" in m.text for m in rig.tg.bot_messages(-501))
