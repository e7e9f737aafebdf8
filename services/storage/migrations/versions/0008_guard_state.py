"""guard state: key-error signals and block waves shared by every worker, per egress route

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 11:00:00
"""

import sqlalchemy as sa
from alembic import op

from services.storage.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "guard_signals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("egress", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("connection_id", sa.Integer(), nullable=False),
        sa.Column("seen_at", UTCDateTime(), nullable=False),
        sa.Column("passed_recently", sa.Boolean(), nullable=False),
        sa.Column("proof", sa.Boolean(), nullable=False),
    )
    op.create_index("ix_guard_signals_scope", "guard_signals", ["service", "egress", "seen_at"])
    op.create_table(
        "guard_waves",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("egress", sa.String(length=64), nullable=False),
        sa.Column("verdict", sa.String(length=32), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen", UTCDateTime(), nullable=False),
        sa.Column("keys", sa.Integer(), nullable=False),
        sa.Column("announced_at", UTCDateTime(), nullable=True),
        sa.Column("cleared_until", UTCDateTime(), nullable=True),
        sa.UniqueConstraint("service", "egress", "verdict"),
    )


def downgrade() -> None:
    op.drop_table("guard_waves")
    op.drop_index("ix_guard_signals_scope", "guard_signals")
    op.drop_table("guard_signals")
