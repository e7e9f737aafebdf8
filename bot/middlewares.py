"""Update gatekeeping: private chats only, the allow-list, the user's row and language; and the
re-check of every pressed button."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, Chat, TelegramObject, Update
from aiogram.types import User as TgUser
from aiogram.utils.i18n import I18n
from aiogram.utils.i18n import gettext as _
from sqlalchemy.exc import IntegrityError

from bot.callbacks import NamesObject
from bot.i18n import pick_language
from bot.texts import out_of_date
from bot.views.secrets import expose_group_secret
from services.core.clock import Clock
from services.core.vault import carries_secret
from services.pressed import still_as_shown
from services.storage.db import Sessions
from services.storage.users import claim_chat_notice, get_or_create_user

log = logging.getLogger(__name__)

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def _actor(update: Update) -> tuple[TgUser | None, Chat | None]:
    if update.message:
        return update.message.from_user, update.message.chat
    if update.edited_message:
        return update.edited_message.from_user, update.edited_message.chat
    if update.callback_query:
        message = update.callback_query.message
        return update.callback_query.from_user, message.chat if message else None
    if update.channel_post:
        return None, update.channel_post.chat
    if update.my_chat_member:
        return update.my_chat_member.from_user, update.my_chat_member.chat
    return None, None


class InFlight(BaseMiddleware):
    """Counts the updates being handled, outermost on every update.

    aiogram's ``stop_polling`` stops reading updates, not handling them: a reply still on its way
    would meet a closed session or server and end in a traceback. Shutdown waits on
    :meth:`drained` before it closes anything a handler talks to.
    """

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        self._running += 1
        self._idle.clear()
        try:
            return await handler(event, data)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def drained(self, timeout: float) -> bool:  # noqa: ASYNC109
        """True once no update is being handled; False if some still are after ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True


class GateMiddleware(BaseMiddleware):
    """Outer middleware on every update.

    Anything involving keys happens in private chats only; groups get one notice each, and a group
    message (or edit) that looks like it carries a key is deleted where the bot may and its sender
    told to revoke the key (:func:`bot.views.secrets.expose_group_secret`).
    Users outside ``ALLOWED_USER_IDS`` get a polite refusal. Everyone else gets a user row
    and the handler runs in their language.
    """

    def __init__(
        self, sessions: Sessions, clock: Clock, i18n: I18n, allowed_user_ids: Collection[int]
    ) -> None:
        self.sessions = sessions
        self.clock = clock
        self.i18n = i18n
        self.allowed_user_ids = allowed_user_ids

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        tg_user, chat = _actor(event)
        language = pick_language(tg_user.language_code if tg_user else None)
        with self.i18n.context(), self.i18n.use_locale(language):
            if chat is not None and chat.type != "private":
                await self._notice_group(event, chat, data["bot"])
                return None
            if tg_user is None or tg_user.is_bot:
                return None
            allowed = self.allowed_user_ids
            if allowed and tg_user.id not in allowed:
                await self._refuse(event)
                return None
            try:
                async with self.sessions.begin() as session:
                    user = await get_or_create_user(session, tg_user.id, language, self.clock.now())
            except IntegrityError:  # a new user's first updates arrived together; another made the row
                async with self.sessions.begin() as session:
                    user = await get_or_create_user(session, tg_user.id, language, self.clock.now())
            data["user"] = user
        with self.i18n.context(), self.i18n.use_locale(user.language):
            return await handler(event, data)

    async def _notice_group(self, event: Update, chat: Chat, bot: Bot) -> None:
        message = event.message or event.edited_message
        if message is not None:
            text = message.text or message.caption or ""
            if carries_secret(text):  # a key in a group: deleted if we may, its sender told to revoke it
                await expose_group_secret(message, bot)
            elif text.lower().startswith("/link"):  # a key command without a key: removed quietly
                with contextlib.suppress(TelegramAPIError):
                    await message.delete()
        if event.message is None:
            if event.callback_query:
                await event.callback_query.answer(_("keysentry works in private chats only."))
            # Channel posts and edits get nothing: a channel has no one to redirect, an edit was
            # answered (if at all) when it was sent.
            return
        try:
            async with self.sessions.begin() as session:
                first_time = await claim_chat_notice(session, chat.id, self.clock.now())
        except IntegrityError:  # several messages from the group at once: another one claimed it
            first_time = False
        if first_time:
            await event.message.answer(
                _(
                    "keysentry works in private chats only: API keys never belong in a group. "
                    "Message me directly."
                )
            )

    async def _refuse(self, event: Update) -> None:
        text = _("Sorry, this keysentry bot is private and serves only its owner's list of users.")
        if event.message:
            await event.message.answer(text)
        elif event.callback_query:
            await event.callback_query.answer(text, show_alert=True)


class ButtonCheck(BaseMiddleware):
    """Inner middleware on callback queries: the one check of every button that names an object.

    It runs after the handler's filter unpacked the button and before the handler: the object is
    read again (:func:`services.pressed.still_as_shown`, a database read, no network) and, when it
    is gone, someone else's or no longer what the button showed, the query is answered "out of
    date" at once and no handler runs. Buttons that name nothing pass straight through.
    """

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        button = data.get("callback_data")
        if not isinstance(button, NamesObject):
            return await handler(event, data)
        pressed = button.pressed()
        if pressed is None or await still_as_shown(self.sessions, data["user"].id, pressed):
            return await handler(event, data)
        assert isinstance(event, CallbackQuery)
        await event.answer(out_of_date(button.RESEND), show_alert=True)
        return None
