"""gettext catalogs: compiled from `locales/*.po` at start-up, so the repository only holds sources."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from aiogram.utils.i18n import I18n
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LOCALES_DIR = Path(__file__).resolve().parent.parent / "locales"
DOMAIN = "messages"
DEFAULT_LANGUAGE = "en"
# Language code → name shown on the /language buttons (in its own language).
LANGUAGES = {"en": "English", "ru": "Русский", "es": "Español"}


def compile_catalogs(locales_dir: Path = LOCALES_DIR) -> None:
    """Write each `.mo` whose `.po` is newer; cheap when nothing changed.

    Several processes may start at once (workers, test processes) on a fresh checkout, so each
    `.mo` is written to a temporary file and renamed into place: a reader never sees half of one.
    """
    for po_path in locales_dir.glob(f"*/LC_MESSAGES/{DOMAIN}.po"):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file, locale=po_path.parent.parent.name)
        fd, temp_name = tempfile.mkstemp(dir=mo_path.parent, prefix=f".{DOMAIN}-", suffix=".mo")
        try:
            with os.fdopen(fd, "wb") as mo_file:
                write_mo(mo_file, catalog)
            os.replace(temp_name, mo_path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


def build_i18n(locales_dir: Path = LOCALES_DIR) -> I18n:
    compile_catalogs(locales_dir)
    return I18n(path=locales_dir, default_locale=DEFAULT_LANGUAGE, domain=DOMAIN)


def pick_language(telegram_code: str | None) -> str:
    """The shipped language closest to what the user's Telegram client reports."""
    code = (telegram_code or "").split("-")[0].lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE
