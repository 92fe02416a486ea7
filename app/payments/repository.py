"""The notify audit trail: every payment and refund notify, refused ones included."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields
from typing import cast

from sqlalchemy import Table, bindparam

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


_INSERT = notifies.insert().values({f.name: bindparam(f.name) for f in fields(AuditRow)})


class NotifyAuditRepository:
    def __init__(self, sql: Executor) -> None:
        self._sql = sql

    async def record(self, row: AuditRow) -> None:
        await self._sql.execute(_INSERT, asdict(row))
