"""Telegram HTML, escaped by construction: only our own templates carry tags.

Every value interpolated with :func:`html` is escaped unless it is already :class:`Html` (a
rendered template), so a label, a symbol or an exchange's error text can never become markup,
whoever forgets what. Button texts and callback answers are plain text: never pass them here.
"""

from __future__ import annotations

from html import escape


class Html(str):
    """Text that is already valid Telegram HTML: a rendered template, never raw outside text."""

    __slots__ = ()


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
