"""Every user-visible string in code has a translation in every shipped language, plural
entries with every form the language has (Russian three, Spanish two)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from bot.i18n import LANGUAGES, LOCALES_DIR

ROOT = Path(__file__).resolve().parent.parent
KEYWORDS = {"_": None, "__": None, "ngettext": (1, 2)}
PACKAGES = ("bot", "handlers", "sandbox")


def _strings_in_code() -> tuple[set[str], set[tuple[str, str]]]:
    singles: set[str] = set()
    plurals: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            if isinstance(message, str):
                singles.add(message)
            else:
                plurals.add((message[0], message[1]))
    return singles, plurals


STRINGS, PLURALS = _strings_in_code()


def _catalog(language: str) -> Catalog:
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as handle:
        return read_po(handle, locale=language)


def test_code_has_translatable_strings():
    assert len(STRINGS) > 20
    assert len(PLURALS) > 15


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_catalog_is_complete(language):
    catalog = _catalog(language)
    missing = sorted(s for s in STRINGS | {p[0] for p in PLURALS} if s not in catalog)
    assert not missing, f"{language}: {len(missing)} missing (run `make locales`): {missing[:5]}"
    if language != "en":
        untranslated = sorted(s for s in STRINGS if not catalog[s].string)
        assert not untranslated, f"{language}: {len(untranslated)} untranslated: {untranslated[:5]}"


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_plural_entries_have_every_form_of_the_language(language):
    catalog = _catalog(language)
    assert catalog.num_plurals == {"en": 2, "es": 2, "ru": 3}[language]
    for singular, plural in sorted(PLURALS):
        entry = catalog[singular]
        assert entry.pluralizable and entry.id == (singular, plural), f"{language}: {singular!r} not plural"
        forms = entry.string
        assert isinstance(forms, tuple) and len(forms) == catalog.num_plurals, (language, singular)
        if language != "en":
            assert all(forms), f"{language}: {singular!r} has an empty plural form"


@pytest.mark.parametrize("language", sorted(set(LANGUAGES) - {"en"}))
def test_placeholders_survive_translation(language):
    for message in _catalog(language):
        if not message.id or not message.string:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        expected = set(re.findall(r"{\w+}", ids[-1]))
        # A singular form may say "one" instead of {n}; the general (last) form names them all.
        for form in forms:
            assert set(re.findall(r"{\w+}", form)) <= expected, (message.id, form)
        assert set(re.findall(r"{\w+}", forms[-1])) == expected, (message.id, forms[-1])


def test_russian_refresh_is_not_mistaken_for_update_api_key():
    catalog = _catalog("ru")
    refresh = catalog["Refresh"].string
    update = catalog["Update API key"].string
    assert isinstance(refresh, str) and isinstance(update, str)
    assert not set(refresh.lower().split()) & set(update.lower().split()), (refresh, update)


def test_catalogs_compiled_by_many_processes_at_once_are_always_whole(tmp_path):
    """A fresh checkout started by several processes at once (xdist, workers): every `.mo` a
    reader finds parses, and no temporary file is left behind."""
    import gettext
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    from bot.i18n import compile_catalogs

    locales = tmp_path / "locales"
    shutil.copytree(LOCALES_DIR, locales, ignore=shutil.ignore_patterns("*.mo"))
    with ProcessPoolExecutor(4) as pool:
        list(pool.map(compile_catalogs, [locales] * 8))
    for language in LANGUAGES:
        folder = locales / language / "LC_MESSAGES"
        with (folder / "messages.mo").open("rb") as handle:
            gettext.GNUTranslations(handle)
        assert sorted(p.name for p in folder.iterdir()) == ["messages.mo", "messages.po"]
