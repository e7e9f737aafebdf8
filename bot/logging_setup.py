"""Logging with secrets redacted from every record, as text or JSON lines."""

from __future__ import annotations

import json
import logging
import sys

from services.core.vault import RedactingFilter


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("connection_id", "user_id", "update_id"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str, *, as_json: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Routine chatter of libraries (Alembic's "Context impl", "Will assume transactional DDL" on
    # every start; aiogram's per-update lines) stays out of a normal start; their warnings do not.
    for noisy in ("aiogram.event", "alembic", "apscheduler", "ccxt.base.exchange"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
