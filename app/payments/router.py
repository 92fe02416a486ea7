"""The notify URL WeChat posts payment results to."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect

from app.db import DATABASE_UNAVAILABLE
from app.deps import RuntimeDep
from app.payments.notify import handle_payment_notify
from app.wechat.xmlcodec import DEFAULT_MAX_BYTES, to_xml

logger = logging.getLogger(__name__)
router = APIRouter(tags=["wechat"])

NOTIFY_NOT_PROCESSED: tuple[type[Exception], ...] = (*DATABASE_UNAVAILABLE, TimeoutError)
# WeChat waits 5 s for the answer; leave room for the network.
NOTIFY_DEADLINE_SECONDS = 4.0


def wechat_reply(ok: bool, message: str, status: int = 200) -> Response:
    body = to_xml({"return_code": "SUCCESS" if ok else "FAIL", "return_msg": message})
    return Response(body, status_code=status, media_type="application/xml")


@router.post(
    "/wechat/pay/notify",
    summary="WeChat Pay v2 payment notify",
    response_class=Response,
    responses={200: {"content": {"application/xml": {}}}},
)
async def payment_notify(request: Request, runtime: RuntimeDep) -> Response:
    """Acknowledged (SUCCESS) only after the effect is committed; anything else makes WeChat
    retry, so nothing is lost when the database is down."""
    try:
        body = await read_limited(request)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody is left to answer; WeChat will retry
    if body is None:
        return wechat_reply(False, "body too large", 413)
    try:
        async with asyncio.timeout(NOTIFY_DEADLINE_SECONDS):
            outcome = await handle_payment_notify(body, runtime.payments, runtime.pay)
    except NOTIFY_NOT_PROCESSED as exc:
        logger.error("notify not processed, WeChat will retry: %s", type(exc).__name__)
        return wechat_reply(False, "temporarily unavailable", 503)
    if outcome.acknowledged:
        return wechat_reply(True, "OK")
    return wechat_reply(False, outcome.detail, 400 if outcome.refused else 200)


async def read_limited(request: Request) -> bytes | None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > DEFAULT_MAX_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DEFAULT_MAX_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
