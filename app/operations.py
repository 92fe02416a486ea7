"""What the operations routes read from the database: readiness and the scraped figures.

A service like the others, so ``/readyz`` and ``/metrics`` depend on it and never reach for
the runtime's database themselves.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from prometheus_client.core import Metric
from pydantic import SecretStr
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.db import DATABASE_UNAVAILABLE, utcnow

if TYPE_CHECKING:
    from app.uow import Database

logger = logging.getLogger(__name__)

_UNREACHABLE: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE, SQLAlchemyError)


class OperationsService:
    def __init__(
        self, db: Database, schema_head: str | None, metrics_token: SecretStr | None
    ) -> None:
        self._db = db
        self.schema_head = schema_head  # the migration this code expects
        self.metrics_token = metrics_token

    async def not_ready(self) -> tuple[str | None, str | None]:
        """``(reason, schema)``: why the service cannot take traffic (None when it can), and
        the schema version the database is at."""
        try:
            async with self._db.statement() as tx:
                current = await tx.schema_version()
        except _UNREACHABLE as exc:
            return f"database unreachable: {type(exc).__name__}", None
        if current != self.schema_head:
            return f"schema at {current}, code expects {self.schema_head}", current
        return None, current

    async def figures(self) -> list[Metric]:
        """Figures read from the database for a scrape. With the database down the scrape
        still answers (the request and WeChat figures matter most then), saying so in
        ``wxpay_database_up``."""
        try:
            async with self._db.statement() as tx:
                refunds = await tx.refunds.count_by_status()
                backlog = await tx.webhooks.backlog()
        except _UNREACHABLE as exc:
            logger.warning("/metrics without database figures: %s", type(exc).__name__)
            return [metrics.database_up(False)]
        return [
            metrics.database_up(True),
            metrics.refund_states(refunds),
            *metrics.webhook_backlog(backlog, utcnow()),
        ]
