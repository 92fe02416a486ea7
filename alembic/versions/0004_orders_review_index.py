"""orders: a partial index for the admin review list

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Only flagged orders, a few among millions: without an index the admin review list scans the
# whole table. Keyed on review_reason, not updated_at, so updates that only set updated_at stay
# HOT (docs/benchmarks.md, "Cost as the data grows").
FLAGGED = sa.text("review_reason IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_orders_review_reason",
        "orders",
        ["review_reason"],
        postgresql_where=FLAGGED,
        sqlite_where=FLAGGED,
    )


def downgrade() -> None:
    op.drop_index("ix_orders_review_reason", table_name="orders")
