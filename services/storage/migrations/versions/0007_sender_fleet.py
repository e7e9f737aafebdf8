"""sender fleet: outbox priority and live senders

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 21:00:00
"""

import sqlalchemy as sa
from alembic import op

import services.storage.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=True))
    op.create_table(
        "outbox_senders",
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("seen_at", services.storage.models.UTCDateTime(), nullable=False),
        sa.Column("paused_until", services.storage.models.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("worker_id"),
    )


def downgrade() -> None:
    op.drop_table("outbox_senders")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("priority")
