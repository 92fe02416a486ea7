"""The v2 refund notify (PROTOCOL.md §6.5): from raw bytes to a committed verdict.

The outer message carries no signature; the protocol adapter accepts it only if it names our
appid/mch_id and its ``req_info`` decrypts with our key. The decrypted result must then match
our record of the refund (order, amounts) before anything changes. Every notify is audited.
"""

from __future__ import annotations

import json
import logging

from app.db import utcnow
from app.payments.notify import body_excerpt
from app.payments.service import AuditRecord
from app.refunds.service import RefundService, RefundVerdict
from app.wechat.client import WeChatPayClient
from app.wechat.errors import InvalidNotification

logger = logging.getLogger(__name__)


async def handle_refund_notify(
    body: bytes, service: RefundService, pay: WeChatPayClient
) -> RefundVerdict:
    """Verify, decrypt and apply a refund notify; the returned verdict is already committed."""
    received_at = utcnow()
    try:
        info = pay.decrypt_refund_notify(body)
    except InvalidNotification as refused:
        await service.record_refused(AuditRecord(body_excerpt(body), received_at), refused.reason)
        logger.warning("refund notify refused: %s", refused.reason)
        return RefundVerdict.REFUSED
    audit = AuditRecord(json.dumps(info.raw, ensure_ascii=False), received_at)
    return await service.apply_notify(info, audit)
