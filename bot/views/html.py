"""Telegram HTML, escaped by construction, and cut into messages Telegram accepts.

Every value interpolated with :func:`html` is escaped unless it is already :class:`Html` (a
rendered template), so a label, a symbol or an exchange's error text can never become markup,
whoever forgets what. Button texts and callback answers are plain text: never pass them here.

Telegram's limit (4096) counts the *visible* text after parsing, in UTF-16 code units (the unit of
every Bot API offset; an emoji outside the BMP counts two): :func:`visible_length` measures that,
:func:`split` cuts a long text into messages that each fit and each stay valid HTML, and
:func:`pages` packs a list of entries into pages that fit. Every long message goes through them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from html import escape, unescape

TELEGRAM_LIMIT = 4096
"""Characters of visible text in one message, in UTF-16 code units (Bot API sendMessage: 1-4096
characters after entities parsing)."""


class Html(str):
    """Text that is already valid Telegram HTML: a rendered template, never raw outside text.

    Adding plain text to it escapes that text (``"🔴 " + bold(name)`` stays Html): markup only ever
    comes from templates, so concatenation cannot smuggle any in, nor turn Html back into text that
    a later :func:`join` would escape twice.
    """

    __slots__ = ()

    def __add__(self, other: str) -> Html:
        return Html(str.__add__(self, plain(other)))

    def __radd__(self, other: str) -> Html:
        return Html(str.__add__(plain(other), self))


def html(template: str, /, **values: object) -> Html:
    """``template.format(**values)`` with every value escaped unless it is :class:`Html`."""
    return Html(
        template.format(**{k: v if isinstance(v, Html) else escape(str(v)) for k, v in values.items()})
    )


def code(value: object) -> Html:
    """``<code>value</code>``, the value escaped."""
    return html("<code>{value}</code>", value=value)


def bold(value: object) -> Html:
    """``<b>value</b>``, the value escaped."""
    return html("<b>{value}</b>", value=value)


def italic(value: object) -> Html:
    """``<i>value</i>``, the value escaped."""
    return html("<i>{value}</i>", value=value)


def plain(value: object) -> Html:
    """A value as text that shows exactly as it is (escaped): for joining with :func:`join`."""
    return value if isinstance(value, Html) else Html(escape(str(value)))


def join(separator: str, parts: Iterable[object]) -> Html:
    """``separator.join(parts)``, every part not already :class:`Html` escaped (the separator is ours)."""
    return Html(escape(separator).join(plain(part) for part in parts))


# -- measuring and cutting ------------------------------------------------------------------------

# One token of our HTML: a tag, a character reference, or one character.
_TOKEN = re.compile(r"<[^>]*>|&(?:#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);|.", re.DOTALL)
_TAG_NAME = re.compile(r"</?\s*([a-zA-Z-]+)")


def _units(visible: str) -> int:
    return len(visible.encode("utf-16-le")) // 2


def visible_length(text: str) -> int:
    """What Telegram counts against its limit: the text without tags, references resolved, UTF-16."""
    return _units(unescape(re.sub(r"<[^>]*>", "", text)))


def split(text: Html, limit: int = TELEGRAM_LIMIT) -> list[Html]:
    """Messages of at most ``limit`` visible UTF-16 units, each valid HTML on its own.

    Cuts at the last paragraph break (empty line) outside any tag that leaves the first part at
    least half full, else the last line break outside tags, else between two characters; never
    inside a tag or a character reference. A tag open at a cut made inside it is closed there and
    opened again at the start of the next message.
    """
    messages: list[Html] = []
    rest = text
    while visible_length(rest) > limit:
        cut, still_open = _cut(rest, limit)
        if cut == 0:
            raise ValueError(f"a limit of {limit} cannot hold one character")
        closing = "".join(f"</{_name(tag)}>" for tag in reversed(still_open))
        messages.append(Html(rest[:cut].rstrip() + closing))
        rest = Html("".join(still_open) + rest[cut:].lstrip("\n"))
    messages.append(rest)
    return messages


def _name(tag: str) -> str:
    match = _TAG_NAME.match(tag)
    return match.group(1).lower() if match else ""


def _cut(text: str, limit: int) -> tuple[int, list[str]]:
    """Where to cut ``text`` so the part before holds at most ``limit`` visible units, and the tags
    open there."""
    stack: list[str] = []
    seen = 0
    paragraph = line = anywhere = 0
    open_at_anywhere: list[str] = []
    previous_newline = False
    for match in _TOKEN.finditer(text):
        token = match.group(0)
        if token.startswith("<") and len(token) > 1:
            if token.startswith("</"):
                name = _name(token)
                while stack and _name(stack.pop()) != name:
                    pass
            else:
                stack.append(token)
            continue
        units = _units(unescape(token)) if token.startswith("&") else _units(token)
        if seen + units > limit:
            break
        seen += units
        anywhere, open_at_anywhere = match.end(), list(stack)
        if token == "\n" and not stack:
            line = match.end()
            if previous_newline and seen * 2 >= limit:
                paragraph = match.end()
        previous_newline = token == "\n"
    if paragraph:
        return paragraph, []
    if line * 2 >= anywhere and line:
        return line, []
    return anywhere, open_at_anywhere


def pages(entries: Sequence[Html], *, room: int, most: int, gap: str = "\n\n") -> list[range]:
    """Consecutive runs of ``entries`` (at most ``most`` each) whose visible length, joined by
    ``gap``, fits ``room``: the limit minus what every page adds around them (head, foot). An
    entry that does not fit on its own gets a page to itself (:func:`split` cuts it there)."""
    runs: list[range] = []
    start, used = 0, 0
    spacing = visible_length(gap)
    for index, entry in enumerate(entries):
        size = visible_length(entry) + (spacing if index > start else 0)
        if index > start and (used + size > room or index - start >= most):
            runs.append(range(start, index))
            start, used, size = index, 0, visible_length(entry)
        used += size
    runs.append(range(start, len(entries)))
    return runs
