"""/mute and the Mute 24 h button: silence alerts for a chosen time, never losing a recovery."""

from __future__ import annotations

from datetime import timedelta

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, Message
from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext
from aiogram.utils.keyboard import InlineKeyboardBuilder

from bot import formatting
from bot.callbacks import ConnAction, ConnCb, MuteCb
from bot.texts import button_title, connection_title
from bot.views.html import html
from services.core.clock import Clock
from services.monitoring.mutes import muted_everything_until, set_mute
from services.storage.button_tokens import connection_token
from services.storage.db import Sessions
from services.storage.models import User
from services.storage.users import user_connections

CHOICES = (1, 8, 24, 168)


def _duration_label(hours: int) -> str:
    if hours < 48:
        return _("{n} h").format(n=hours)
    return ngettext("{n} day", "{n} days", hours // 24).format(n=hours // 24)


async def mute_menu(message: Message, sessions: Sessions, clock: Clock, user: User) -> None:
    """The choices, preceded by what is muted right now, each with its Unmute button."""
    now = clock.now()
    connections = await user_connections(sessions, user.id)
    everything = await muted_everything_until(sessions, user.id, now)
    muted = [(c, c.muted_until) for c in connections if c.muted_until is not None and c.muted_until > now]
    lines = []
    if everything is not None:
        lines.append("🔕 " + _("All alerts until {time}").format(time=formatting.until(everything, now)))
    for c, ends in muted:
        lines.append(
            html(
                "🔕 " + _("{title} until {time}"),
                title=connection_title(c.exchange, c.label, c.key_hint),
                time=formatting.until(ends, now),
            )
        )
    keyboard = InlineKeyboardBuilder()
    for c, _ends in muted[:20]:
        keyboard.button(
            text="🔔 " + _("Unmute {title}").format(title=button_title(c.exchange, c.label, c.key_hint)),
            callback_data=MuteCb(cid=c.id, hours=0, v=connection_token(c)),
        )
    for hours in CHOICES:
        keyboard.button(
            text="🔕 " + _("All, {d}").format(d=_duration_label(hours)),
            callback_data=MuteCb(cid=0, hours=hours),
        )
    for connection in connections[:20]:
        title = button_title(connection.exchange, connection.label, connection.key_hint)
        keyboard.button(
            text=f"🔕 {title}, {_duration_label(24)}",
            callback_data=MuteCb(cid=connection.id, hours=24, v=connection_token(connection)),
        )
    keyboard.button(text="🔔 " + _("Unmute everything"), callback_data=MuteCb(cid=0, hours=0))
    keyboard.adjust(*([1] * len(muted[:20])), 2, 2, *([1] * (len(connections[:20]) + 1)))
    intro = _("Mute alerts for a while. When a mute ends you get one summary if anything changed.")
    if lines:
        intro = _("<b>Muted now</b>") + "\n" + "\n".join(lines) + "\n\n" + intro
    await message.answer(intro, reply_markup=keyboard.as_markup())


async def _apply(
    query: CallbackQuery, sessions: Sessions, clock: Clock, user: User, cid: int, hours: int
) -> None:
    """Answered at once: the button was checked (``bot.middlewares.ButtonCheck``), and a mute is one write."""
    if hours == 0:
        await query.answer(_("Alerts are on again."))
    else:
        await query.answer(_("Muted for {d}.").format(d=_duration_label(hours)))
    await set_mute(sessions, user.id, cid or None, timedelta(hours=hours), clock.now())


async def mute_chosen(
    query: CallbackQuery, callback_data: MuteCb, sessions: Sessions, clock: Clock, user: User
) -> None:
    await _apply(query, sessions, clock, user, callback_data.cid, callback_data.hours)


async def mute_button(
    query: CallbackQuery, callback_data: ConnCb, sessions: Sessions, clock: Clock, user: User
) -> None:
    await _apply(query, sessions, clock, user, callback_data.cid, 24)


def build_router() -> Router:
    router = Router(name="mute")
    router.message.register(mute_menu, Command("mute"))
    router.callback_query.register(mute_chosen, MuteCb.filter(F.hours.in_((0, *CHOICES))))
    router.callback_query.register(mute_button, ConnCb.filter(F.action == ConnAction.MUTE))
    return router
