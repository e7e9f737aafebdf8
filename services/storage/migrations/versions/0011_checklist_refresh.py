"""checklist refresh: when a recovery checklist's next background redraw is due, and what it shows

Several workers share one database; each open, shown checklist is redrawn by one of them per
interval (services/threecommas/checklist.py: ``claim_due_checklists``). ``refresh_due_at`` NULL
means due now; ``shown_digest`` is the digest of the text last put on screen, so a redraw that
would change nothing is not sent (it used to live in each worker's memory).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 10:00:00
"""

import sqlalchemy as sa
from alembic import op

from services.storage.models import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("recovery_checklists", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refresh_due_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("shown_digest", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Dropping a column rebuilds the table on SQLite: keep its AUTOINCREMENT (0004, 0006).
    with op.batch_alter_table(
        "recovery_checklists", schema=None, table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.drop_column("shown_digest")
        batch_op.drop_column("refresh_due_at")
