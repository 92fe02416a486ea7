"""WeChat Pay v3's own paths (PROTOCOL.md §8.1, §8.6, §8.7), answered as WeChat answers them.

Every request must carry the merchant's ``Authorization`` (``401 SIGN_ERROR`` otherwise), and
every answer, errors and ``204`` included, is signed with the ``Wechatpay-*`` headers. Upstream
faults act as on v2: ``upstream_5xx`` is an unsigned HTML page from the gateway in front of
WeChat, ``malformed_xml`` a signed but truncated JSON body, ``systemerror`` ``500 SYSTEM_ERROR``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response

from app.simulator.core import Simulator
from app.simulator.deps import SimulatorDep
from app.simulator.faults import FaultName
from app.simulator.routes import add_latency, answer_late
from app.simulator.v3envelope import SignatureFlaw, V3Error, WeChatPayKeys, encode_json
from app.simulator.v3fields import V3Call, param_error
from app.simulator.v3messages import certificate_entry

router = APIRouter(include_in_schema=False)
V3Handler = Callable[[V3Call], dict[str, Any] | None]
MALFORMED_JSON = b'{"code":"SUCCESS","prepay_id":"wx'
_ANSWER_FLAWS = (FaultName.BAD_SIGNATURE, FaultName.STALE_TIMESTAMP, FaultName.SIGNTEST_PROBE)


def _keys(simulator: Simulator) -> WeChatPayKeys:
    assert simulator.v3_keys is not None  # the router is only mounted with v3 keys
    return simulator.v3_keys


def _signed_url(request: Request) -> str:
    """Path and query exactly as sent, relative to where the simulator is mounted (§8.2)."""
    path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


def _json_body(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        raise param_error("请求体不是合法的JSON") from None
    if not isinstance(parsed, dict):
        raise param_error("请求体应为JSON对象")
    return parsed


def _peek_out_trade_no(body: bytes) -> str | None:
    try:
        value = json.loads(body).get("out_trade_no") if body else None
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _answer(
    simulator: Simulator,
    request: Request,
    endpoint: str,
    body: bytes,
    handler: V3Handler,
    path_id: str,
) -> tuple[int, dict[str, Any] | None]:
    try:
        _keys(simulator).verify_authorization(
            request.headers.get("Authorization"),
            method=request.method,
            url=_signed_url(request),
            body=body,
        )
        _raise_business_faults(simulator, endpoint, path_id or _peek_out_trade_no(body))
        payload = handler(V3Call(_json_body(body), dict(request.query_params), path_id))
    except V3Error as error:
        return error.status, error.to_json()
    return (200, payload) if payload is not None else (204, None)


def _raise_business_faults(simulator: Simulator, endpoint: str, out_trade_no: str | None) -> None:
    faults = simulator.faults
    if faults.take(FaultName.SYSTEMERROR, out_trade_no=out_trade_no, endpoint=endpoint):
        raise V3Error(500, "SYSTEM_ERROR", "系统错误")
    refusal = faults.take(FaultName.BUSINESS_ERROR, out_trade_no=out_trade_no, endpoint=endpoint)
    if refusal is not None:
        raise V3Error(refusal.http_status, refusal.err_code, refusal.err_code_des)


def _early_fault(simulator: Simulator, endpoint: str, out_trade_no: str | None) -> Response | None:
    faults = simulator.faults
    failure = faults.take(FaultName.UPSTREAM_5XX, out_trade_no=out_trade_no, endpoint=endpoint)
    if failure is not None:
        page = b"<html><body>Bad Gateway</body></html>"
        return Response(page, failure.status, media_type="text/html")
    if faults.take(FaultName.MALFORMED_XML, out_trade_no=out_trade_no, endpoint=endpoint):
        return _signed(simulator, endpoint, 200, MALFORMED_JSON)
    return None


def _signed(simulator: Simulator, endpoint: str, status: int, content: bytes) -> Response:
    flaw, stale_seconds = None, 0.0
    for name in _ANSWER_FLAWS:
        fault = simulator.faults.take_for_endpoint(name, endpoint)
        if fault is not None:
            flaw, stale_seconds = SignatureFlaw(name.value), fault.stale_seconds
    headers = _keys(simulator).signature_headers(content, flaw=flaw, stale_seconds=stale_seconds)
    media_type = "application/json" if content else None
    return Response(content, status, headers=headers, media_type=media_type)


async def _serve_v3(
    request: Request, simulator: Simulator, endpoint: str, handler: V3Handler, path_id: str = ""
) -> Response:
    await add_latency(simulator)
    body = await request.body()
    out_trade_no = path_id or _peek_out_trade_no(body)
    early = _early_fault(simulator, endpoint, out_trade_no)
    if early is not None:
        return early
    status, payload = _answer(simulator, request, endpoint, body, handler, path_id)
    await answer_late(simulator, endpoint, out_trade_no)
    return _signed(simulator, endpoint, status, encode_json(payload) if payload else b"")


@router.post("/v3/pay/transactions/jsapi")
async def jsapi(request: Request, simulator: SimulatorDep) -> Response:
    return await _serve_v3(request, simulator, "v3_jsapi", simulator.v3_pay.jsapi)


@router.get("/v3/pay/transactions/out-trade-no/{out_trade_no}")
async def query_by_out_trade_no(
    out_trade_no: str, request: Request, simulator: SimulatorDep
) -> Response:
    handler = simulator.v3_pay.query_by_out_trade_no
    return await _serve_v3(request, simulator, "v3_query", handler, out_trade_no)


@router.get("/v3/pay/transactions/id/{transaction_id}")
async def query_by_transaction_id(
    transaction_id: str, request: Request, simulator: SimulatorDep
) -> Response:
    handler = simulator.v3_pay.query_by_transaction_id
    return await _serve_v3(request, simulator, "v3_query", handler, transaction_id)


@router.post("/v3/pay/transactions/out-trade-no/{out_trade_no}/close")
async def close(out_trade_no: str, request: Request, simulator: SimulatorDep) -> Response:
    def handler(call: V3Call) -> None:
        simulator.v3_pay.close(call)

    return await _serve_v3(request, simulator, "v3_close", handler, out_trade_no)


@router.post("/v3/refund/domestic/refunds")
async def v3_refund(request: Request, simulator: SimulatorDep) -> Response:
    return await _serve_v3(request, simulator, "v3_refund", simulator.v3_refunds.refund)


@router.get("/v3/refund/domestic/refunds/{out_refund_no}")
async def v3_refund_query(
    out_refund_no: str, request: Request, simulator: SimulatorDep
) -> Response:
    handler = simulator.v3_refunds.query
    return await _serve_v3(request, simulator, "v3_refund_query", handler, out_refund_no)


@router.get("/v3/certificates")
async def certificates(request: Request, simulator: SimulatorDep) -> Response:
    def handler(call: V3Call) -> dict[str, Any]:
        keys = _keys(simulator)
        if not keys.config.certificate_mode:
            raise V3Error(404, "RESOURCE_NOT_EXISTS", "商户使用微信支付公钥验签，无平台证书")
        api_v3_key = keys.config.api_v3_key
        return {"data": [certificate_entry(key, api_v3_key) for key in keys.published()]}

    return await _serve_v3(request, simulator, "v3_certificates", handler)
