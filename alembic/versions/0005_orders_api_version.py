"""orders: the WeChat Pay API version each order was created with

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing order was created through API v2: the only version there was.
    with op.batch_alter_table("orders") as batch:
        batch.add_column(
            sa.Column("api_version", sa.String(length=8), server_default="v2", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("api_version")
