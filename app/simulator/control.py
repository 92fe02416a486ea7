"""The control API: what the user and the test harness do to this WeChat. JSON in and out."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from app.simulator.core import Simulator
from app.simulator.deps import SimulatorDep
from app.simulator.faults import Fault, FaultSpec
from app.simulator.pay import PREPAY_ID_LIFETIME, ControlError
from app.simulator.state import SimOrder
from app.simulator.v3envelope import WeChatPayKeys

router = APIRouter(prefix="/_control", tags=["control"])


class LoginCodeIn(BaseModel):
    openid: str | None = Field(default=None, min_length=1, max_length=128)


class LoginCodeOut(BaseModel):
    code: str
    openid: str


class ClockIn(BaseModel):
    advance_seconds: float = Field(ge=0)


class ClockOut(BaseModel):
    now: str


class LatencyIn(BaseModel):
    latency_ms: float = Field(ge=0, le=60_000)


class LatencyOut(BaseModel):
    latency_ms: float


class PayIn(BaseModel):
    prepay_id: str
    result: Literal["SUCCESS", "FAIL", "CANCEL"] = "SUCCESS"


class PayOut(BaseModel):
    out_trade_no: str
    trade_state: str
    transaction_id: str | None


class SimOrderOut(BaseModel):
    out_trade_no: str
    prepay_id: str
    prepay_expired: bool
    trade_state: str
    body: str
    total_fee: int
    openid: str
    notify_url: str
    created_at: str
    transaction_id: str | None
    refunded_fee: int
    api_version: str


class V3KeysOut(BaseModel):
    """WeChat Pay's public side, as a merchant downloads it: what a service verifies with."""

    mode: Literal["public_key", "certificate"]
    wechatpay_serial: str  # PUB_KEY_ID_... or the signing certificate's serial
    wechatpay_public_key_pem: str
    certificates: dict[str, str]  # serial -> PEM, as /v3/certificates lists them
    merchant_serial_no: str


@router.post("/login-code")
async def mint_login_code(body: LoginCodeIn, simulator: SimulatorDep) -> LoginCodeOut:
    """What ``wx.login`` gives the user: a single-use code, valid for 5 minutes."""
    code = simulator.miniprogram.mint_code(body.openid)
    return LoginCodeOut(code=code.code, openid=code.openid)


@router.post("/reset")
async def reset(simulator: SimulatorDep) -> dict[str, bool]:
    """Forget all state and faults; pending deliveries are cancelled."""
    await simulator.reset()
    return {"ok": True}


@router.post("/clock")
async def advance_clock(body: ClockIn, simulator: SimulatorDep) -> ClockOut:
    """Move the simulator's clock forward (code and prepay expiry follow it)."""
    return ClockOut(now=simulator.clock.advance(body.advance_seconds).isoformat())


@router.get("/latency")
async def get_latency(simulator: SimulatorDep) -> LatencyOut:
    return LatencyOut(latency_ms=simulator.latency_ms)


@router.post("/latency")
async def set_latency(body: LatencyIn, simulator: SimulatorDep) -> LatencyOut:
    """Artificial response latency on the WeChat endpoints, for benchmarks."""
    simulator.latency_ms = body.latency_ms
    return LatencyOut(latency_ms=simulator.latency_ms)


@router.post("/pay")
async def pay(body: PayIn, simulator: SimulatorDep) -> PayOut:
    """What the user does in ``wx.requestPayment``: pay, fail, or cancel.

    Paying sends the signed notify to the order's ``notify_url`` in the background.
    """
    try:
        order = simulator.pay.pay(body.prepay_id, body.result)
    except ControlError as error:
        raise HTTPException(error.status, error.message) from error
    return PayOut(
        out_trade_no=order.out_trade_no,
        trade_state=order.state.value,
        transaction_id=order.transaction_id,
    )


@router.get("/orders")
async def control_orders(simulator: SimulatorDep) -> list[SimOrderOut]:
    """Every order, newest first."""
    now = simulator.clock.now()
    orders = sorted(simulator.state.orders.values(), key=lambda o: o.created_at, reverse=True)
    return [
        _order_out(order, expired=now - order.prepays[order.prepay_id] >= PREPAY_ID_LIFETIME)
        for order in orders
    ]


def _order_out(order: SimOrder, *, expired: bool) -> SimOrderOut:
    return SimOrderOut(
        out_trade_no=order.out_trade_no,
        prepay_id=order.prepay_id,
        prepay_expired=expired,
        trade_state=order.state.value,
        body=order.description,
        total_fee=order.total_fee,
        openid=order.openid,
        notify_url=order.notify_url,
        created_at=order.created_at.isoformat(),
        transaction_id=order.transaction_id,
        refunded_fee=order.refunded_fee,
        api_version=order.api_version.value,
    )


@router.get("/notifies")
async def list_notifies(
    simulator: SimulatorDep, out_trade_no: str | None = None
) -> list[dict[str, object]]:
    """Every delivery attempt, oldest first: body sent, status, reply snippet, verdict."""
    return [
        attempt.to_json()
        for attempt in simulator.state.deliveries
        if out_trade_no is None or attempt.out_trade_no == out_trade_no
    ]


@router.get("/faults")
async def list_faults(simulator: SimulatorDep) -> list[Fault]:
    return simulator.faults.active()


@router.post("/faults")
async def add_fault(body: FaultSpec, simulator: SimulatorDep) -> Fault:
    """Turn a fault switch on, for one order or endpoint or for all, ``count`` times or
    until cleared."""
    return simulator.faults.add(body)


@router.delete("/faults")
async def clear_faults(simulator: SimulatorDep) -> dict[str, bool]:
    simulator.faults.clear()
    return {"ok": True}


@router.delete("/faults/{fault_id}")
async def remove_fault(fault_id: int, simulator: SimulatorDep) -> dict[str, bool]:
    if not simulator.faults.remove(fault_id):
        raise HTTPException(404, "no such fault")
    return {"ok": True}


@router.get("/v3/keys")
async def control_v3_keys(simulator: SimulatorDep) -> V3KeysOut:
    """The public half of the v3 keys: the key or certificate signing now, and the merchant
    serial the simulator expects in ``Authorization``. 404 without v3 keys."""
    keys = _v3_keys(simulator)
    active = keys.active
    return V3KeysOut(
        mode="certificate" if keys.config.certificate_mode else "public_key",
        wechatpay_serial=active.serial,
        wechatpay_public_key_pem=active.public_key_pem.decode(),
        certificates={
            key.serial: key.certificate_pem.decode()
            for key in keys.published()
            if key.certificate_pem is not None
        },
        merchant_serial_no=keys.config.merchant_serial_no,
    )


@router.post("/v3/rotate-certificate")
async def rotate_certificate(simulator: SimulatorDep) -> V3KeysOut:
    """Certificate mode: sign with the next platform certificate from now on; both stay
    listed at ``/v3/certificates`` (the overlap of a real rotation). 409 when there is none."""
    try:
        _v3_keys(simulator).rotate()
    except ValueError as refused:
        raise HTTPException(409, str(refused)) from refused
    return await control_v3_keys(simulator)


def _v3_keys(simulator: Simulator) -> WeChatPayKeys:
    if simulator.v3_keys is None:
        raise HTTPException(404, "this simulator has no v3 keys (SimulatorConfig.v3)")
    return simulator.v3_keys
