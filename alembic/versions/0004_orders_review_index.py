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

# Only flagged orders: the admin review list reads them newest first, and they are a few among
# millions, so without it the list scans the whole table (docs/benchmarks.md, "Cost as the data
# grows").
FLAGGED = sa.text("review_reason IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_orders_review_updated",
        "orders",
        ["updated_at"],
        postgresql_where=FLAGGED,
        sqlite_where=FLAGGED,
    )


def downgrade() -> None:
    op.drop_index("ix_orders_review_updated", table_name="orders")
