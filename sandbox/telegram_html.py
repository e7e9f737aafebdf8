"""Telegram's HTML formatting, parsed the way the Bot API parses it.

The local Telegram has to reject exactly what the real one rejects: a bot that passes the
sandbox with an unescaped ``<`` and then fails in production is the bug this module exists to
catch. So this is a port of TDLib's ``parse_html`` (``td/telegram/MessageEntity.cpp``) rather
than a general HTML parser: the same tag set, the same lenient handling of ``&`` (a bare ``&``
or an unknown ``&name;`` stays literal text, as on Telegram), the same byte offsets in error
messages, and the same trimming afterwards (``fix_formatted_text``), because the 4096-character
limit applies to the text *after* all of that.

Offsets and lengths of entities are in UTF-16 code units, like the Bot API's ``MessageEntity``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

_SUPPORTED_TAGS = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "tg-time",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_SIMPLE_ENTITY_TYPES = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "u": "underline",
    "ins": "underline",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}
_NAMED_ENTITIES = {b"lt": "<", b"gt": ">", b"amp": "&", b"quot": '"'}
_SPACES = frozenset(b" \t\r\n\v\0")  # TDLib's is_space: NUL counts, so scans stop at the end
_NUL, _AMP, _LT, _GT, _SLASH, _EQ = 0, ord("&"), ord("<"), ord(">"), ord("/"), ord("=")
_QUOTES = frozenset(b"\"'")
_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")
_NAME_TOKEN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


class EntityParseError(ValueError):
    """The text is not valid Telegram HTML; ``str(exc)`` is TDLib's wording, e.g.
    ``Unsupported start tag "foo" at byte offset 12``."""


@dataclass(frozen=True)
class FormattedText:
    """Visible text plus Bot API ``MessageEntity`` dicts (UTF-16 offsets)."""

    text: str
    entities: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _OpenTag:
    name: str
    argument: str
    date: int
    utf16_offset: int
    byte_offset: int  # into the decoded output, to take an <a> without href's text as its URL


def utf16_length(text: str) -> int:
    """Length in UTF-16 code units, the unit of every Bot API entity offset."""
    return len(text.encode("utf-16-le")) // 2


def parse_html(source: str) -> FormattedText:
    """Parse Telegram's HTML subset into visible text and entities (not yet trimmed).

    Raises :class:`EntityParseError` for everything TDLib rejects: unknown tags, unclosed or
    mismatched tags, a bare ``<``, attributes that are not name tokens or quoted strings.
    """
    data = source.encode("utf-8", "surrogatepass") + b"\0"  # TDLib reads past the end into NUL
    size = len(data) - 1
    out = bytearray()
    utf16 = 0
    entities: list[dict[str, Any]] = []
    stack: list[_OpenTag] = []
    i = 0
    while i < size:
        byte = data[i]
        if byte == _AMP:
            decoded = _decode_entity(data, i)
            if decoded is not None:
                char, i = decoded
                utf16 += 2 if ord(char) > 0xFFFF else 1
                out += char.encode("utf-8", "surrogatepass")
                continue
        if byte != _LT:
            if byte & 0xC0 != 0x80:  # first byte of a UTF-8 sequence
                utf16 += 2 if byte >= 0xF0 else 1
            out.append(byte)
            i += 1
            continue

        begin = i
        i += 1
        if data[i] != _SLASH:
            while data[i] not in _SPACES and data[i] != _GT:
                i += 1
            if data[i] == _NUL:
                raise EntityParseError(f"Unclosed start tag at byte offset {begin}")
            tag = _lower(data[begin + 1 : i])
            if tag not in _SUPPORTED_TAGS:
                raise EntityParseError(f'Unsupported start tag "{tag}" at byte offset {begin}')
            i, argument, date = _parse_attributes(data, i, tag, begin)
            if tag == "span" and argument != "spoiler":
                raise EntityParseError(f'Tag "span" must have class "tg-spoiler" at byte offset {begin}')
            stack.append(_OpenTag(tag, argument, date, utf16, len(out)))
        else:
            if not stack:
                raise EntityParseError(f"Unexpected end tag at byte offset {begin}")
            while data[i] not in _SPACES and data[i] != _GT:
                i += 1
            end_tag = _lower(data[begin + 2 : i])
            while data[i] in _SPACES and data[i] != _NUL:
                i += 1
            if data[i] != _GT:
                raise EntityParseError(f"Unclosed end tag at byte offset {begin}")
            opened = stack.pop()
            if end_tag and end_tag != opened.name:
                raise EntityParseError(
                    f'Unmatched end tag at byte offset {begin}, expected "</{opened.name}>", '
                    f'found "</{end_tag}>"'
                )
            if utf16 > opened.utf16_offset:
                _close_entity(entities, opened, utf16, bytes(out[opened.byte_offset :]))
        i += 1  # past '>'

    if stack:
        raise EntityParseError(f'Can\'t find end tag corresponding to start tag "{stack[-1].name}"')
    try:
        text = out.decode("utf-8")
    except UnicodeDecodeError:
        raise EntityParseError(
            "Text contains invalid Unicode characters after decoding HTML entities, "
            "check for unmatched surrogate code units"
        ) from None
    for entity in entities:
        if entity["type"] == "code":
            entity.pop("language", None)
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return FormattedText(text, entities)


def trim_formatted(formatted: FormattedText) -> FormattedText | None:
    """Trim like TDLib's ``fix_formatted_text``; ``None`` means nothing visible is left.

    Trailing whitespace always goes; leading spaces and newlines go only up to the first
    entity. Entities are clipped to what remains.
    """
    text = formatted.text.rstrip()
    if not text:
        return None
    end = utf16_length(text)
    entities = []
    for entity in formatted.entities:
        if entity["offset"] >= end:
            continue
        entities.append({**entity, "length": min(entity["length"], end - entity["offset"])})
    first_entity = min((e["offset"] for e in entities), default=end)
    strip = 0
    while strip < len(text) and strip < first_entity and text[strip] in " \n":
        strip += 1
    if strip:
        text = text[strip:]
        entities = [{**e, "offset": e["offset"] - strip} for e in entities]
    return FormattedText(text, entities)


def checked_link(url: str) -> str | None:
    """The URL Telegram would keep for a link, or ``None`` if it would drop it.

    Mirrors TDLib's ``LinkManager::check_link``: ``tg:``/``ton:`` links pass, HTTP(S) links
    need a dotted host, a missing scheme means ``http://``, anything else is refused.
    """
    lowered = url.lower()
    if lowered.startswith(("tg:", "ton:", "tonsite:")):
        return url
    candidate = url if "://" in url else f"http://{url}"
    try:
        parts = urlsplit(candidate)
    except ValueError:
        return None
    if parts.scheme.lower() not in {"http", "https"} or "." not in (parts.hostname or ""):
        return None
    return candidate


def _lower(raw: bytes) -> str:
    return raw.lower().decode("utf-8", "replace")  # ASCII-only lowering, like td::to_lower


def _decode_entity(data: bytes, pos: int) -> tuple[str, int] | None:
    """Decode ``&lt;``/``&#62;``/``&#x3e;`` at ``pos``; ``None`` leaves the ``&`` literal.

    The semicolon is optional, exactly as in TDLib.
    """
    end = pos + 1
    code = 0
    if data[pos + 1] == ord("#"):
        end += 1
        if data[pos + 2] == ord("x"):
            end += 1
            while data[end] in _HEX_DIGITS:
                code = code * 16 + int(chr(data[end]), 16)
                end += 1
        else:
            while data[end : end + 1].isdigit():
                code = code * 10 + data[end] - ord("0")
                end += 1
        if code == 0 or code >= 0x10FFFF or end - pos >= 10:
            return None
        char = chr(code)
    else:
        while data[end : end + 1].isalpha():
            end += 1
        named = _NAMED_ENTITIES.get(data[pos + 1 : end])
        if named is None:
            return None
        char = named
    if data[end] == ord(";"):
        end += 1
    return char, end


def _parse_attributes(data: bytes, i: int, tag: str, begin: int) -> tuple[int, str, int]:
    """Read attributes up to the closing ``>``; return (index of '>', argument, unix date)."""
    argument = ""
    date = 0
    while data[i] != _GT:
        while data[i] != _NUL and data[i] in _SPACES:
            i += 1
        if data[i] == _GT:
            break
        name_begin = i
        while data[i] not in _SPACES and data[i] not in (_EQ, _GT, _SLASH) and data[i] not in _QUOTES:
            i += 1
        name = data[name_begin:i].decode("utf-8", "replace")
        if not name:
            raise EntityParseError(f'Empty attribute name in the tag "{tag}" at byte offset {begin}')
        while data[i] != _NUL and data[i] in _SPACES:
            i += 1
        if data[i] != _EQ:
            if data[i] == _NUL:
                raise EntityParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')
            if tag == "blockquote" and name == "expandable":
                argument = "1"
            continue
        i += 1
        while data[i] != _NUL and data[i] in _SPACES:
            i += 1
        if data[i] == _NUL:
            raise EntityParseError(f'Unclosed start tag "{tag}" at byte offset {begin}')

        if data[i] not in _QUOTES:
            token_begin = i
            while data[i] in _NAME_TOKEN:
                i += 1
            value = _lower(data[token_begin:i])
            if data[i] not in _SPACES and data[i] != _GT:
                raise EntityParseError(f"Unexpected end of name token at byte offset {token_begin}")
        else:
            quote = data[i]
            i += 1
            raw = bytearray()
            while data[i] != quote and data[i] != _NUL:
                if data[i] == _AMP and (decoded := _decode_entity(data, i)) is not None:
                    char, i = decoded
                    raw += char.encode("utf-8", "surrogatepass")
                    continue
                raw.append(data[i])
                i += 1
            if data[i] == quote:
                i += 1
            value = raw.decode("utf-8", "replace")
        if data[i] == _NUL:
            raise EntityParseError(f"Unclosed start tag at byte offset {begin}")

        if tag == "a" and name == "href":
            argument = value
        elif tag == "code" and name == "class" and value.startswith("language-"):
            argument = value.removeprefix("language-")
        elif tag == "span" and name == "class" and value.startswith("tg-"):
            argument = value.removeprefix("tg-")
        elif tag == "tg-emoji" and name == "emoji-id":
            argument = value
        elif tag == "blockquote" and name == "expandable":
            argument = "1"
        elif tag == "tg-time" and name == "unix":
            date = int(value) if value.lstrip("-").isdigit() else 0
        elif tag == "tg-time" and name == "format":
            argument = value
    return i, argument, date


def _nested_partner(
    entities: list[dict[str, Any]], kind: str, offset: int, length: int
) -> dict[str, Any] | None:
    """The entity closed just before, when it is a ``kind`` over exactly the same text: a
    ``<pre>`` and a ``<code>`` nested either way round make one pre entity with a language."""
    last = entities[-1] if entities else None
    if last and last["type"] == kind and (last["offset"], last["length"]) == (offset, length):
        return last
    return None


def _close_entity(entities: list[dict[str, Any]], tag: _OpenTag, end_utf16: int, inner: bytes) -> None:
    """Turn a closed tag into a MessageEntity dict (or nothing, e.g. a link Telegram drops)."""
    offset, length = tag.utf16_offset, end_utf16 - tag.utf16_offset
    if tag.name in _SIMPLE_ENTITY_TYPES:
        entities.append({"type": _SIMPLE_ENTITY_TYPES[tag.name], "offset": offset, "length": length})
    elif tag.name == "tg-emoji":
        if not tag.argument.isdigit() or int(tag.argument) == 0:
            raise EntityParseError("Invalid custom emoji identifier specified")
        entities.append(
            {"type": "custom_emoji", "offset": offset, "length": length, "custom_emoji_id": tag.argument}
        )
    elif tag.name == "tg-time":
        if tag.date > 0:
            entity: dict[str, Any] = {"type": "date_time", "offset": offset, "length": length}
            entity["unix_time"] = tag.date
            if tag.argument:
                entity["date_time_format"] = tag.argument
            entities.append(entity)
    elif tag.name == "a":
        url = checked_link(tag.argument or inner.decode("utf-8", "replace"))
        if url is not None:
            entities.append({"type": "text_link", "offset": offset, "length": length, "url": url})
    elif tag.name == "pre":
        last = _nested_partner(entities, "code", offset, length)
        if last and last.get("language"):
            last["type"] = "pre"  # <pre><code class="language-x"> is one pre entity with a language
        else:
            entities.append({"type": "pre", "offset": offset, "length": length})
    elif tag.name == "code":
        last = _nested_partner(entities, "pre", offset, length)
        if last and tag.argument:
            last["language"] = tag.argument
        else:
            entity = {"type": "code", "offset": offset, "length": length}
            if tag.argument:
                entity["language"] = tag.argument  # kept only until a wrapping <pre> claims it
            entities.append(entity)
    else:  # blockquote
        kind = "expandable_blockquote" if tag.argument else "blockquote"
        entities.append({"type": kind, "offset": offset, "length": length})
