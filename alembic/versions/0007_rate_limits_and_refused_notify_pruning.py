"""rate_limits (shared request limits); payment_notifies pruned by received_at

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )
    with op.batch_alter_table("rate_limits", schema=None) as batch_op:
        batch_op.create_index("ix_rate_limits_window_start", ["window_start"], unique=False)
    # Refused notifies are deleted after WXPAY_REFUSED_NOTIFY_RETENTION_DAYS, by age.
    with op.batch_alter_table("payment_notifies", schema=None) as batch_op:
        batch_op.create_index("ix_payment_notifies_received_at", ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("payment_notifies", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_notifies_received_at")
    with op.batch_alter_table("rate_limits", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_limits_window_start")
    op.drop_table("rate_limits")
