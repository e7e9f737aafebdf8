"""What a 3Commas call can fail with, each error carrying the verdict it means for the user."""

from __future__ import annotations

import re
from collections.abc import Mapping

from services.core.verdicts import Verdict

# --------------------------------------------------------------------------------------------
# Errors


class ThreeCommasError(Exception):
    """A failed 3Commas call: HTTP ``status`` (0 when no response), 3Commas' ``error`` code and text.

    ``attributes`` carries ``error_attributes`` (field → messages) from validation failures.
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str = "",
        *,
        attributes: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.status = status
        self.error = error
        self.message = message
        self.attributes = dict(attributes or {})
        text = f"3Commas {status or 'request'} {error}"
        super().__init__(f"{text}: {message}" if message else text)

    @property
    def verdict(self) -> Verdict:
        """What this failure says about the key, in the vocabulary of exchange probes."""
        return Verdict.UNKNOWN


class KeyInvalid(ThreeCommasError):
    """401: the 3Commas key is revoked, expired or unknown, the secret does not match it, or the
    request came from an IP address the key's whitelist does not allow.

    3Commas documents all three causes under one status (docs ``quick-start/8_errors``) and no
    separate body for the IP case, so a single 401 cannot tell "key gone" from "our IP is off
    the key's whitelist". :attr:`ip_possible` says which 401s carry that doubt; the verdict is
    ``ip_not_allowed`` only when 3Commas' text itself names the IP or the whitelist.
    """

    @property
    def verdict(self) -> Verdict:
        if self.error == "signature_invalid":
            return Verdict.SIGNATURE_INVALID
        if _IP_WORDS.search(f"{self.error} {self.message}"):
            return Verdict.IP_NOT_ALLOWED
        return Verdict.KEY_INVALID

    @property
    def ip_possible(self) -> bool:
        """True unless 3Commas said the signature is wrong: the key may be fine and our IP refused.

        The "our IP is blocked" guard counts these across keys: many keys turning 401 at once is
        3Commas refusing our address, not every user deleting their key.
        """
        return self.error != "signature_invalid"


_IP_WORDS = re.compile(r"\bip\b|whitelist|white-list|white list", re.IGNORECASE)


class PermissionDenied(ThreeCommasError):
    """403 from 3Commas naming a permission: the key lacks it (e.g. a read-only key asked to trade)."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.PERMISSION_MISSING


class PlanRestricted(ThreeCommasError):
    """The 3Commas subscription does not cover the request: a 429 naming the plan, or a 403
    "active subscription is required". Waiting never helps and the key is fine, so this is no
    key verdict: the trader has to renew the plan."""


class ActionRefused(ThreeCommasError):
    """403/422 for an action the resource's state does not allow ("deal cannot be cancelled",
    "Cant be cancelled"): the key is fine, the deal or SmartTrade is not in a state for it."""


class NotFound(ThreeCommasError):
    """404 (or 3Commas' 400 "Not found" for SmartTrades): the deal, trade, bot or account is gone."""


class RateLimited(ThreeCommasError):
    """429, or a local refusal while 3Commas' block is still running; retry after ``retry_after`` s."""

    def __init__(self, status: int, error: str, message: str = "", *, retry_after: float) -> None:
        super().__init__(status, error, message)
        self.retry_after = retry_after

    @property
    def verdict(self) -> Verdict:
        return Verdict.RATE_LIMITED


class Banned(RateLimited):
    """418: 3Commas banned our IP for ignoring 429s (2 minutes up to 3 days, docs
    ``quick-start/9_limits``). The ban covers every key sent from that IP, so every client
    behind it pauses until ``retry_after`` has passed, and the guard hears of it."""


class Unavailable(ThreeCommasError):
    """5xx, timeout, connection failure or an unreadable answer: says nothing about the key."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.NETWORK if self.status == 0 else Verdict.EXCHANGE_DOWN
