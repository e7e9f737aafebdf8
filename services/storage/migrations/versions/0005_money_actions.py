"""money actions: one row and a state per action that moves money

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 20:40:00
"""

import sqlalchemy as sa
from alembic import op

import services.storage.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "money_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=160), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("error", sa.String(length=300), nullable=False),
        sa.Column("sent_at", services.storage.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", services.storage.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", services.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "target"),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("money_actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_money_actions_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("money_actions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_money_actions_user_id"))
    op.drop_table("money_actions")
