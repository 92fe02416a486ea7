"""v3 JSAPI order, order query and close (PROTOCOL.md §8.1, §8.7), on the same orders as v2.

One merchant, one set of orders: a v3 order remembers its version (its notify is v3), and any
order can be queried through either API, answered in the shape of the API asked.
Codes the protocol reference does not pin down for a case (paying or closing a paid order) use
the nearest listed one: ``403 TRADE_ERROR``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.simulator.clock import SimClock
from app.simulator.config import SimulatorConfig
from app.simulator.pay import PREPAY_ID_LIFETIME, PayDesk
from app.simulator.state import SimApiVersion, SimOrder, SimState, SimTradeState
from app.simulator.v3envelope import V3Error
from app.simulator.v3fields import (
    V3_OUT_TRADE_NO,
    V3Call,
    amount,
    currency,
    notify_url_field,
    param_error,
    required_text,
    rfc3339_time,
    sub_object,
    text,
)
from app.simulator.v3messages import transaction_resource
from app.wechat.signing import SignType

MIN_V3_EXPIRY = timedelta(minutes=1)


class V3PayDesk:
    def __init__(
        self, config: SimulatorConfig, state: SimState, clock: SimClock, pay: PayDesk
    ) -> None:
        self._config = config
        self._state = state
        self._clock = clock
        self._pay = pay

    def jsapi(self, call: V3Call) -> dict[str, Any]:
        """Place a JSAPI order, or re-enter one (``{"prepay_id"}``).

        Rules: our appid and mchid (``400 APPID_MCHID_NOT_MATCH`` / ``MCH_NOT_EXISTS``); the
        payer known under the appid (``500 OPENID_MISMATCH``, as §8.1 lists it); re-entry with
        an identical body returns the same ``prepay_id`` (a fresh one once it is 2 hours old); a
        closed order is ``400 ORDER_CLOSED``, a paid one ``403 TRADE_ERROR``; another payer is
        ``403 OUT_TRADE_NO_USED``, any other change ``400 INVALID_REQUEST``.
        """
        params = self._order_params(call.body)
        existing = self._state.orders.get(params["out_trade_no"])
        order = self._reenter(existing, params) if existing else self._place(call.body, params)
        return {"prepay_id": order.prepay_id}

    def _order_params(self, body: dict[str, Any]) -> dict[str, str]:
        """The business parameters, checked, flattened to strings for re-entry comparison."""
        where = "/body"
        self._check_merchant(body, with_appid=True)
        money, payer = sub_object(body, where, "amount"), sub_object(body, where, "payer")
        total = amount(money, where + "/amount", "total")
        currency(money, where + "/amount")
        params = {
            "description": required_text(body, where, "description", max_length=127),
            "out_trade_no": required_text(
                body, where, "out_trade_no", max_length=32, pattern=V3_OUT_TRADE_NO
            ),
            "notify_url": notify_url_field(body, where, required=True) or "",
            "openid": required_text(payer, where + "/payer", "openid", max_length=128),
            "total": str(total),
            "attach": text(body, where, "attach", max_length=128, required=False) or "",
            "time_expire": str(body.get("time_expire") or ""),
        }
        rfc3339_time(body, where, "time_expire")
        if not self._state.knows_user(params["openid"]):
            raise V3Error(500, "OPENID_MISMATCH", "openid和appid不匹配")
        return params

    def _check_merchant(self, data: dict[str, Any], *, with_appid: bool) -> None:
        mchid = required_text(data, "/body", "mchid", max_length=32)
        if mchid != self._config.mch_id:
            raise V3Error(400, "MCH_NOT_EXISTS", "商户号不存在")
        if (
            with_appid
            and required_text(data, "/body", "appid", max_length=32) != self._config.appid
        ):
            raise V3Error(400, "APPID_MCHID_NOT_MATCH", "AppID和mch_id不匹配")

    def _place(self, body: dict[str, Any], params: dict[str, str]) -> SimOrder:
        now = self._clock.now()
        order = SimOrder(
            out_trade_no=params["out_trade_no"],
            appid=self._config.appid,
            openid=params["openid"],
            total_fee=int(params["total"]),
            notify_url=params["notify_url"],
            sign_type=SignType.MD5,  # not used: a v3 order's notify is RSA-signed
            params=params,
            prepay_id="",
            created_at=now,
            time_expire=_expiry(rfc3339_time(body, "/body", "time_expire"), now),
            api_version=SimApiVersion.V3,
        )
        self._state.orders[order.out_trade_no] = order
        self._pay.issue_prepay(order, now)
        return order

    def _reenter(self, order: SimOrder, params: dict[str, str]) -> SimOrder:
        if order.state is SimTradeState.CLOSED:
            raise V3Error(400, "ORDER_CLOSED", "订单已关闭")
        if order.is_paid:
            raise V3Error(403, "TRADE_ERROR", "该订单已支付")
        if params != order.params:
            if params["openid"] != order.params.get("openid"):
                raise V3Error(403, "OUT_TRADE_NO_USED", "商户订单号重复")
            raise V3Error(400, "INVALID_REQUEST", "201 商户订单号重复")
        now = self._clock.now()
        if now - order.prepays[order.prepay_id] >= PREPAY_ID_LIFETIME:
            self._pay.issue_prepay(order, now)
        return order

    def query_by_out_trade_no(self, call: V3Call) -> dict[str, Any]:
        """The transaction (§8.5's fields); ``404 ORDER_NOT_EXIST`` for an unknown order."""
        self._check_query_mchid(call)
        return self._transaction(self._state.orders.get(call.path_id))

    def query_by_transaction_id(self, call: V3Call) -> dict[str, Any]:
        self._check_query_mchid(call)
        return self._transaction(self._state.order_by_transaction(call.path_id))

    def _check_query_mchid(self, call: V3Call) -> None:
        mchid = call.query.get("mchid")
        if not mchid:
            raise param_error("输入源“/query/mchid”映射到值字段缺失")
        if mchid != self._config.mch_id:
            raise V3Error(400, "MCH_NOT_EXISTS", "商户号不存在")

    def _transaction(self, order: SimOrder | None) -> dict[str, Any]:
        if order is None:
            raise V3Error(404, "ORDER_NOT_EXIST", "订单不存在")
        return transaction_resource(order, self._config.mch_id)

    def close(self, call: V3Call) -> None:
        """Close an unpaid order (204). A paid order is ``403 TRADE_ERROR``, a closed one
        ``400 ORDER_CLOSED``; WeChat's five-minute wait after ordering is not enforced."""
        self._check_merchant(call.body, with_appid=False)
        order = self._state.orders.get(call.path_id)
        if order is None:
            raise V3Error(404, "ORDER_NOT_EXIST", "订单不存在")
        if order.is_paid:
            raise V3Error(403, "TRADE_ERROR", "订单已支付，不能发起关单")
        if order.state is SimTradeState.CLOSED:
            raise V3Error(400, "ORDER_CLOSED", "订单已关闭")
        order.state = SimTradeState.CLOSED


def _expiry(time_expire: datetime | None, now: datetime) -> datetime | None:
    # §8.1: a time_expire less than a minute away is raised to one minute.
    if time_expire is None:
        return None
    return max(time_expire, now + MIN_V3_EXPIRY)
