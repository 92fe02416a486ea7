"""One import that registers every table on ``Base.metadata`` (alembic, tests)."""

from __future__ import annotations


def load_all_models() -> None:
    import app.auth.models
    import app.events.models
    import app.orders.models
    import app.payments.models
    import app.products.models
    import app.ratelimits.models
    import app.refunds.models  # noqa: F401
