"""What a 3Commas call can fail with, each error carrying the verdict it means for the user."""

from __future__ import annotations

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
    """401: the 3Commas key is revoked, expired or unknown, or the secret does not match it."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.SIGNATURE_INVALID if self.error == "signature_invalid" else Verdict.KEY_INVALID


class PermissionDenied(ThreeCommasError):
    """403: the key lacks the permission (e.g. a read-only key asked to trade) or the action is refused."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.PERMISSION_MISSING


class PlanRestricted(PermissionDenied):
    """3Commas' subscription-plan refusal. It arrives as a 429 but waiting never helps."""


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
    """418: 3Commas banned us for ignoring 429s; no call is made until ``retry_after`` has passed."""


class Unavailable(ThreeCommasError):
    """5xx, timeout, connection failure or an unreadable answer: says nothing about the key."""

    @property
    def verdict(self) -> Verdict:
        return Verdict.NETWORK if self.status == 0 else Verdict.EXCHANGE_DOWN
