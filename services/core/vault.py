"""Encryption of credentials at rest.

Credentials are a small dict (key, secret, passphrase) serialised to JSON and sealed with
Fernet. Several keys may be configured (newest first) so an operator can rotate: old tokens
still open, new ones are sealed with the newest key, and :func:`rotate` re-seals everything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class VaultError(Exception):
    """A credential blob could not be opened (wrong or missing VAULT_KEY)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    api_key: str
    secret: str
    passphrase: str | None = None

    def __repr__(self) -> str:  # never print secrets, even in tracebacks
        passphrase = "***" if self.passphrase else None
        return f"Credentials(api_key={mask(self.api_key)!r}, secret=***, passphrase={passphrase})"

    __str__ = __repr__


HINT_MAX_REVEALED = 8
"""A key hint shows at most this many characters of the key (first 4 and last 4)."""


def mask(value: str) -> str:
    """Short, non-secret hint of a key so a user can tell keys apart: ``Ab12…yz90``.

    First and last 4 characters of a key of 16 or more (API keys are 18 to 64 long), 2 and 2 of a
    shorter one, nothing of 8 or fewer: never more than :data:`HINT_MAX_REVEALED` characters, and
    never half the key. Each shown part is shorter than :data:`MIN_KNOWN_LENGTH`, so redaction by
    value never masks a hint.
    """
    if len(value) <= HINT_MAX_REVEALED:
        return "…"
    shown = HINT_MAX_REVEALED // 2 if len(value) >= 2 * HINT_MAX_REVEALED else HINT_MAX_REVEALED // 4
    return f"{value[:shown]}…{value[-shown:]}"


def generate_key() -> str:
    return Fernet.generate_key().decode()


def parse_keys(raw: str) -> list[str]:
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    for key in keys:
        Fernet(key.encode())  # raises ValueError on a malformed key
    return keys


class Vault:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise VaultError("no vault key configured")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        # Derived, never the Fernet key itself: a fingerprint leaks nothing about the vault key.
        self._hash_keys = [
            hashlib.sha256(b"keysentry key fingerprint\x00" + base64.urlsafe_b64decode(k)).digest()
            for k in keys
        ]

    def seal(self, credentials: Credentials) -> bytes:
        remember(credentials)
        payload = {"k": credentials.api_key, "s": credentials.secret}
        if credentials.passphrase:
            payload["p"] = credentials.passphrase
        return self._fernet.encrypt(json.dumps(payload).encode())

    def open(self, token: bytes) -> Credentials:
        try:
            payload = json.loads(self._fernet.decrypt(token))
        except InvalidToken:
            raise VaultError("credentials cannot be decrypted with the configured VAULT_KEY") from None
        credentials = Credentials(payload["k"], payload["s"], payload.get("p"))
        remember(credentials)
        return credentials

    def fingerprint(self, api_key: str) -> str:
        """A keyed hash of an API key under the newest vault key: tells whether a key is linked
        already without storing it in the clear (a plain hash of a key could be looked up)."""
        return _keyed_hash(self._hash_keys[0], api_key)

    def fingerprints(self, api_key: str) -> list[str]:
        """:meth:`fingerprint` under every configured vault key, newest first: a fingerprint taken
        before a rotation still matches until ``rotate-vault`` renews it."""
        return [_keyed_hash(secret, api_key) for secret in self._hash_keys]

    def reseal(self, token: bytes) -> bytes:
        """Re-encrypt under the newest key (MultiFernet.rotate)."""
        try:
            return self._fernet.rotate(token)
        except InvalidToken:
            raise VaultError("credentials cannot be decrypted with the configured VAULT_KEY") from None


# Long runs of key-like characters: exchange keys and secrets are 32-128 chars of base64/hex.
_SECRETISH = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/=_-]{24,}(?![A-Za-z0-9+/=_-])")


def _mask_if_random(match: re.Match[str]) -> str:
    # Keys and secrets mix letters and digits, or are long; identifiers such as exception class
    # names ("ConnectionDoesNotExistError") are shorter and have no digits, and stay readable.
    token = match.group(0)
    mixed = any(c.isdigit() for c in token) and any(c.isalpha() for c in token)
    return "[redacted]" if mixed or len(token) >= 32 else token


# Redaction by value: every credential this process has sealed or opened, whatever its length or
# shape (an 18-character Bybit key, an OKX passphrase), is masked wherever it appears. Values shorter
# than this stay: masking "abc" would mangle ordinary words and tells an attacker nothing useful.
MIN_KNOWN_LENGTH = 6
# Known values by their first MIN_KNOWN_LENGTH characters, longest first. A worker opens every
# user's credentials, so this holds tens of thousands of values: a regular expression of them all
# (one alternative each, rebuilt whenever a new one arrived) cost time in proportion to their
# number at every position of every text; a lookup per position does not grow with them.
_known: dict[str, list[str]] = {}


def remember(credentials: Credentials) -> None:
    """Register a credential's values so :func:`redact` masks them by value from now on."""
    for value in (credentials.api_key, credentials.secret, credentials.passphrase or ""):
        if len(value) < MIN_KNOWN_LENGTH:
            continue
        same_start = _known.setdefault(value[:MIN_KNOWN_LENGTH], [])
        if value not in same_start:
            same_start.append(value)
            same_start.sort(key=len, reverse=True)  # a value containing another is masked whole


def _mask_known(text: str) -> str:
    """Every known value in ``text`` replaced, leftmost first, the longest where several start."""
    if not _known:
        return text
    parts: list[str] = []
    kept = position = 0
    last = len(text) - MIN_KNOWN_LENGTH
    while position <= last:
        same_start = _known.get(text[position : position + MIN_KNOWN_LENGTH])
        found = next((v for v in same_start if text.startswith(v, position)), None) if same_start else None
        if found is None:
            position += 1
            continue
        parts += (text[kept:position], "[redacted]")
        position = kept = position + len(found)
    parts.append(text[kept:])
    return "".join(parts)


def redact(text: str) -> str:
    """Mask every known credential by value, then anything shaped like a key."""
    return _SECRETISH.sub(_mask_if_random, _mask_known(text))


# What a pasted key looks like in a chat message: a run of key characters, 16+ long with letters and
# digits (Bybit keys are 18), or 32+ long whatever it mixes. Commands, labels and words are not.
_KEYISH = re.compile(r"[A-Za-z0-9+/=_-]{16,}")


def carries_secret(text: str) -> bool:
    """Might ``text`` hold an API key or secret? Errs towards yes: such a message is deleted."""
    for match in _KEYISH.finditer(text):
        token = match.group(0)
        if len(token) >= 32 or (any(c.isdigit() for c in token) and any(c.isalpha() for c in token)):
            return True
    return False


class RedactingFilter(logging.Filter):
    """Masks anything that looks like a key in every log record, including exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None if record.exc_text else record.exc_info
        return True


def _keyed_hash(secret: bytes, api_key: str) -> str:
    return hmac.new(secret, api_key.encode(), hashlib.sha256).hexdigest()
