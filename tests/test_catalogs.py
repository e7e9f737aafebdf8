"""Every user-visible string in code has a translation in every shipped language."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import LANGUAGES, LOCALES_DIR

ROOT = Path(__file__).resolve().parent.parent


def _strings_in_code() -> set[str]:
    found: set[str] = set()
    for package in ("bot", "handlers"):
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map=[("**.py", "python")], keywords={"_": None, "__": None}
        ):
            found.add(message if isinstance(message, str) else message[0])
    return found


STRINGS = _strings_in_code()


def test_code_has_translatable_strings():
    assert len(STRINGS) > 20


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_catalog_is_complete(language):
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale=language)
    missing = sorted(s for s in STRINGS if s not in catalog)
    assert not missing, f"{language}: {len(missing)} missing (run `make locales`): {missing[:5]}"
    if language != "en":
        untranslated = sorted(s for s in STRINGS if not catalog[s].string)
        assert not untranslated, f"{language}: {len(untranslated)} untranslated: {untranslated[:5]}"


@pytest.mark.parametrize("language", sorted(set(LANGUAGES) - {"en"}))
def test_placeholders_survive_translation(language):
    import re

    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        catalog = read_po(handle, locale=language)
    for message in catalog:
        if message.id and message.string:
            placeholders = set(re.findall(r"{\w+}", message.id))
            assert placeholders == set(re.findall(r"{\w+}", message.string)), message.id
