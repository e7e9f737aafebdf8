"""The vocabulary of key health: what a probe can conclude about a connection."""

from __future__ import annotations

from enum import StrEnum

from services.core.vault import redact

DETAIL_MAX = 300
"""How much of what an exchange or 3Commas said is kept with a verdict, an incident or an error:
the width of every free-text detail column, so every writer cuts to it."""


def clip_detail(text: str) -> str:
    """What may be stored or shown of a free-text detail: every known credential and anything
    key-shaped masked (before cutting, so a clipped key never survives as a prefix), cut to fit."""
    return redact(text)[:DETAIL_MAX]


class Verdict(StrEnum):
    OK = "ok"
    KEY_INVALID = "key_invalid"
    # The key and secret are right, the passphrase (OKX, KuCoin, Bitget) is not: the fix is to
    # re-enter it, never to delete a working key.
    PASSPHRASE_INVALID = "passphrase_invalid"
    IP_NOT_ALLOWED = "ip_not_allowed"
    KEY_EXPIRED = "key_expired"
    PERMISSION_MISSING = "permission_missing"
    SIGNATURE_INVALID = "signature_invalid"
    CLOCK_SKEW = "clock_skew"
    RATE_LIMITED = "rate_limited"
    EXCHANGE_DOWN = "exchange_down"
    NETWORK = "network"
    UNKNOWN = "unknown"

    @property
    def is_key_problem(self) -> bool:
        """True when the user must act on the key itself (create, whitelist, re-permission)."""
        return self in _KEY_PROBLEMS

    @property
    def is_transient(self) -> bool:
        """True for failures on our side or the exchange's that say nothing about the key."""
        return self in _TRANSIENT


_KEY_PROBLEMS = frozenset(
    {
        Verdict.KEY_INVALID,
        Verdict.PASSPHRASE_INVALID,
        Verdict.IP_NOT_ALLOWED,
        Verdict.KEY_EXPIRED,
        Verdict.PERMISSION_MISSING,
        Verdict.SIGNATURE_INVALID,
    }
)
_TRANSIENT = frozenset({Verdict.RATE_LIMITED, Verdict.EXCHANGE_DOWN, Verdict.NETWORK})
