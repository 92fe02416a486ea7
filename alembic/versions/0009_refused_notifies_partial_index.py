"""payment_notifies: the received_at index only over refused notifies (the rows pruned by age)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As of this revision (app.payments.models.REFUSED_VERDICT_VALUES).
_REFUSED = sa.column("verdict").in_(
    ["BAD_FIELDS", "BAD_SIGNATURE", "BAD_XML", "PROTOCOL_FAIL", "REFUND_REFUSED", "WRONG_MERCHANT"]
)


def upgrade() -> None:
    with op.batch_alter_table("payment_notifies", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_notifies_received_at")
        batch_op.create_index(
            "ix_payment_notifies_refused_received_at",
            ["received_at"],
            unique=False,
            postgresql_where=_REFUSED,
            sqlite_where=_REFUSED,
        )


def downgrade() -> None:
    with op.batch_alter_table("payment_notifies", schema=None) as batch_op:
        batch_op.drop_index("ix_payment_notifies_refused_received_at")
        batch_op.create_index("ix_payment_notifies_received_at", ["received_at"], unique=False)
