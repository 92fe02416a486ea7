"""orders: leave room on each page for the updates every order gets (fillfactor 90)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An order is inserted, then updated within a second (its prepay), and again when paid or
# refunded. On packed pages (fillfactor 100, after a bulk load or a long history and VACUUM),
# the free-space map sends each new order to a page with just enough room for it, so its first
# update cannot stay on that page: none of those updates were HOT, each wrote every index of
# the table again (bench/growth.py: 0 of 500 at 200 000 orders; with 90, 300 of 300). At 90,
# inserts skip pages past 90 % full and updates use the rest. Only pages filled from now on
# are affected: existing data is not rewritten.


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE orders SET (fillfactor = 90)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE orders RESET (fillfactor)")
