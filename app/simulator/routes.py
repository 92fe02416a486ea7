"""WeChat's own paths, answering as WeChat does, with latency and upstream faults on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.simulator.core import Simulator
from app.simulator.deps import SimulatorDep
from app.simulator.envelope import (
    BusinessFail,
    ProtocolFail,
    SignedRequest,
    business_fail_reply,
    check_appid,
    open_request,
    protocol_fail_reply,
    success_reply,
)
from app.simulator.faults import FaultName
from app.simulator.miniprogram import MiniProgramError
from app.wechat.xmlcodec import XmlRejected, from_xml

router = APIRouter(include_in_schema=False)
V2Handler = Callable[[SignedRequest], dict[str, object]]
MALFORMED_BODY = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg>"
XML_MEDIA_TYPE = "text/xml"


async def add_latency(simulator: Simulator) -> None:
    if simulator.latency_ms:
        await asyncio.sleep(simulator.latency_ms / 1000)


def _early_fault(simulator: Simulator, endpoint: str, out_trade_no: str | None) -> Response | None:
    """An upstream 5xx or a garbled body, answered before the request is looked at."""
    failure = simulator.faults.take(
        FaultName.UPSTREAM_5XX, out_trade_no=out_trade_no, endpoint=endpoint
    )
    if failure is not None:
        return Response(
            b"<html><body>Bad Gateway</body></html>", failure.status, media_type="text/html"
        )
    if simulator.faults.take(FaultName.MALFORMED_XML, out_trade_no=out_trade_no, endpoint=endpoint):
        return Response(MALFORMED_BODY, media_type=XML_MEDIA_TYPE)
    return None


async def answer_late(simulator: Simulator, endpoint: str, out_trade_no: str | None) -> None:
    """``upstream_timeout``: the work is done, the answer comes after the client gave up."""
    hang = simulator.faults.take(
        FaultName.UPSTREAM_TIMEOUT, out_trade_no=out_trade_no, endpoint=endpoint
    )
    if hang is not None:
        await asyncio.sleep(hang.seconds)


def _peek_out_trade_no(body: bytes) -> str | None:
    try:
        return from_xml(body).get("out_trade_no") or None
    except XmlRejected:
        return None


def _pay_answer(simulator: Simulator, endpoint: str, body: bytes, handler: V2Handler) -> bytes:
    config = simulator.config
    try:
        request = open_request(body, config)
    except ProtocolFail as fail:
        return protocol_fail_reply(fail)
    try:
        check_appid(request, config)
        out_trade_no = request.get("out_trade_no")
        _raise_business_faults(simulator, endpoint, out_trade_no)
        return success_reply(request, config, handler(request))
    except ProtocolFail as fail:
        return protocol_fail_reply(fail)
    except BusinessFail as fail:
        return business_fail_reply(request, config, fail)


def _raise_business_faults(simulator: Simulator, endpoint: str, out_trade_no: str | None) -> None:
    if simulator.faults.take(FaultName.SYSTEMERROR, out_trade_no=out_trade_no, endpoint=endpoint):
        raise BusinessFail("SYSTEMERROR", "系统超时")
    refusal = simulator.faults.take(
        FaultName.BUSINESS_ERROR, out_trade_no=out_trade_no, endpoint=endpoint
    )
    if refusal is not None:
        raise BusinessFail(refusal.err_code, refusal.err_code_des)


async def _serve_pay(
    request: Request, simulator: Simulator, endpoint: str, handler: V2Handler
) -> Response:
    await add_latency(simulator)
    body = await request.body()
    out_trade_no = _peek_out_trade_no(body)
    early = _early_fault(simulator, endpoint, out_trade_no)
    if early is not None:
        return early
    answer = _pay_answer(simulator, endpoint, body, handler)
    await answer_late(simulator, endpoint, out_trade_no)
    return Response(answer, media_type=XML_MEDIA_TYPE)


@router.post("/pay/unifiedorder")
async def unified_order(request: Request, simulator: SimulatorDep) -> Response:
    return await _serve_pay(request, simulator, "unifiedorder", simulator.pay.unified_order)


@router.post("/pay/orderquery")
async def order_query(request: Request, simulator: SimulatorDep) -> Response:
    return await _serve_pay(request, simulator, "orderquery", simulator.pay.order_query)


@router.post("/pay/closeorder")
async def pay_closeorder(request: Request, simulator: SimulatorDep) -> Response:
    return await _serve_pay(request, simulator, "closeorder", simulator.pay.close_order)


@router.post("/secapi/pay/refund")
async def secapi_refund(request: Request, simulator: SimulatorDep) -> Response:
    return await _serve_pay(request, simulator, "refund", simulator.refunds.refund)


@router.post("/pay/refundquery")
async def pay_refundquery(request: Request, simulator: SimulatorDep) -> Response:
    return await _serve_pay(request, simulator, "refundquery", simulator.refunds.refund_query)


@router.get("/sns/jscode2session")
async def jscode2session(request: Request, simulator: SimulatorDep) -> Response:
    await add_latency(simulator)
    early = _early_fault(simulator, "jscode2session", None)
    if early is not None:
        return early
    if simulator.faults.take(FaultName.SYSTEMERROR, endpoint="jscode2session"):
        answer = MiniProgramError(-1, "system error").to_json()
    else:
        answer = _code2session(simulator, request)
    await answer_late(simulator, "jscode2session", None)
    return JSONResponse(answer)


def _code2session(simulator: Simulator, request: Request) -> dict[str, object]:
    try:
        return simulator.miniprogram.code2session(dict(request.query_params))
    except MiniProgramError as error:
        return error.to_json()
