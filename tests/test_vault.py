"""The vault: round trip, rotation, and secrets kept out of logs and reprs."""

from __future__ import annotations

import logging

import pytest

from services.core.vault import Credentials, RedactingFilter, Vault, VaultError, generate_key, parse_keys

SECRET = "Qw3rtyUiop1234567890AsdfGhjkl0987654321"


def test_round_trip_with_passphrase():
    vault = Vault([generate_key()])
    blob = vault.seal(Credentials("KEY1234567890", SECRET, "pass phrase"))
    assert SECRET.encode() not in blob
    assert vault.open(blob) == Credentials("KEY1234567890", SECRET, "pass phrase")


def test_rotation_old_tokens_still_open_and_reseal_moves_to_new_key():
    old, new = generate_key(), generate_key()
    blob = Vault([old]).seal(Credentials("k", SECRET))
    rotating = Vault([new, old])
    assert rotating.open(blob).secret == SECRET
    assert Vault([new]).open(rotating.reseal(blob)).secret == SECRET


def test_wrong_key_is_a_clear_error():
    blob = Vault([generate_key()]).seal(Credentials("k", SECRET))
    with pytest.raises(VaultError, match="VAULT_KEY"):
        Vault([generate_key()]).open(blob)


def test_parse_keys_rejects_garbage():
    with pytest.raises(ValueError):
        parse_keys("not-a-key")
    assert len(parse_keys(f"{generate_key()}, {generate_key()}")) == 2


def test_repr_never_shows_secret():
    creds = Credentials("ABCDEFGHIJKLMNOP", SECRET, "pp-secret")
    assert SECRET not in repr(creds) and "pp-secret" not in str(creds)


def test_log_filter_redacts_keys_in_messages_and_tracebacks(caplog):
    logger = logging.getLogger("keysentry.test")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="keysentry.test"):
        logger.info("binance said %s", f'{{"apiKey": "{SECRET}"}}')
        try:
            raise RuntimeError(f"signature {SECRET}")
        except RuntimeError:
            logger.exception("failed")
    text = caplog.text + "".join(r.exc_text or "" for r in caplog.records)
    assert SECRET not in text
    assert "[redacted]" in text


def test_identifiers_are_not_mistaken_for_keys():
    from services.core.vault import redact

    assert redact("asyncpg.exceptions.ConnectionDoesNotExistError") == (
        "asyncpg.exceptions.ConnectionDoesNotExistError"
    )
