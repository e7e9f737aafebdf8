"""Shared wording: verdicts in plain words, what to do, relative times, exchange names."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta

from aiogram.utils.i18n import gettext as _
from aiogram.utils.i18n import ngettext

from bot.views.html import Html, code, html, join, plain
from services.core.verdicts import Verdict
from services.exchanges.hub import display_name
from services.threecommas.links import THREECOMMAS

_IP = re.compile(r"request ip:\s*([0-9a-fA-F.:]+)")
# Verdicts about the exchange or the way there, not about the key: at link time nothing can be
# concluded about the key, later they are outages that keysentry waits out.
TRANSIENT = frozenset({Verdict.RATE_LIMITED, Verdict.EXCHANGE_DOWN, Verdict.NETWORK, Verdict.CLOCK_SKEW})


def verdict_reason(verdict: str) -> str:
    """The classified reason in plain words."""
    reasons: dict[str, str] = {
        Verdict.OK: _("working"),
        Verdict.KEY_INVALID: _("API key revoked, deleted or never existed"),
        Verdict.PASSPHRASE_INVALID: _("the passphrase does not match the key"),
        Verdict.IP_NOT_ALLOWED: _("our IP address is not on the key's whitelist"),
        Verdict.KEY_EXPIRED: _("API key expired"),
        Verdict.PERMISSION_MISSING: _("the key lacks a permission keysentry needs"),
        Verdict.SIGNATURE_INVALID: _("the secret does not match the key"),
        Verdict.CLOCK_SKEW: _("our clock and the exchange's disagree"),
        Verdict.RATE_LIMITED: _("the exchange is rate-limiting requests"),
        Verdict.EXCHANGE_DOWN: _("the exchange is down or under maintenance"),
        Verdict.NETWORK: _("the exchange cannot be reached"),
        Verdict.UNKNOWN: _("unexpected answer from the exchange"),
    }
    return reasons.get(verdict, reasons[Verdict.UNKNOWN])


def ip_list(ips: Sequence[str]) -> Html:
    """Addresses to whitelist, each in <code> so a tap copies it."""
    return join(", ", [code(ip) for ip in ips])


def egress_line(ips: Sequence[str]) -> Html:
    """The one line that tells where keysentry connects from (empty when EGRESS_IPS is not set)."""
    if not ips:
        return Html("")
    return html(_("keysentry connects from {ips}: put it on your keys' IP whitelist."), ips=ip_list(ips))


def verdict_advice(
    verdict: str, detail: str = "", *, at_link: bool = False, egress_ips: Sequence[str] = ()
) -> Html:
    """What the user should do about it, in one or two sentences (HTML: the detail is escaped).

    ``at_link``: the key is being linked, so nothing is saved yet and there is no “Update API
    key” button to press; the way on is sending /link again. ``egress_ips`` (EGRESS_IPS) are the
    addresses to whitelist; without them, the address the exchange reported seeing, if any.
    """
    return plain(_advice(verdict, detail, at_link, egress_ips))  # plain words escaped, templates kept


def _advice(verdict: str, detail: str, at_link: bool, egress_ips: Sequence[str]) -> str:
    if verdict == Verdict.KEY_INVALID:
        if at_link:
            return _("Check that you copied the whole key, or create a new one, and send /link again.")
        return _("Delete the old key on the exchange, create a new one, then press “Update API key”.")
    if verdict == Verdict.IP_NOT_ALLOWED:
        seen = _IP.search(detail)
        ips = list(egress_ips) or ([seen.group(1)] if seen else [])
        where = ip_list(ips) if ips else _("the keysentry server's IP")
        if at_link:
            return html(
                _(
                    "Add {ip} to the key's IP whitelist in the exchange's API management, "
                    "then send /link again."
                ),
                ip=where,
            )
        return html(
            _(
                "Add {ip} to the key's IP whitelist in the exchange's API management, "
                "or press “Update API key” with a key that allows it."
            ),
            ip=where,
        )
    if verdict == Verdict.KEY_EXPIRED:
        if at_link:
            return _(
                "Create a new key (an IP-restricted key does not expire on most exchanges) "
                "and send /link again."
            )
        return _(
            "Create a new key (an IP-restricted key does not expire on most exchanges), "
            "then press “Update API key”."
        )
    if verdict == Verdict.PERMISSION_MISSING:
        return _(
            "Enable “Read” on the key (and “Trade” if you want to cancel orders from here), "
            "or create a new one."
        )
    if verdict == Verdict.PASSPHRASE_INVALID:
        if at_link:
            return _(
                "The key itself is fine. Send /link again with the key, its secret and the "
                "passphrase you chose when you created the key."
            )
        return _(
            "The key itself is fine: keep it. Press “Update API key” and send the key, its secret "
            "and the passphrase you chose when you created the key."
        )
    if verdict == Verdict.SIGNATURE_INVALID:
        if at_link:
            return _("The secret does not belong to this key: send /link again and paste both once more.")
        return _("Press “Update API key” and paste the key and its secret again.")
    if verdict in TRANSIENT:
        if at_link:
            return _(
                "This says nothing about your key: the exchange could not be asked right now. "
                "Send /link again in a few minutes."
            )
        return _("Nothing to do on your side: your key is not the problem. We keep checking.")
    return html(_("The exchange said: {detail}"), detail=code(detail[:200]))


def refusal_text(verdict: str, detail: str = "") -> Html:
    """An exchange refusing the key, in the same words for /orders and Cancel: reason, then fix."""
    return html(
        "❌ " + _("The exchange refused the key: {reason}.") + "\n{advice}",
        reason=verdict_reason(verdict),
        advice=verdict_advice(verdict, detail),
    )


def ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return _("never")
    return _("{duration} ago").format(duration=duration(now - moment))


def duration(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    if seconds < 60:
        return _("{n} s").format(n=seconds)
    if seconds < 3600:
        return _("{n} min").format(n=seconds // 60)
    if seconds < 86400:
        return _("{h} h {m} min").format(h=seconds // 3600, m=seconds % 3600 // 60)
    return _("{d} d {h} h").format(d=seconds // 86400, h=seconds % 86400 // 3600)


def connection_title(exchange: str, label: str, hint: str = "") -> Html:
    """'Binance · Main', HTML-escaped: labels are user text."""
    return plain(button_title(exchange, label, hint))


def button_title(exchange: str, label: str, hint: str = "") -> str:
    """'Binance · Main' for a button: button texts are plain text, never parsed as HTML.

    Without a label, the key hint (``Ab12…yz90``) tells two connections of one exchange apart.
    """
    name = exchange_name(exchange)
    if label:
        return f"{name} · {label}"
    return (
        f"{name} · {hint}" if hint.strip("…") else name
    )  # a bare "…" (a very short key) tells nothing apart


def deal_words(ref: object) -> str:
    """A stored deal reference in words: ``deal:123`` → "deal #123", ``smart_trade:7`` → "SmartTrade #7"."""
    kind, _sep, number = str(ref or "").partition(":")
    if kind == "smart_trade":
        return _("SmartTrade #{id}").format(id=number)
    return _("deal #{id}").format(id=number or "?")


def exchange_name(exchange_id: str) -> str:
    """How an exchange is spelled to the user: ccxt's own name for it (the one source of names);
    3Commas is no ccxt exchange."""
    if exchange_id == THREECOMMAS:
        return "3Commas"
    try:
        return display_name(exchange_id)
    except AttributeError:  # not a ccxt id (an old or damaged row): still say something readable
        return exchange_id.capitalize()


def out_of_date(command: str) -> str:
    """The one answer to a button whose object is gone, someone else's or changed since it was drawn."""
    return _("This button is out of date — send {command} again.").format(command=command)


# Counted 3Commas things, each its own ngettext so a sentence with two counts inflects both
# (Russian has three forms: 1 сделка, 2 сделки, 5 сделок).


def deals_words(n: int) -> str:
    return ngettext("{n} deal", "{n} deals", n).format(n=n)


def smart_trades_words(n: int) -> str:
    return ngettext("{n} SmartTrade", "{n} SmartTrades", n).format(n=n)


def accounts_words(n: int) -> str:
    return ngettext("{n} account", "{n} accounts", n).format(n=n)


def bots_words(n: int) -> str:
    return ngettext("{n} bot", "{n} bots", n).format(n=n)
