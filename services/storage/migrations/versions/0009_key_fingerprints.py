"""key fingerprints: a keyed hash of each connection's API key, to refuse linking one key twice;
how a listed order's deal ended

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 10:45:00

Rows linked before this revision get their fingerprint lazily, the first time the user links a key
of the same exchange (services/storage/connections.py: ``linked_with_key``): the migration has no
VAULT_KEY to open the credentials with.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("connections", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_fingerprint", sa.String(length=64), nullable=True))
    with op.batch_alter_table("listed_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deal_ended", sa.String(length=16), nullable=True))


def downgrade() -> None:
    # Dropping a column rebuilds the table on SQLite: keep its AUTOINCREMENT (0004).
    keep_ids = {"sqlite_autoincrement": True}
    with op.batch_alter_table("listed_orders", schema=None, table_kwargs=keep_ids) as batch_op:
        batch_op.drop_column("deal_ended")
    with op.batch_alter_table("connections", schema=None, table_kwargs=keep_ids) as batch_op:
        batch_op.drop_column("key_fingerprint")
