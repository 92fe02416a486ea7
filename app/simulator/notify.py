"""Notify delivery: signed notifies POSTed to the merchant, retried on WeChat's schedule.

Each order and refund is notified in the API version it was made through. A v2 delivery counts
only when the reply is HTTP 200 with a well-formed ``return_code=SUCCESS`` document within
``notify_timeout`` (PROTOCOL.md §5); a v3 delivery when the reply is HTTP 200 or 204, whatever
the body (§8.5). Anything else (timeout, transport error, FAIL, other statuses) is retried after
15s/15s/30s/3m/10m/20m/30m/30m/30m/60m/3h/3h/3h/6h/6h, each scaled by the time factor, for both
versions. v3 notifies are signed afresh at every attempt, as a signature is only good for five
minutes. Every attempt is logged with the reply and verdict.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx

from app.simulator.clock import SimClock
from app.simulator.config import SimulatorConfig
from app.simulator.faults import Fault, FaultBook, FaultName
from app.simulator.messages import (
    paid_notify_fields,
    refund_notify_fields,
    refund_result_fields,
    signed,
)
from app.simulator.state import DeliveryAttempt, SimApiVersion, SimOrder, SimRefund, SimState
from app.simulator.v3envelope import SignatureFlaw, WeChatPayKeys
from app.simulator.v3messages import (
    REFUND_EVENTS,
    REFUND_SUMMARIES,
    notify_body,
    refund_notice,
    transaction_resource,
)
from app.wechat.timefmt import to_refund_time as refund_time
from app.wechat.timefmt import to_wechat_time as beijing_stamp
from app.wechat.xmlcodec import XmlRejected, from_xml, to_xml

REPLY_SNIPPET = 500
_PAYMENT_FAULTS = (FaultName.TAMPER_AMOUNT, FaultName.BAD_SIGNATURE, FaultName.RESULT_FAIL)
_V3_SIGNATURE_FAULTS = (
    FaultName.BAD_SIGNATURE,
    FaultName.STALE_TIMESTAMP,
    FaultName.SIGNTEST_PROBE,
)
_V3_PAYMENT_FAULTS = (FaultName.TAMPER_AMOUNT, *_V3_SIGNATURE_FAULTS)
HeaderSource = Callable[[SignatureFlaw | None], dict[str, str]]


@dataclass(slots=True)
class Notification:
    kind: str
    out_trade_no: str
    out_refund_no: str | None
    url: str
    body: bytes
    faults: list[str] = field(default_factory=list)
    extra_copies: int = 0
    concurrent: bool = False
    delay_seconds: float = 0.0
    api_version: SimApiVersion = SimApiVersion.V2
    # v3: signs the body at each attempt, flawed as the faults say; None for v2.
    sign: HeaderSource | None = None
    flaw: SignatureFlaw | None = None
    probe: bool = False


class Notifier:
    def __init__(
        self,
        config: SimulatorConfig,
        state: SimState,
        clock: SimClock,
        faults: FaultBook,
        transport: httpx.AsyncBaseTransport | None,
        keys: WeChatPayKeys | None = None,
    ) -> None:
        self._config = config
        self._keys = keys
        self._state = state
        self._clock = clock
        self._faults = faults
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._http = httpx.AsyncClient(
            transport=self._transport,
            timeout=self._config.notify_timeout,
            trust_env=False,
            headers={"Content-Type": "text/xml", "User-Agent": "Mozilla/4.0"},
        )

    async def aclose(self) -> None:
        await self.cancel_all()
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background until it ends or the simulator resets or closes."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def deliver_payment(self, order: SimOrder) -> None:
        if order.api_version is SimApiVersion.V3:
            notification = self._v3_payment_notification(order)
        else:
            notification = self._payment_notification(order)
        self.spawn(self._deliver(notification))

    def deliver_refund(self, order: SimOrder, refund: SimRefund) -> None:
        assert refund.notify_url is not None
        if refund.api_version is SimApiVersion.V3:
            notification = self._v3_refund_notification(order, refund, refund.notify_url)
        else:
            body = to_xml(refund_notify_envelope(order, refund, self._config))
            notification = Notification(
                "refund", order.out_trade_no, refund.out_refund_no, refund.notify_url, body
            )
        self._apply_timing_faults(notification)
        self.spawn(self._deliver(notification))

    def _v3_payment_notification(self, order: SimOrder) -> Notification:
        taken = self._take(_V3_PAYMENT_FAULTS, order.out_trade_no)
        tampered = taken.get(FaultName.TAMPER_AMOUNT)
        total = order.total_fee + tampered.delta if tampered else None
        body = notify_body(
            event_type="TRANSACTION.SUCCESS",
            summary="支付成功",
            original_type="transaction",
            resource=transaction_resource(order, self._config.mch_id, total=total),
            api_v3_key=self._v3_keys().config.api_v3_key,
            now=self._clock.now(),
        )
        notification = Notification("payment", order.out_trade_no, None, order.notify_url, body)
        self._sign_v3(notification, taken)
        self._apply_timing_faults(notification)
        return notification

    def _v3_refund_notification(self, order: SimOrder, refund: SimRefund, url: str) -> Notification:
        status = refund.status.value
        body = notify_body(
            event_type=REFUND_EVENTS[status],
            summary=REFUND_SUMMARIES[status],
            original_type="refund",
            resource=refund_notice(order, refund, self._config.mch_id),
            api_v3_key=self._v3_keys().config.api_v3_key,
            now=self._clock.now(),
        )
        notification = Notification("refund", order.out_trade_no, refund.out_refund_no, url, body)
        self._sign_v3(notification, self._take(_V3_SIGNATURE_FAULTS, order.out_trade_no))
        return notification

    def _sign_v3(self, notification: Notification, taken: dict[FaultName, Fault]) -> None:
        keys, body = self._v3_keys(), notification.body
        stale = taken.get(FaultName.STALE_TIMESTAMP)
        stale_seconds = stale.stale_seconds if stale else 0.0

        def sign(flaw: SignatureFlaw | None) -> dict[str, str]:
            headers = keys.signature_headers(body, flaw=flaw, stale_seconds=stale_seconds)
            return {"Content-Type": "application/json", **headers}

        notification.api_version = SimApiVersion.V3
        notification.sign = sign
        notification.faults = [name.value for name in taken]
        notification.probe = FaultName.SIGNTEST_PROBE in taken
        for name in (FaultName.BAD_SIGNATURE, FaultName.STALE_TIMESTAMP):
            if name in taken:
                notification.flaw = SignatureFlaw(name.value)

    def _take(self, names: tuple[FaultName, ...], out_trade_no: str) -> dict[FaultName, Fault]:
        return {
            name: fault
            for name in names
            if (fault := self._faults.take(name, out_trade_no=out_trade_no))
        }

    def _v3_keys(self) -> WeChatPayKeys:
        if self._keys is None:
            raise RuntimeError("a v3 notify needs the simulator's v3 keys (SimulatorConfig.v3)")
        return self._keys

    def _payment_notification(self, order: SimOrder) -> Notification:
        taken = self._take(_PAYMENT_FAULTS, order.out_trade_no)
        body = to_xml(payment_notify_fields(order, self._config, taken))
        notification = Notification("payment", order.out_trade_no, None, order.notify_url, body)
        notification.faults = [name.value for name in taken]
        self._apply_timing_faults(notification)
        return notification

    def _apply_timing_faults(self, notification: Notification) -> None:
        key = notification.out_trade_no
        duplicate = self._faults.take(FaultName.DUPLICATE_NOTIFY, out_trade_no=key)
        if duplicate is not None:
            notification.extra_copies = duplicate.copies
            notification.concurrent = duplicate.concurrent
            notification.faults.append(duplicate.name.value)
        delay = self._faults.take(FaultName.DELAY_NOTIFY, out_trade_no=key)
        if delay is not None:
            notification.delay_seconds = delay.delay_ms / 1000
            notification.faults.append(delay.name.value)

    async def _deliver(self, notification: Notification) -> None:
        await asyncio.sleep(notification.delay_seconds)
        if notification.probe:
            # WeChat's signature probe is its own traffic: sent once, never retried.
            await self._attempt(notification, 0, 0, probe=True)
        await self._deliver_until_acknowledged(notification)
        if not notification.concurrent:
            # Duplicates arrive again later even after an acknowledgement, as WeChat's do.
            for copy in range(1, notification.extra_copies + 1):
                await self._attempt(notification, 1, copy)

    async def _deliver_until_acknowledged(self, notification: Notification) -> bool:
        intervals = (0.0, *self._config.notify_retry_schedule)
        for number, interval in enumerate(intervals, start=1):
            await asyncio.sleep(self._config.scaled(interval))
            if await self._send(notification, number):
                return True
        return False

    async def _send(self, notification: Notification, number: int) -> bool:
        if number == 1 and notification.concurrent:
            copies = range(notification.extra_copies + 1)
            results = await asyncio.gather(*(self._attempt(notification, 1, c) for c in copies))
            return any(results)
        return await self._attempt(notification, number, 0)

    async def _attempt(
        self, notification: Notification, number: int, copy: int, *, probe: bool = False
    ) -> bool:
        headers = _attempt_headers(notification, probe=probe)
        record = self._log(notification, number, copy, headers)
        if probe:
            record.faults = [FaultName.SIGNTEST_PROBE.value]
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._config.notify_timeout):
                response = await self._client().post(
                    notification.url, content=notification.body, headers=headers
                )
        except (TimeoutError, httpx.TimeoutException):
            record.verdict = "timeout"
        except httpx.HTTPError as error:
            record.verdict, record.reply = "error", f"{type(error).__name__}: {error}"
        else:
            record.status, record.reply = response.status_code, response.text[:REPLY_SNIPPET]
            record.verdict = judge_reply(response, notification.api_version)
        record.elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
        return record.verdict == "acknowledged"

    def _log(
        self, notification: Notification, number: int, copy: int, headers: dict[str, str]
    ) -> DeliveryAttempt:
        record = DeliveryAttempt(
            id=len(self._state.deliveries) + 1,
            kind=notification.kind,
            api_version=notification.api_version.value,
            out_trade_no=notification.out_trade_no,
            out_refund_no=notification.out_refund_no,
            attempt=number,
            copy=copy,
            url=notification.url,
            sent_at=self._clock.now(),
            body=notification.body.decode(),
            faults=list(notification.faults),
            headers=headers,
        )
        self._state.deliveries.append(record)
        return record

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            raise RuntimeError("the simulator is not started: await Simulator.start() first")
        return self._http


def _attempt_headers(notification: Notification, *, probe: bool) -> dict[str, str]:
    if notification.sign is None:
        return {}
    return notification.sign(SignatureFlaw.SIGNTEST_PROBE if probe else notification.flaw)


def judge_reply(response: httpx.Response, api_version: SimApiVersion = SimApiVersion.V2) -> str:
    """v2: ``acknowledged`` only for HTTP 200 with a well-formed ``return_code=SUCCESS``.
    v3: for HTTP 200 or 204, whatever the body; a 200 saying ``FAIL`` still counts (§8.5)."""
    if api_version is SimApiVersion.V3:
        return "acknowledged" if response.status_code in (200, 204) else "rejected"
    try:
        fields = from_xml(response.content)
    except XmlRejected:
        return "malformed"
    if response.status_code == 200 and fields.get("return_code") == "SUCCESS":
        return "acknowledged"
    return "rejected"


def payment_notify_fields(
    order: SimOrder, config: SimulatorConfig, faults: dict[FaultName, Fault]
) -> dict[str, object]:
    """The signed payment notify, shaped by any ``tamper_amount``/``bad_signature``/
    ``result_fail`` fault (a tampered amount is still correctly signed)."""
    assert order.time_end is not None and order.transaction_id is not None
    amount = order.total_fee
    if tampered := faults.get(FaultName.TAMPER_AMOUNT):
        amount += tampered.delta
    fields = paid_notify_fields(
        appid=order.appid,
        mch_id=config.mch_id,
        openid=order.openid,
        total_fee=amount,
        transaction_id=order.transaction_id,
        out_trade_no=order.out_trade_no,
        time_end=beijing_stamp(order.time_end),
        device_info=order.params.get("device_info"),
        attach=order.attach,
    )
    if FaultName.RESULT_FAIL in faults:
        fields |= {"result_code": "FAIL", "err_code": "NOTENOUGH", "err_code_des": "余额不足"}
    fields = signed(fields, config.api_key, order.sign_type)
    if FaultName.BAD_SIGNATURE in faults:
        fields["sign"] = _corrupt(str(fields["sign"]))
    return fields


def _corrupt(signature: str) -> str:
    first = "0" if signature[0] != "0" else "1"
    return first + signature[1:]


def refund_notify_envelope(
    order: SimOrder, refund: SimRefund, config: SimulatorConfig
) -> dict[str, object]:
    """The refund notify for one of our refunds."""
    assert order.transaction_id is not None
    result = refund_result_fields(
        transaction_id=order.transaction_id,
        out_trade_no=order.out_trade_no,
        refund_id=refund.refund_id,
        out_refund_no=refund.out_refund_no,
        total_fee=order.total_fee,
        refund_fee=refund.refund_fee,
        refund_status=refund.status.v2_name,
        # Only a refund that succeeded has a success time.
        success_time=refund_time(refund.success_time) if refund.success_time else "",
        refund_account=refund.refund_account,
    )
    return refund_notify_fields(
        result, appid=order.appid, mch_id=config.mch_id, api_key=config.api_key
    )
