"""A local Telegram Bot API server that enforces Telegram's limits, for tests and the sandbox.

The real aiogram ``Bot`` talks to it over HTTP (``TELEGRAM_API_URL`` = :attr:`LocalTelegram.url`),
so everything between our handlers and the wire is exercised: serialisation, error classes,
long polling. It is strict where Telegram is strict — text length after entity parsing, the
HTML subset (:mod:`sandbox.telegram_html`), 64-byte callback data, flood limits with
``retry_after``, blocked users — and answers with the texts the real server uses (taken from
tdlib/telegram-bot-api), because our error handling matches on them.

Decisions worth knowing:

* An unknown method gets **404** ``Not Found: method not found``, as from the real server;
  aiogram raises ``TelegramNotFound`` for it. (A 400 would be just as "graceful" for aiogram,
  but then the sandbox would disagree with production.)
* A missing required field gets the real server's wording where it has a specific one
  (``message text is empty``, ``chat_id is empty``, ...) and ``parameter "x" is required``
  otherwise.
* A bare ``&`` is accepted, as on Telegram; only ``<`` must be escaped.
* A parameter the current Bot API does not document for the method (``disable_web_page_preview``,
  long replaced by ``link_preview_options``) gets a 400 naming it. The real server silently
  ignores such fields; refusing them here keeps deprecated parameters from creeping back in.
  The documented parameters are in ``bot_api_parameters.json``, taken from the Bot API
  reference (version and source named in the file).
* Only ``parse_mode=HTML`` is implemented; Markdown is refused with a clear 400 so nobody
  mistakes "not validated" for "valid".
* Sending to a chat the server has never seen gives ``chat not found``: a user must have
  written to the bot first (:meth:`LocalTelegram.user_sends`) or be registered with
  :meth:`LocalTelegram.add_user`. A user the server knows only from a group (never wrote to the
  bot privately) gets Telegram's 403 ``bot can't initiate conversation with a user``.
* In a group, the bot deletes someone else's message only as an administrator with
  ``can_delete_messages`` (Bot API ``deleteMessage``: "If the bot is an administrator of a group,
  it can delete any message there"); otherwise ``message can't be deleted``, as on Telegram.
  :meth:`LocalTelegram.make_bot_admin` grants it.
* ``set_down(True)`` answers everything with an nginx-style HTML 502, like Telegram's front end
  during an outage; aiogram cannot decode that and raises ``ClientDecodeError``, which is *not*
  a ``TelegramAPIError``.

Time for flood limits comes from an injectable monotonic clock, so tests move time instead of
sleeping; waiting (long polling, :meth:`LocalTelegram.wait_for`) is event-driven.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiohttp import web

from sandbox.telegram_html import (
    EntityParseError,
    FormattedText,
    checked_link,
    parse_html,
    trim_formatted,
    utf16_length,
)

T = TypeVar("T")

MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_RAW_TEXT_BYTES = 1 << 15
LONG_POLL_MAX_TIMEOUT = 50
MAX_UPLOAD_BYTES = 50 * 1024 * 1024

# Update types delivered when getUpdates never named any (Telegram's documented default).
DEFAULT_UPDATE_TYPES = frozenset(
    {"message", "edited_message", "channel_post", "edited_channel_post", "callback_query", "my_chat_member"}
)
CHAT_ACTIONS = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "record_audio",
        "upload_audio",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
        "cancel",
    }
)
ChatType = Literal["private", "group", "supergroup", "channel"]

_BAD_GATEWAY_HTML = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
_COMMAND_RE = re.compile(r"(?<![\w/])/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?")
_BOT_COMMAND_NAME_RE = re.compile(r"[a-z0-9_]{1,32}")


class Button(NamedTuple):
    """One inline button; ``callback_data`` is ``None`` for URL and other non-callback buttons."""

    text: str
    callback_data: str | None


@dataclass(frozen=True)
class SentDocument:
    """A file the bot sent with sendDocument; ``content`` is empty when it sent a file_id or URL."""

    file_name: str | None
    content: bytes
    mime_type: str | None
    file_id: str


@dataclass(frozen=True)
class CallbackAnswer:
    callback_query_id: str
    text: str
    show_alert: bool
    url: str | None
    chat_id: int
    message_id: int


@dataclass(eq=False)
class ChatMessage:
    """A message in a chat as the server holds it now: user-sent or bot-sent, maybe edited or deleted.

    ``text`` is what the user sees (tags removed, entities decoded, trimmed); ``html`` is the raw
    string the sender passed. For a document, both describe its caption.
    """

    message_id: int
    chat_id: int
    from_bot: bool
    sender_id: int | None  # the user's id; None for bot messages and channel posts
    text: str
    html: str
    entities: list[dict[str, Any]]
    date: int
    reply_markup: dict[str, Any] | None = None
    document: SentDocument | None = None
    edits: int = 0
    edit_date: int | None = None
    deleted: bool = False
    callback_answers: list[CallbackAnswer] = field(default_factory=list)

    @property
    def buttons(self) -> list[Button]:
        """Inline buttons, flattened row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [Button(button["text"], button.get("callback_data")) for row in rows for button in row]


BotMessage = ChatMessage  # the name the team brief used; user messages are ChatMessage too


@dataclass(frozen=True)
class ChatEvent:
    """Something the bot did that a person in the chat would notice (drives the terminal chat)."""

    kind: Literal["sent", "edited", "deleted", "answered"]
    chat_id: int
    message: ChatMessage
    answer: CallbackAnswer | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    params: dict[str, str]
    status: int
    description: str | None = None
    retry_after: int | None = None


@dataclass(frozen=True)
class RateLimits:
    """Telegram's flood limits: about one message a second per chat (with a small burst),
    twenty a minute per group, thirty a second per bot. Sends and edits count."""

    chat_burst: int = 3
    chat_per_second: float = 1.0
    group_per_minute: int = 20
    bot_per_second: int = 30
    # sendMessage with allow_paid_broadcast: "up to 1000 messages per second, ignoring
    # broadcasting limits" (Bot API, sendMessage); the per-chat limits still hold.
    paid_per_second: int = 1000


class _ApiError(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after


def _bad_request(detail: str) -> _ApiError:
    return _ApiError(400, f"Bad Request: {detail}")


@dataclass(frozen=True)
class _Upload:
    file_name: str | None
    content: bytes
    mime_type: str | None


@dataclass
class _Chat:
    id: int
    type: ChatType
    title: str | None = None
    user_id: int | None = None  # the other party of a private chat
    bot_can_delete: bool = False  # a group where the bot is an administrator with can_delete_messages
    messages: list[ChatMessage] = field(default_factory=list)
    next_message_id: int = 1
    last_activity: int = 0  # position in the server's activity order, for the transcript


@dataclass
class _CallbackQuery:
    user_id: int
    chat_id: int
    message_id: int
    answered: bool = False


class _Signal:
    """Wakes waiters whenever the server's state changes; usable from sync code.

    ``asyncio.Condition`` would need its lock to notify, and ``user_sends`` is synchronous,
    so waiters park on futures that :meth:`notify` resolves.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()

    def notify(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_until(self, predicate: Callable[[], T | None]) -> T:
        """Return ``predicate()`` once truthy (bound the wait with ``asyncio.timeout``)."""
        while not (result := predicate()):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        return result


class _FloodControl:
    """Token bucket per chat, sliding windows per group and per bot."""

    def __init__(self, limits: RateLimits) -> None:
        self.limits = limits
        self._buckets: dict[int, tuple[float, float]] = {}  # chat -> (tokens, last refill)
        self._bot_window: deque[float] = deque()
        self._paid_window: deque[float] = deque()
        self._group_windows: dict[int, deque[float]] = {}

    def acquire(self, chat: _Chat, now: float, *, paid: bool = False) -> int:
        """Spend one send on ``chat``; return 0, or the whole seconds to wait if over a limit.
        A paid broadcast counts against the paid rate instead of the bot's free one."""
        limits = self.limits
        tokens, refilled = self._buckets.get(chat.id, (float(limits.chat_burst), now))
        tokens = min(float(limits.chat_burst), tokens + (now - refilled) * limits.chat_per_second)
        waits = []
        if tokens < 1:
            waits.append((1 - tokens) / limits.chat_per_second)
        windows = [
            (self._paid_window, 1.0, limits.paid_per_second)
            if paid
            else (self._bot_window, 1.0, limits.bot_per_second)
        ]
        if chat.type in ("group", "supergroup"):
            windows.append((self._group_windows.setdefault(chat.id, deque()), 60.0, limits.group_per_minute))
        for window, span, allowed in windows:
            while window and window[0] <= now - span:
                window.popleft()
            if len(window) >= allowed:
                waits.append(window[0] + span - now)
        if waits:
            self._buckets[chat.id] = (tokens, now)
            return max(1, math.ceil(max(waits) - 1e-9))
        self._buckets[chat.id] = (tokens - 1, now)
        for window, _, _ in windows:
            window.append(now)
        return 0


_REFERENCE = json.loads(Path(__file__).with_name("bot_api_parameters.json").read_text(encoding="utf-8"))
BOT_API_VERSION: str = _REFERENCE["version"]
_DOCUMENTED: dict[str, frozenset[str]] = {
    method: frozenset(names) for method, names in _REFERENCE["methods"].items()
}

# Fields the Bot API marks required, with the real server's wording where it has its own.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "sendMessage": ("text", "chat_id"),
    "sendDocument": ("chat_id", "document"),
    "editMessageText": ("text",),
    "deleteMessage": ("chat_id", "message_id"),
    "answerCallbackQuery": ("callback_query_id",),
    "setMyCommands": ("commands",),
    "sendChatAction": ("chat_id", "action"),
    "setWebhook": ("url",),
}
_MISSING: dict[tuple[str, str], str] = {
    ("sendMessage", "text"): "message text is empty",
    ("editMessageText", "text"): "message text is empty",
    ("sendMessage", "chat_id"): "chat_id is empty",
    ("sendDocument", "chat_id"): "chat_id is empty",
    ("sendChatAction", "chat_id"): "chat_id is empty",
    ("sendDocument", "document"): "there is no document in the request",
    ("deleteMessage", "chat_id"): "chat identifier is not specified",
    ("deleteMessage", "message_id"): "message identifier is not specified",
    ("sendChatAction", "action"): "wrong parameter action in request",
}


class _Params:
    """Request parameters from the query string, form, multipart or JSON body, as strings."""

    def __init__(self, values: dict[str, str], files: dict[str, _Upload]) -> None:
        self.values = values
        self.files = files

    def text(self, name: str) -> str:
        return self.values.get(name, "")

    def integer(self, name: str, default: int = 0) -> int:
        try:
            return int(self.values.get(name, ""))
        except ValueError:
            return default

    def flag(self, name: str) -> bool:
        return self.values.get(name, "").lower() in ("true", "1")

    def json(self, name: str, what: str) -> Any:
        raw = self.values.get(name, "")
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise _bad_request(f"can't parse {what} JSON object") from None


class LocalTelegram:
    """The server plus the chats it holds; tests drive the "users" and read the conversation.

    ``clock`` returns monotonic seconds for flood control (default ``time.monotonic``);
    ``wall_clock`` returns Unix seconds for message dates (default ``time.time``). With the
    project's ``FakeClock`` pass e.g. ``wall_clock=lambda: fake.now().timestamp()``.
    ``rate_limits=False`` (or :meth:`set_rate_limits`) turns flood control off for tests that
    are not about it.
    """

    def __init__(
        self,
        token: str = "123456:LOCAL-telegram-token",
        *,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] | None = None,
        rate_limits: bool | RateLimits = True,
        bot_username: str = "keysentry_local_bot",
        bot_name: str = "KeySentry (local)",
    ) -> None:
        self.token = token
        self.url = ""
        self._clock = clock or time.monotonic
        self._wall_clock = wall_clock or time.time
        self._flood: _FloodControl | None = None
        self.set_rate_limits(rate_limits)
        self.paid_broadcasts = 0  # messages sent with allow_paid_broadcast (0.1 Stars each)
        self.bot_user: dict[str, Any] = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }
        self.requests: list[RecordedRequest] = []
        self.events: list[ChatEvent] = []
        self.callback_answers: list[CallbackAnswer] = []
        self.commands: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.webhook: dict[str, Any] | None = None
        self.waiting_polls = 0  # getUpdates calls parked right now: "the bot is listening"
        self._users: dict[int, dict[str, Any]] = {}
        self._chats: dict[int, _Chat] = {}
        self._blocked: set[int] = set()
        self._updates: deque[dict[str, Any]] = deque()
        self._update_ids = itertools.count(1)
        self._query_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._activity = itertools.count(1)
        self._queries: dict[str, _CallbackQuery] = {}
        self._allowed_updates = DEFAULT_UPDATE_TYPES
        self._poll_generation = 0
        self._read_cursor: dict[int, int] = {}
        self._down = False
        self._closing = False
        self._signal = _Signal()
        self._runner: web.AppRunner | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on ``host:port`` (0 = any free port); return the base URL for TELEGRAM_API_URL."""
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES + 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    async def close(self) -> None:
        """Release pending long polls and stop listening."""
        self._closing = True
        self._signal.notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def make_bot(self, **bot_kwargs: Any) -> Bot:
        """An aiogram ``Bot`` wired to this server (``bot_kwargs`` go to ``Bot``, e.g. ``default``)."""
        if not self.url:
            raise RuntimeError("start() the server before making a bot for it")
        session = LocalBotSession(api=TelegramAPIServer.from_base(self.url))
        return Bot(self.token, session=session, **bot_kwargs)

    # ----------------------------------------------------------------- switches

    def set_down(self, down: bool = True) -> None:
        """While down, every request gets a 502 HTML page, like Telegram's front end in an outage."""
        self._down = down

    def set_rate_limits(self, limits: bool | RateLimits) -> None:
        if limits is True:
            limits = RateLimits()
        self._flood = _FloodControl(limits) if limits else None

    def make_bot_admin(self, chat_id: int) -> None:
        """The group's owner makes the bot an administrator that may delete messages."""
        self._chats[chat_id].bot_can_delete = True

    def block_user(self, user_id: int) -> None:
        """The user blocks the bot: sends to them fail with 403 and a my_chat_member update arrives."""
        if user_id not in self._blocked:
            self._blocked.add(user_id)
            self._member_update(user_id, old="member", new="kicked")

    def unblock_user(self, user_id: int) -> None:
        if user_id in self._blocked:
            self._blocked.discard(user_id)
            self._member_update(user_id, old="kicked", new="member")

    # ----------------------------------------------------------------- the users' side

    def add_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
    ) -> dict[str, Any]:
        """Make a user and their private chat known without an update, as if they had /start-ed
        the bot earlier. Returns the user as a Bot API ``User``."""
        user = self._remember_user(user_id, first_name, username, language_code)
        self._ensure_chat(user_id, "private", user_id)
        return user

    def user_sends(
        self,
        user_id: int,
        text: str,
        *,
        chat_type: ChatType = "private",
        chat_id: int | None = None,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str | None = None,
        message_id: int | None = None,
    ) -> dict[str, Any]:
        """Deliver a text message from the user; return the update. ``/commands`` get a
        ``bot_command`` entity. Unset profile fields keep earlier values (first use: Alice, en).
        A user who had blocked the bot unblocks it by writing, as in the Telegram apps."""
        if not text.strip():
            raise ValueError("Telegram does not deliver empty messages")
        user = self._remember_user(user_id, first_name, username, language_code)
        if chat_id is None:
            if chat_type != "private":
                raise ValueError(f"chat_id is required for a {chat_type} chat")
            chat_id = user_id
        chat = self._ensure_chat(chat_id, chat_type, user_id)
        if chat.type == "private":
            self.unblock_user(user_id)
        message = ChatMessage(
            message_id=self._next_message_id(chat, message_id),
            chat_id=chat.id,
            from_bot=False,
            sender_id=None if chat.type == "channel" else user["id"],
            text=text,
            html=text,
            entities=_command_entities(text),
            date=self._now_unix(),
        )
        chat.messages.append(message)
        kind = "channel_post" if chat.type == "channel" else "message"
        return self._enqueue(kind, self._message_json(message))

    def user_edits(
        self, user_id: int, message_id: int, new_text: str, *, chat_id: int | None = None
    ) -> dict[str, Any]:
        """The user edits one of their messages; returns the edited_message update."""
        message = self.message(user_id if chat_id is None else chat_id, message_id)
        if message.from_bot or message.deleted:
            raise ValueError(f"message {message_id} is not the user's live message")
        message.text = message.html = new_text
        message.entities = _command_entities(new_text)
        message.edits += 1
        message.edit_date = self._now_unix()
        kind = "edited_channel_post" if self._chats[message.chat_id].type == "channel" else "edited_message"
        return self._enqueue(kind, self._message_json(message))

    def user_deletes(self, user_id: int, message_id: int) -> None:
        """The user deletes a message in their private chat: on Telegram it is gone for the bot
        too (a later edit gets "message to edit not found"); no update is sent for it."""
        self.message(user_id, message_id).deleted = True

    def user_presses(
        self, user_id: int, message: ChatMessage | int, button: str | int, *, chat_id: int | None = None
    ) -> str:
        """Press an inline button: by 0-based index, by its text, or by its callback data.
        Returns the callback query id (see :meth:`callback_answer`)."""
        if isinstance(message, int):
            message = self.message(user_id if chat_id is None else chat_id, message)
        if message.deleted or not message.buttons:
            raise ValueError(f"message {message.message_id} has no buttons to press")
        buttons = message.buttons
        if isinstance(button, int):
            chosen = buttons[button]
        else:
            matching = [b for b in buttons if b.text == button] or [
                b for b in buttons if b.callback_data == button
            ]
            if not matching:
                raise ValueError(f"no button {button!r} on message {message.message_id}; buttons: {buttons}")
            chosen = matching[0]
        if chosen.callback_data is None:
            raise ValueError(f"button {chosen.text!r} opens a link or app, it sends no callback")
        return self._callback(user_id, message, chosen.callback_data)

    def user_sends_callback(
        self, user_id: int, message_id: int, data: str, *, chat_id: int | None = None
    ) -> str:
        """A callback query with arbitrary (possibly forged or stale) data for ``message_id``."""
        return self._callback(
            user_id, self.message(user_id if chat_id is None else chat_id, message_id), data
        )

    # ----------------------------------------------------------------- reading the conversation

    def chat(self, chat_id: int) -> list[ChatMessage]:
        """Every message in the chat in the order posted, deleted ones included (``.deleted``)."""
        chat = self._chats.get(chat_id)
        return list(chat.messages) if chat else []

    def bot_messages(self, chat_id: int) -> list[ChatMessage]:
        return [m for m in self.chat(chat_id) if m.from_bot and not m.deleted]

    def user_messages(self, chat_id: int) -> list[ChatMessage]:
        return [m for m in self.chat(chat_id) if not m.from_bot]

    def last_bot_message(self, chat_id: int) -> ChatMessage | None:
        messages = self.bot_messages(chat_id)
        return messages[-1] if messages else None

    def message(self, chat_id: int, message_id: int) -> ChatMessage:
        for message in self.chat(chat_id):
            if message.message_id == message_id:
                return message
        raise KeyError(f"no message {message_id} in chat {chat_id}")

    def callback_answer(self, callback_query_id: str) -> CallbackAnswer | None:
        return next((a for a in self.callback_answers if a.callback_query_id == callback_query_id), None)

    @property
    def errors(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.status != 200]

    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates not yet confirmed by a getUpdates offset."""
        return list(self._updates)

    def transcript(self, chat_id: int | None = None, last: int = 15) -> str:
        """The recent conversation and failed requests, for assertion messages and debugging.

        Without ``chat_id``: the five most recently active chats, so a failure in a test with
        thousands of users still prints something readable.
        """
        if chat_id is not None:
            chats = [self._chats[chat_id]] if chat_id in self._chats else []
        else:
            chats = sorted(self._chats.values(), key=lambda c: c.last_activity)[-5:]
        lines = []
        for chat in chats:
            lines.append(f"chat {chat.id} ({chat.type}):")
            for m in chat.messages[-last:]:
                who = "bot" if m.from_bot else f"user {m.sender_id}"
                edited = f" (edited x{m.edits})" if m.edits else ""
                deleted = " (deleted)" if m.deleted else ""
                buttons = f" {[b.text for b in m.buttons]}" if m.buttons else ""
                lines.append(f"  #{m.message_id} {who}{edited}{deleted}: {m.text!r}{buttons}")
        failed = self.errors[-last:]
        if failed:
            lines.append("failed requests:")
            lines += [f"  {r.method} -> {r.status} {r.description}" for r in failed]
        lines.append(f"unconfirmed updates: {len(self._updates)}")
        return "\n".join(lines)

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float | None = 5.0) -> T:  # noqa: ASYNC109
        """Wait until ``predicate()`` is truthy and return it; re-checked on every state change
        (each request, each user action). On timeout: AssertionError with the transcript;
        ``timeout=None`` waits for as long as it takes."""
        try:
            async with asyncio.timeout(timeout):
                return await self._signal.wait_until(predicate)
        except TimeoutError:
            raise AssertionError(f"condition not met within {timeout}s\n{self.transcript()}") from None

    async def wait_for_bot_message(
        self,
        chat_id: int,
        *,
        count: int = 1,
        contains: str | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 - a per-call bound is the point of a test helper
    ) -> ChatMessage:
        """The next bot message in the chat that this method has not returned before.

        Each chat has a read cursor: a call returns the ``count``-th unread bot message (only
        those whose text contains ``contains``, if given) and marks everything up to it read.
        Messages that arrived before the call still count as unread, so there is no race
        between "user acts" and "test starts waiting". :meth:`mark_read` skips the backlog.
        """
        cursor = self._read_cursor.get(chat_id, 0)

        def found() -> tuple[int, ChatMessage] | None:
            sent = [m for m in self.chat(chat_id) if m.from_bot]
            matches = [
                (index, m)
                for index, m in enumerate(sent[cursor:], cursor)
                if contains is None or contains in m.text
            ]
            return matches[count - 1] if len(matches) >= count else None

        index, message = await self.wait_for(found, timeout)
        self._read_cursor[chat_id] = index + 1
        return message

    def mark_read(self, chat_id: int) -> None:
        """Make :meth:`wait_for_bot_message` ignore every bot message already in the chat."""
        self._read_cursor[chat_id] = sum(1 for m in self.chat(chat_id) if m.from_bot)

    # ----------------------------------------------------------------- HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method_name = request.match_info["method"]
        if self._down:
            self._record(RecordedRequest(method_name, {}, 502, "Bad Gateway"))
            return web.Response(status=502, text=_BAD_GATEWAY_HTML, content_type="text/html")
        try:
            params = await _read_params(request)
        except web.HTTPRequestEntityTooLarge:
            self._record(RecordedRequest(method_name, {}, 413, "Request Entity Too Large"))
            return _error_response(_ApiError(413, "Request Entity Too Large"))
        except _ApiError as exc:
            self._record(RecordedRequest(method_name, {}, exc.status, exc.description))
            return _error_response(exc)

        method = _METHOD_NAMES.get(method_name.lower(), method_name)
        try:
            if request.match_info["token"] != self.token:
                raise _ApiError(401, "Unauthorized")
            handler = _HANDLERS.get(method)
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            # File uploads travel under random part names (``attach://…``), so only values are checked.
            undocumented = sorted(set(params.values) - _DOCUMENTED.get(method, frozenset()))
            if undocumented:
                raise _bad_request(
                    f'parameter "{undocumented[0]}" is not documented for {method} in {BOT_API_VERSION}'
                )
            for name in _REQUIRED.get(method, ()):
                if not params.text(name) and name not in params.files:
                    raise _bad_request(_MISSING.get((method, name), f'parameter "{name}" is required'))
            result = await handler(self, params)
        except _ApiError as exc:
            self._record(RecordedRequest(method, params.values, exc.status, exc.description, exc.retry_after))
            return _error_response(exc)
        self._record(RecordedRequest(method, params.values, 200))
        return web.json_response({"ok": True, "result": result})

    def _record(self, recorded: RecordedRequest) -> None:
        self.requests.append(recorded)
        self._signal.notify()

    # ----------------------------------------------------------------- Bot API methods

    async def _get_me(self, p: _Params) -> Any:
        return self.bot_user

    async def _get_updates(self, p: _Params) -> Any:
        if self.webhook is not None:
            raise _ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; "
                "use deleteWebhook to delete the webhook first",
            )
        allowed = p.json("allowed_updates", "allowed updates")
        if isinstance(allowed, list):
            self._allowed_updates = frozenset(allowed) or DEFAULT_UPDATE_TYPES
        offset = p.integer("offset")
        limit = min(max(p.integer("limit", 100), 1), 100)
        timeout = min(max(p.integer("timeout"), 0), LONG_POLL_MAX_TIMEOUT)
        self._poll_generation += 1
        generation = self._poll_generation
        self._confirm(offset)

        def ready() -> bool:
            return bool(self._deliverable()) or self._closing or generation != self._poll_generation

        if timeout:
            self.waiting_polls += 1
            self._signal.notify()
            try:
                with suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._signal.wait_until(ready)
            finally:
                self.waiting_polls -= 1
        if generation != self._poll_generation:
            raise _ApiError(
                409,
                "Conflict: terminated by other getUpdates request; "
                "make sure that only one bot instance is running",
            )
        return self._deliverable()[:limit]

    async def _delete_webhook(self, p: _Params) -> Any:
        self.webhook = None
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _set_webhook(self, p: _Params) -> Any:
        url = p.text("url")
        if not url.lower().startswith("https://"):
            raise _bad_request("bad webhook: An HTTPS URL must be provided for webhook")
        self.webhook = {
            "url": url,
            "allowed_updates": p.json("allowed_updates", "allowed updates"),
            "max_connections": p.integer("max_connections", 40),
            "secret_token": p.text("secret_token") or None,
        }
        if p.flag("drop_pending_updates"):
            self._updates.clear()
        return True

    async def _get_webhook_info(self, p: _Params) -> Any:
        info: dict[str, Any] = {
            "url": (self.webhook or {}).get("url", ""),
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }
        if self.webhook:
            info["max_connections"] = self.webhook["max_connections"]
        return info

    async def _send_message(self, p: _Params) -> Any:
        formatted = self._format(p, "text", MAX_TEXT_LENGTH, "message is too long")
        markup = _reply_markup(p, inline_only=False)
        chat = self._chat(p)
        self._check_can_write(chat)
        paid = p.text("allow_paid_broadcast") == "true"
        self._spend(chat, paid=paid)
        self.paid_broadcasts += paid
        message = self._post(chat, formatted, p.text("text"), markup)
        return self._message_json(message)

    async def _send_document(self, p: _Params) -> Any:
        document = p.text("document")
        upload = p.files.get(document.removeprefix("attach://")) or p.files.get("document")
        if document.startswith("attach://") and upload is None:
            raise _bad_request("there is no document in the request")
        caption = (
            self._format(p, "caption", MAX_CAPTION_LENGTH, "message caption is too long")
            if p.text("caption")
            else FormattedText("")
        )
        markup = _reply_markup(p, inline_only=False)
        chat = self._chat(p)
        self._check_can_write(chat)
        self._spend(chat)
        sent = (
            SentDocument(
                upload.file_name, upload.content, upload.mime_type, f"local-document-{next(self._file_ids)}"
            )
            if upload
            else SentDocument(None, b"", None, document)
        )
        message = self._post(chat, caption, p.text("caption"), markup, document=sent)
        return self._message_json(message)

    async def _edit_message_text(self, p: _Params) -> Any:
        formatted = self._format(p, "text", MAX_TEXT_LENGTH, "message is too long")
        markup = _reply_markup(p, inline_only=True)
        message = self._message_to_edit(p)
        if message.document is not None:
            raise _bad_request("there is no text in the message to edit")
        unchanged = (message.text, message.entities, message.reply_markup)
        if unchanged == (formatted.text, formatted.entities, markup):
            raise _not_modified()
        self._spend(self._chats[message.chat_id])
        message.text, message.entities, message.html = formatted.text, formatted.entities, p.text("text")
        message.reply_markup = markup  # omitting reply_markup removes the keyboard, as on Telegram
        return self._edited(message)

    async def _edit_message_reply_markup(self, p: _Params) -> Any:
        markup = _reply_markup(p, inline_only=True)
        message = self._message_to_edit(p)
        if message.reply_markup == markup:
            raise _not_modified()
        self._spend(self._chats[message.chat_id])
        message.reply_markup = markup
        return self._edited(message)

    async def _delete_message(self, p: _Params) -> Any:
        chat = self._chat(p)
        message = self._find(chat, p.integer("message_id"), "message to delete")
        if chat.type in ("group", "supergroup") and not message.from_bot and not chat.bot_can_delete:
            raise _bad_request("message can't be deleted")
        message.deleted = True
        self._emit(ChatEvent("deleted", chat.id, message))
        return True

    async def _answer_callback_query(self, p: _Params) -> Any:
        query_id = p.text("callback_query_id")
        query = self._queries.get(query_id)
        if query is None or query.answered:
            raise _bad_request("query is too old and response timeout expired or query ID is invalid")
        query.answered = True
        answer = CallbackAnswer(
            callback_query_id=query_id,
            text=p.text("text"),
            show_alert=p.flag("show_alert"),
            url=p.text("url") or None,
            chat_id=query.chat_id,
            message_id=query.message_id,
        )
        self.callback_answers.append(answer)
        message = self.message(query.chat_id, query.message_id)
        message.callback_answers.append(answer)
        self._emit(ChatEvent("answered", query.chat_id, message, answer))
        return True

    async def _set_my_commands(self, p: _Params) -> Any:
        commands = p.json("commands", "commands")
        if not isinstance(commands, list):
            raise _bad_request("expected an Array of BotCommand")
        if len(commands) > 100:
            raise _bad_request("BOT_COMMANDS_TOO_MUCH")
        stored = []
        for command in commands:
            if not isinstance(command, dict):
                raise _bad_request("can't parse BotCommand: expected an Object")
            for name in ("command", "description"):
                if not isinstance(command.get(name), str):
                    raise _bad_request(f"can't parse BotCommand: Can't find field \"{name}\"")
            name = command["command"].removeprefix("/").lower()
            if not _BOT_COMMAND_NAME_RE.fullmatch(name):
                raise _bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(command["description"].strip()) <= 256:
                raise _bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
            stored.append({"command": name, "description": command["description"]})
        key = (_command_scope(p), p.text("language_code"))
        if stored:
            self.commands[key] = stored
        else:
            self.commands.pop(key, None)
        return True

    async def _get_my_commands(self, p: _Params) -> Any:
        return self.commands.get((_command_scope(p), p.text("language_code")), [])

    async def _delete_my_commands(self, p: _Params) -> Any:
        self.commands.pop((_command_scope(p), p.text("language_code")), None)
        return True

    async def _send_chat_action(self, p: _Params) -> Any:
        if p.text("action").lower() not in CHAT_ACTIONS:
            raise _bad_request("wrong parameter action in request")
        self._check_can_write(self._chat(p))
        return True

    # ----------------------------------------------------------------- helpers

    def _format(self, p: _Params, name: str, limit: int, too_long: str) -> FormattedText:
        """Validate and parse text (or caption) exactly where Telegram counts its length."""
        raw = p.text(name)
        if len(raw.encode("utf-8", "surrogatepass")) > MAX_RAW_TEXT_BYTES:
            raise _bad_request("text is too long")
        mode = p.text("parse_mode").lower()
        if mode in ("", "none"):
            entities = p.json("entities" if name == "text" else "caption_entities", "entities")
            formatted = FormattedText(raw, entities if isinstance(entities, list) else [])
        elif mode == "html":
            try:
                formatted = parse_html(raw)
            except EntityParseError as exc:
                raise _bad_request(f"can't parse entities: {exc}") from None
        elif mode in ("markdown", "markdownv2"):
            raise _bad_request("the local Telegram implements parse_mode HTML only")
        else:
            raise _bad_request("unsupported parse_mode")
        trimmed = trim_formatted(formatted)
        if trimmed is None:
            raise _bad_request("text must be non-empty")
        # Measured in UTF-16 code units, the unit of every Bot API offset and length (MessageEntity):
        # an emoji outside the BMP counts 2. Of the two ways to count, this is the stricter one, so
        # a message the sandbox accepts is never "too long" on Telegram.
        if utf16_length(trimmed.text) > limit:
            raise _bad_request(too_long)
        return trimmed

    def _chat(self, p: _Params) -> _Chat:
        raw = p.text("chat_id")
        if not raw:
            raise _bad_request("chat_id is empty")
        chat_id = p.integer("chat_id")
        chat = self._chats.get(chat_id)  # no @username chats here
        if chat is None and chat_id in self._users:  # seen in a group, never wrote to the bot
            raise _ApiError(403, "Forbidden: bot can't initiate conversation with a user")
        if chat is None:
            raise _bad_request("chat not found")
        return chat

    def _check_can_write(self, chat: _Chat) -> None:
        if chat.type == "private" and chat.user_id in self._blocked:
            raise _ApiError(403, "Forbidden: bot was blocked by the user")

    def _spend(self, chat: _Chat, *, paid: bool = False) -> None:
        if self._flood is None:
            return
        retry_after = self._flood.acquire(chat, self._clock(), paid=paid)
        if retry_after:
            raise _ApiError(429, f"Too Many Requests: retry after {retry_after}", retry_after)

    def _find(self, chat: _Chat, message_id: int, what: str) -> ChatMessage:
        for message in chat.messages:
            if message.message_id == message_id and not message.deleted:
                return message
        raise _bad_request(f"{what} not found")

    def _message_to_edit(self, p: _Params) -> ChatMessage:
        if not p.text("chat_id") and not p.text("message_id"):
            if p.text("inline_message_id"):
                raise _bad_request("MESSAGE_ID_INVALID")  # no inline mode here
            raise _bad_request("message identifier is not specified")
        chat = self._chat(p)
        message = self._find(chat, p.integer("message_id"), "message to edit")
        if not message.from_bot:
            raise _bad_request("message can't be edited")
        self._check_can_write(chat)
        return message

    def _edited(self, message: ChatMessage) -> dict[str, Any]:
        message.edits += 1
        message.edit_date = self._now_unix()
        self._emit(ChatEvent("edited", message.chat_id, message))
        return self._message_json(message)

    def _post(
        self,
        chat: _Chat,
        formatted: FormattedText,
        raw: str,
        markup: dict[str, Any] | None,
        document: SentDocument | None = None,
    ) -> ChatMessage:
        message = ChatMessage(
            message_id=self._next_message_id(chat, None),
            chat_id=chat.id,
            from_bot=True,
            sender_id=None,
            text=formatted.text,
            html=raw,
            entities=formatted.entities,
            date=self._now_unix(),
            reply_markup=markup,
            document=document,
        )
        chat.messages.append(message)
        self._emit(ChatEvent("sent", chat.id, message))
        return message

    def _emit(self, event: ChatEvent) -> None:
        self.events.append(event)
        self._signal.notify()

    def _now_unix(self) -> int:
        return int(self._wall_clock())

    def _next_message_id(self, chat: _Chat, wanted: int | None) -> int:
        chat.last_activity = next(self._activity)
        message_id = chat.next_message_id if wanted is None else wanted
        if any(m.message_id == message_id for m in chat.messages):
            raise ValueError(f"message id {message_id} already used in chat {chat.id}")
        chat.next_message_id = max(chat.next_message_id, message_id + 1)
        return message_id

    def _remember_user(
        self, user_id: int, first_name: str | None, username: str | None, language_code: str | None
    ) -> dict[str, Any]:
        user = self._users.setdefault(
            user_id, {"id": user_id, "is_bot": False, "first_name": "Alice", "language_code": "en"}
        )
        profile = {"first_name": first_name, "username": username, "language_code": language_code}
        for key, value in profile.items():
            if value is not None:
                user[key] = value
        return user

    def _ensure_chat(self, chat_id: int, chat_type: ChatType, user_id: int) -> _Chat:
        chat = self._chats.get(chat_id)
        if chat is None:
            title = None if chat_type == "private" else f"{chat_type.title()} {chat_id}"
            partner = user_id if chat_type == "private" else None
            chat = self._chats[chat_id] = _Chat(chat_id, chat_type, title, partner)
        elif chat.type != chat_type:
            raise ValueError(f"chat {chat_id} is a {chat.type} chat, not {chat_type}")
        return chat

    def _chat_json(self, chat: _Chat) -> dict[str, Any]:
        if chat.type != "private":
            return {"id": chat.id, "type": chat.type, "title": chat.title}
        user = self._users[chat.user_id] if chat.user_id is not None else {}
        data = {"id": chat.id, "type": "private", "first_name": user.get("first_name", "")}
        if user.get("username"):
            data["username"] = user["username"]
        return data

    def _message_json(self, message: ChatMessage) -> dict[str, Any]:
        chat = self._chats[message.chat_id]
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": self._chat_json(chat),
        }
        if message.from_bot:
            data["from"] = self.bot_user
        elif message.sender_id is None:
            data["sender_chat"] = self._chat_json(chat)
        else:
            data["from"] = self._users[message.sender_id]
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        text_key, entities_key = ("caption", "caption_entities") if message.document else ("text", "entities")
        if message.document:
            doc = message.document
            data["document"] = {
                "file_id": doc.file_id,
                "file_unique_id": doc.file_id.rsplit("-", 1)[-1],
                "file_size": len(doc.content),
                **({"file_name": doc.file_name} if doc.file_name else {}),
                **({"mime_type": doc.mime_type} if doc.mime_type else {}),
            }
        if message.text:
            data[text_key] = message.text
        if message.entities:
            data[entities_key] = message.entities
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            data["reply_markup"] = message.reply_markup
        return data

    def _enqueue(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        update = {"update_id": next(self._update_ids), kind: payload}
        self._updates.append(update)
        self._signal.notify()
        return update

    def _confirm(self, offset: int) -> None:
        if offset > 0:
            while self._updates and self._updates[0]["update_id"] < offset:
                self._updates.popleft()
        elif offset < 0:
            while len(self._updates) > -offset:
                self._updates.popleft()

    def _deliverable(self) -> list[dict[str, Any]]:
        """Pending updates of allowed types; others are dropped, as Telegram drops them."""
        allowed = [u for u in self._updates if _update_kind(u) in self._allowed_updates]
        if len(allowed) != len(self._updates):
            self._updates = deque(allowed)
        return allowed

    def _callback(self, user_id: int, message: ChatMessage, data: str) -> str:
        user = self._remember_user(user_id, None, None, None)
        query_id = f"{self.bot_user['id']}{next(self._query_ids):012d}"
        self._queries[query_id] = _CallbackQuery(user_id, message.chat_id, message.message_id)
        if message.deleted:
            shown: dict[str, Any] = {
                "chat": self._chat_json(self._chats[message.chat_id]),
                "message_id": message.message_id,
                "date": 0,
            }
        else:
            shown = self._message_json(message)
        query = {"id": query_id, "from": user, "message": shown, "chat_instance": str(message.chat_id)}
        self._enqueue("callback_query", {**query, "data": data})
        return query_id

    def _member_update(self, user_id: int, *, old: str, new: str) -> None:
        chat = self._chats.get(user_id)
        if chat is None or chat.type != "private":
            return

        def member(status: str) -> dict[str, Any]:
            return {"status": status, "user": self.bot_user} | (
                {"until_date": 0} if status == "kicked" else {}
            )

        self._enqueue(
            "my_chat_member",
            {
                "chat": self._chat_json(chat),
                "from": self._users[user_id],
                "date": self._now_unix(),
                "old_chat_member": member(old),
                "new_chat_member": member(new),
            },
        )


class LocalBotSession(AiohttpSession):
    """aiogram's session without the 250 ms grace period on close.

    ``AiohttpSession.close`` sleeps so TLS connections can shut down; the local server speaks
    plain HTTP, and tests open and close many bots.
    """

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


@asynccontextmanager
async def running_local_telegram(
    *, host: str = "127.0.0.1", port: int = 0, **kwargs: Any
) -> AsyncIterator[LocalTelegram]:
    """``async with running_local_telegram(rate_limits=False) as tg:`` — a started server,
    closed on exit. ``kwargs`` go to :class:`LocalTelegram`."""
    telegram = LocalTelegram(**kwargs)
    await telegram.start(host=host, port=port)
    try:
        yield telegram
    finally:
        await telegram.close()


_Handler = Callable[[LocalTelegram, _Params], Awaitable[Any]]
_HANDLERS: dict[str, _Handler] = {
    "getMe": LocalTelegram._get_me,
    "getUpdates": LocalTelegram._get_updates,
    "deleteWebhook": LocalTelegram._delete_webhook,
    "setWebhook": LocalTelegram._set_webhook,
    "getWebhookInfo": LocalTelegram._get_webhook_info,
    "sendMessage": LocalTelegram._send_message,
    "sendDocument": LocalTelegram._send_document,
    "editMessageText": LocalTelegram._edit_message_text,
    "editMessageReplyMarkup": LocalTelegram._edit_message_reply_markup,
    "deleteMessage": LocalTelegram._delete_message,
    "answerCallbackQuery": LocalTelegram._answer_callback_query,
    "setMyCommands": LocalTelegram._set_my_commands,
    "getMyCommands": LocalTelegram._get_my_commands,
    "deleteMyCommands": LocalTelegram._delete_my_commands,
    "sendChatAction": LocalTelegram._send_chat_action,
}
_METHOD_NAMES = {name.lower(): name for name in _HANDLERS}  # Bot API method names are case-insensitive


async def _read_params(request: web.Request) -> _Params:
    values: dict[str, str] = dict(request.query)
    files: dict[str, _Upload] = {}
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise _bad_request("can't parse JSON encoded request parameters") from None
        if not isinstance(body, dict):
            raise _bad_request("can't parse JSON encoded request parameters")
        for key, value in body.items():
            if value is not None:
                values[key] = _param_string(value)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        for key, value in (await request.post()).items():
            if isinstance(value, web.FileField):
                files[key] = _Upload(value.filename, value.file.read(), value.content_type)
            else:
                values[key] = str(value)
    return _Params(values, files)


def _param_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _error_response(exc: _ApiError) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": exc.status, "description": exc.description}
    if exc.retry_after is not None:
        body["parameters"] = {"retry_after": exc.retry_after}
    return web.json_response(body, status=exc.status)


def _not_modified() -> _ApiError:
    return _bad_request(
        "message is not modified: specified new message content and reply markup are exactly the same "
        "as a current content and reply markup of the message"
    )


def _reply_markup(p: _Params, *, inline_only: bool) -> dict[str, Any] | None:
    """Validate ``reply_markup`` like the Bot API; an empty inline keyboard means none."""
    markup = p.json("reply_markup", "reply keyboard markup")
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise _bad_request("object expected as reply markup")
    if "inline_keyboard" in markup:
        rows = markup["inline_keyboard"]
        if not isinstance(rows, list):
            raise _bad_request('field "inline_keyboard" must be of type Array')
        for row in rows:
            if not isinstance(row, list):
                raise _bad_request(
                    'field "inline_keyboard" of the InlineKeyboardMarkup must be an Array of Arrays'
                )
            for button in row:
                _check_inline_button(button)
        return markup if any(rows) else None
    if inline_only:
        raise _bad_request("inline keyboard expected")
    if any(key in markup for key in ("keyboard", "remove_keyboard", "force_reply")):
        return markup
    return None


def _check_inline_button(button: Any) -> None:
    prefix = "can't parse inline keyboard button: "
    if not isinstance(button, dict):
        raise _bad_request(prefix + "InlineKeyboardButton must be an Object")
    if not isinstance(button.get("text"), str):
        raise _bad_request(prefix + 'Can\'t find field "text"')
    if not button["text"].strip():
        raise _bad_request("BUTTON_TEXT_INVALID")
    if url := button.get("url"):
        if not isinstance(url, str) or checked_link(url) is None:
            raise _bad_request("BUTTON_URL_INVALID")
        return
    data = button.get("callback_data")
    if data:
        if not isinstance(data, str):
            raise _bad_request(prefix + 'Field "callback_data" must be of type String')
        if len(data.encode("utf-8")) > MAX_CALLBACK_DATA_BYTES:
            raise _bad_request("BUTTON_DATA_INVALID")
        return
    other_kinds = (
        "callback_game",
        "pay",
        "switch_inline_query",
        "switch_inline_query_chosen_chat",
        "switch_inline_query_current_chat",
        "login_url",
        "web_app",
        "copy_text",
    )
    if not any(kind in button for kind in other_kinds):
        raise _bad_request(prefix + "Text buttons are unallowed in the inline keyboard")


def _command_scope(p: _Params) -> str:
    """A readable key for a BotCommandScope: ``default``, ``chat:42``, ``chat_member:42:7``..."""
    scope = p.json("scope", "BotCommandScope")
    if scope is None:
        return "default"
    if not isinstance(scope, dict) or not isinstance(scope.get("type"), str):
        raise _bad_request("can't parse BotCommandScope: BotCommandScope must be an Object")
    kind: str = scope["type"]
    if kind in ("default", "all_private_chats", "all_group_chats", "all_chat_administrators"):
        return kind
    if kind not in ("chat", "chat_administrators", "chat_member"):
        raise _bad_request("can't parse BotCommandScope: Unsupported type specified")
    if not scope.get("chat_id"):
        raise _bad_request("can't parse BotCommandScope: Empty chat_id specified")
    if kind == "chat_member":
        return f"{kind}:{scope['chat_id']}:{scope.get('user_id')}"
    return f"{kind}:{scope['chat_id']}"


def _command_entities(text: str) -> list[dict[str, Any]]:
    return [
        {
            "type": "bot_command",
            "offset": utf16_length(text[: match.start()]),
            "length": utf16_length(match.group()),
        }
        for match in _COMMAND_RE.finditer(text)
    ]


def _update_kind(update: dict[str, Any]) -> str:
    return next(key for key in update if key != "update_id")
