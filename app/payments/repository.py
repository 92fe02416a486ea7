"""The notify audit trail: every payment and refund notify, refused ones included."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any, cast

from sqlalchemy import Table, Text, bindparam, delete, literal, select

from app.db import UTCDateTime
from app.payments.models import NotifyAudit
from app.sql import Executor

notifies = cast(Table, NotifyAudit.__table__)


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row of ``payment_notifies``."""

    received_at: dt.datetime
    verdict: str
    raw: str
    detail: str = ""
    out_trade_no: str | None = None
    transaction_id: str | None = None
    total_fee: int | None = None


_COLUMNS = tuple(f.name for f in fields(AuditRow))
_INSERT = notifies.insert().values({name: bindparam(name) for name in _COLUMNS})


def audit_of_paid(paid: Any) -> Any:
    """PostgreSQL: the PAID audit row, written from the paid order's row inside the payment's
    own statement (a rider of ``OrderRepository.mark_paid``), so it exists exactly when the
    order moved. Its message comes in as ``audit_received_at`` and ``audit_raw``."""
    row = select(
        bindparam("audit_received_at", type_=UTCDateTime()),
        literal("PAID"),
        bindparam("audit_raw", type_=Text()),
        literal(""),
        paid.c.out_trade_no,
        paid.c.transaction_id,
        paid.c.total_fee,
    )
    columns = ["received_at", "verdict", "raw", "detail", "out_trade_no", "transaction_id"]
    return notifies.insert().from_select([*columns, "total_fee"], row).cte("audit")


def audit_params(received_at: dt.datetime, raw: str) -> dict[str, Any]:
    return {"audit_received_at": received_at, "audit_raw": raw}


# One statement per set of verdicts (a constant IN list), built once: app.sql compiles each once.
_prune_statements: dict[frozenset[str], Any] = {}


def _prune(verdicts: frozenset[str]) -> Any:
    if verdicts not in _prune_statements:
        _prune_statements[verdicts] = delete(notifies).where(
            notifies.c.verdict.in_(sorted(verdicts)),
            notifies.c.received_at < bindparam("cutoff", type_=UTCDateTime()),
        )
    return _prune_statements[verdicts]


class NotifyAuditRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def record(self, row: AuditRow) -> None:
        # Not dataclasses.asdict: it deep-copies every value, a measurable cost per notify.
        await self._sql.execute(_INSERT, {name: getattr(row, name) for name in _COLUMNS})

    async def record_refused(
        self, received_at: dt.datetime, verdict: str, raw: str, reason: str
    ) -> None:
        """A notify that was not acted on: what was kept of it, and why."""
        await self.record(AuditRow(received_at, verdict, raw, reason))

    async def prune(self, verdicts: frozenset[str], cutoff: dt.datetime) -> int:
        """Delete the rows with one of ``verdicts`` received before ``cutoff``; how many."""
        return await self._sql.execute(_prune(verdicts), {"cutoff": cutoff})
