"""Entry point: ``python -m bot [serve|worker|migrate|rotate-vault] [--webhook]``.

With no ``BOT_TOKEN`` the local sandbox starts instead: a local Telegram, local exchanges and
a terminal chat, so the whole bot can be tried without any account anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from bot.settings import Settings, SettingsError, load_settings
from services.core.vault import generate_key


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument(
        "role",
        nargs="?",
        default="all",
        choices=["all", "serve", "worker", "migrate", "rotate-vault", "sandbox"],
        help="all (default): everything in one process; serve: Telegram side only; "
        "worker: polling and sending only; migrate: bring the database schema up to date and exit; "
        "rotate-vault: re-encrypt secrets under the newest VAULT_KEY",
    )
    parser.add_argument(
        "--webhook", action="store_true", help="receive updates by webhook instead of polling"
    )
    return parser.parse_args(argv)


def _require_vault_key(settings: Settings) -> None:
    if not settings.vault_key:
        print(
            "VAULT_KEY is missing: keysentry encrypts every API secret with it. "
            f"Add this freshly generated key to your .env and start again:\nVAULT_KEY={generate_key()}",
            file=sys.stderr,
        )
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(error, file=sys.stderr)
        raise SystemExit(2) from None

    from bot.logging_setup import setup_logging

    setup_logging(settings.log_level, as_json=settings.log_json)
    if args.role == "sandbox" or (settings.is_sandbox and args.role == "all"):
        try:
            from sandbox.run import run_sandbox
        except ModuleNotFoundError:  # an installed bot (wheel, Docker image) has no sandbox
            print(
                "BOT_TOKEN is missing; example: 123456789:AAE... (from @BotFather). "
                "The sandbox runs from a repository checkout: make run",
                file=sys.stderr,
            )
            raise SystemExit(2) from None

        # Ctrl-C cancels the chat, the sandbox shuts down in order, then asyncio re-raises the
        # KeyboardInterrupt: leaving is what the user asked for, not an error worth a traceback.
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run_sandbox(settings))
        return
    if args.role == "migrate":
        from bot.runner import migrate

        asyncio.run(migrate(settings))
        return
    # Before the heavy imports (aiogram, ccxt: seconds): a missing key is refused at once.
    _require_vault_key(settings)
    from bot.runner import rotate_vault, run_roles

    if args.role == "rotate-vault":
        count = asyncio.run(rotate_vault(settings))
        print(f"re-encrypted {count} credential{'' if count == 1 else 's'} under the newest VAULT_KEY")
        return
    if not settings.bot_token and args.role in {"all", "serve"}:
        print("BOT_TOKEN is missing; example: 123456789:AAE... (from @BotFather)", file=sys.stderr)
        raise SystemExit(2)
    asyncio.run(run_roles(settings, role=args.role, webhook=args.webhook))


if __name__ == "__main__":
    main()
