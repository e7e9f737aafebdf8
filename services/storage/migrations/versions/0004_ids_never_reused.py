"""ids never reused: AUTOINCREMENT for every table a button names

A Telegram button names a row by its id. Without AUTOINCREMENT SQLite hands the id of the newest
deleted row to the next insert, so an old "Yes, remove" or "Cancel" button would act on a new,
different object. SQLite can only add AUTOINCREMENT by rebuilding the table (batch mode);
PostgreSQL's serial ids never go back, so nothing changes there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 20:30:00
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Parents before children is not needed: foreign keys are off while migrating (services/storage/db.py).
TABLES = ("connections", "order_lists", "listed_orders", "threecommas_accounts", "failed_deals")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
