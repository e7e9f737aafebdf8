"""Chat with the bot from a terminal, through the local Telegram.

``make run`` without a ``BOT_TOKEN`` starts the real bot against :class:`LocalTelegram`; this
module is the "Telegram app" for that: lines typed here become the user's messages, and the
bot's messages, edits, deletions and button answers are printed as they happen. Inline
buttons are numbered so they can be pressed by typing the number.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

from sandbox.telegram import ChatEvent, ChatMessage, LocalTelegram

InputFunc = Callable[[], Awaitable[str]]
"""Returns the next typed line; raises ``EOFError`` when input ends (like ``input()``)."""

_PRESS_RE = re.compile(r"(?:(\d+)\.)?(\d+)")  # "2" = button 2 of the latest keyboard, "7.2" = of message 7
_SGR = {"bold": "1", "italic": "3", "underline": "4", "strikethrough": "9", "spoiler": "2", "text_link": "4"}
_CODE_SGR = "36"
_RESET = "\x1b[0m"


async def run_terminal_chat(
    tg: LocalTelegram,
    user_id: int,
    *,
    banner: str,
    input_func: InputFunc | None = None,
    output: TextIO | None = None,
    first_name: str | None = None,
    language_code: str | None = None,
    downloads: Path | None = None,
) -> None:
    """Print ``banner``, then relay typed lines to the bot and print what it does, until
    ``/quit`` or end of input. A bare number presses that button on the latest keyboard;
    ``M.N`` presses button N of message M. Files the bot sends are saved in ``downloads``
    (where a Telegram app would download them) and the path is printed.

    ``input_func`` and ``output`` default to stdin (read on a daemon thread, so the event loop
    never blocks and shutdown never waits for a pending ``input()``) and stdout; bold and the
    like are ANSI-styled only when ``output`` is a terminal.
    """
    out = output or sys.stdout
    read = input_func or _stdin_reader()
    view = _ChatView(tg, user_id, out, ansi=_is_tty(out), downloads=downloads)
    view.say(banner)
    follower = asyncio.create_task(view.follow())
    try:
        while True:
            try:
                line = (await read()).strip()
            except EOFError:
                break
            if line == "/quit":
                break
            if not line:
                continue
            view.show_new_events()  # keep output in order: what the bot did before this line first
            if press := _PRESS_RE.fullmatch(line):
                view.press(int(press[1]) if press[1] else None, int(press[2]))
            else:
                tg.user_sends(user_id, line, first_name=first_name, language_code=language_code)
    finally:
        follower.cancel()
        with suppress(asyncio.CancelledError):
            await follower
        view.show_new_events()


def render_text(text: str, entities: list[dict[str, Any]], *, ansi: bool) -> str:
    """Message text for a terminal: links as ``text (url)``; bold, italic, underline,
    strikethrough, spoilers and code as ANSI styles when ``ansi``, else plain."""
    index_at: dict[int, int] = {}
    utf16 = 0
    for index, char in enumerate(text):
        index_at[utf16] = index
        utf16 += 2 if ord(char) > 0xFFFF else 1
    index_at[utf16] = len(text)

    styles: list[set[str]] = [set() for _ in text]
    link_ends: dict[int, list[str]] = {}
    for entity in entities:
        start = index_at.get(entity["offset"])
        end = index_at.get(entity["offset"] + entity["length"])
        if start is None or end is None:
            continue
        kind = entity["type"]
        code = _CODE_SGR if kind in ("code", "pre") else _SGR.get(kind)
        if code:
            for styled in styles[start:end]:
                styled.add(code)
        if kind == "text_link" and entity.get("url") != text[start:end]:
            link_ends.setdefault(end, []).append(entity["url"])

    pieces: list[str] = []
    current: set[str] = set()
    for index, char in enumerate(text):
        if ansi and styles[index] != current:
            current = styles[index]
            pieces.append(_RESET + "".join(f"\x1b[{code}m" for code in sorted(current)))
        pieces.append(char)
        for url in link_ends.get(index + 1, []):
            if ansi and current:
                pieces.append(_RESET)
                current = set()
            pieces.append(f" ({url})")
    if ansi and current:
        pieces.append(_RESET)
    return "".join(pieces)


class _ChatView:
    """What the user sees of their private chat with the bot."""

    def __init__(
        self, tg: LocalTelegram, user_id: int, out: TextIO, *, ansi: bool, downloads: Path | None = None
    ) -> None:
        self.tg = tg
        self.downloads = downloads
        self.chat_id = user_id
        self.out = out
        self.ansi = ansi
        self.seen_events = 0
        self.shown: dict[int, tuple[str, Any]] = {}  # message id -> (text, markup) last printed

    async def follow(self) -> None:
        while True:
            await self.tg.wait_for(lambda: len(self.tg.events) > self.seen_events, timeout=None)
            self.show_new_events()

    def show_new_events(self) -> None:
        events = self.tg.events[self.seen_events :]
        self.seen_events += len(events)
        for event in events:
            if event.chat_id == self.chat_id:
                self._show(event)
        self.out.flush()

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def press(self, message_id: int | None, number: int) -> None:
        message = self._keyboard_message(message_id)
        if message is None:
            self.say("(no message with buttons to press)")
            return
        flat = [button for row in (message.reply_markup or {})["inline_keyboard"] for button in row]
        if not 1 <= number <= len(flat):
            self.say(f"(message #{message.message_id} has buttons 1-{len(flat)})")
            return
        button = flat[number - 1]
        if button.get("callback_data"):
            self.tg.user_presses(self.chat_id, message, number - 1)
        else:
            target = button.get("url") or "something only the Telegram app can open"
            self.say(f"(that button opens {target})")

    def _keyboard_message(self, message_id: int | None) -> ChatMessage | None:
        candidates = [m for m in self.tg.bot_messages(self.chat_id) if m.buttons]
        if message_id is not None:
            candidates = [m for m in candidates if m.message_id == message_id]
        return candidates[-1] if candidates else None

    def _show(self, event: ChatEvent) -> None:
        message = event.message
        if event.kind == "answered":
            answer = event.answer
            if answer is not None and answer.text:
                self.say(f"bot {'alert' if answer.show_alert else 'notice'}: {answer.text}")
            return
        if event.kind == "deleted":
            self.shown.pop(message.message_id, None)
            if message.from_bot:
                self.say(f"bot #{message.message_id} (deleted)")
            else:
                self.say(f"(the bot deleted your message #{message.message_id})")
            return
        state = (message.text, message.reply_markup)
        if message.deleted or self.shown.get(message.message_id) == state:
            return  # already printed in this state, or gone before we got to it
        self.shown[message.message_id] = state
        label = f"bot #{message.message_id}" + (" (edited)" if event.kind == "edited" else "")
        body = render_text(message.text, message.entities, ansi=self.ansi)
        if message.document is not None:
            document = message.document
            name = document.file_name or document.file_id
            where = ""
            if self.downloads is not None:
                self.downloads.mkdir(parents=True, exist_ok=True)
                saved = self.downloads.resolve() / Path(name).name  # never a path the bot chose
                saved.write_bytes(document.content)
                where = f", saved to {saved}"
            body = f"[file {name}, {len(document.content)} bytes{where}] {body}".rstrip()
        indent = " " * (len(label) + 2)
        self.say(f"{label}: " + body.replace("\n", "\n" + indent))
        number = 1
        for row in (message.reply_markup or {}).get("inline_keyboard", []):
            labels = []
            for button in row:
                labels.append(f"[{number}] {button['text']}")
                number += 1
            self.say(indent + "  ".join(labels))


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _stdin_reader() -> InputFunc:
    """Read stdin lines on a daemon thread and hand them to the event loop."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)
        except RuntimeError:  # the loop closed while we were reading: nobody is listening
            return

    threading.Thread(target=pump, name="terminal-chat-stdin", daemon=True).start()

    async def read() -> str:
        line = await lines.get()
        if line is None:
            raise EOFError
        return line

    return read
