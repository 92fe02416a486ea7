"""``WeChatPayClient``: the v2 merchant API over the shared ``httpx.AsyncClient``.

Each call signs exactly the bytes it sends, and trusts a response only after its ``sign``
verifies (same sign type as the request) and its ``appid``/``mch_id`` are ours. Failures come
out as ``WeChatUnavailable`` (retried here, within the policy) or ``WeChatRejected`` (final).
Incoming notifies are checked by ``parse_payment_notify`` and ``decrypt_refund_notify``.
Section numbers (§) refer to ../shared/wechat/PROTOCOL.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, TypeVar

import httpx
from pydantic import SecretStr, ValidationError

from app.wechat.crypto import ReqInfoInvalid, decrypt_req_info
from app.wechat.errors import (
    InvalidNotification,
    RefusalKind,
    WeChatRejected,
    WeChatUnavailable,
)
from app.wechat.models import (
    CloseOrderRequest,
    CloseOrderResponse,
    OrderQueryRequest,
    OrderQueryResponse,
    PaymentNotify,
    PayRequest,
    PayResponse,
    Received,
    RefundNotify,
    RefundNotifyInfo,
    RefundQueryRequest,
    RefundQueryResponse,
    RefundRequest,
    RefundResponse,
    UnifiedOrderRequest,
    UnifiedOrderResponse,
)
from app.wechat.retry import RetryPolicy, with_retries
from app.wechat.signing import SignType, build_pay_params, new_nonce, sign_type_of, verify
from app.wechat.transport import send, success_body
from app.wechat.xmlcodec import DEFAULT_MAX_BYTES, XmlRejected, from_xml, to_signed_xml

if TYPE_CHECKING:
    from app.config import Settings

logger = logging.getLogger(__name__)

R = TypeVar("R", bound=PayResponse)
N = TypeVar("N", bound=Received)

SUCCESS = "SUCCESS"
# WeChat's own "call again with the same parameters" codes (§2.2, §6.3).
RETRYABLE_ERR_CODES = frozenset({"SYSTEMERROR", "BIZERR_NEED_RETRY"})
_XML_HEADERS = {"Content-Type": "text/xml; charset=utf-8"}


class WeChatPayClient:
    """WeChat Pay v2 for one merchant and one mini-program appid."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_base: str,
        appid: str,
        mch_id: str,
        api_key: str | SecretStr,
        sign_type: SignType = SignType.MD5,
        retry: RetryPolicy | None = None,
        refund_http: httpx.AsyncClient | None = None,
        max_response_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        """``refund_http`` carries the merchant certificate for mutual TLS (§6.3); without it
        refunds go over ``http``, which only a simulator accepts."""
        self._http = http
        self._refund_http = refund_http or http
        self._api_base = api_base.rstrip("/")
        self._urls: dict[str, httpx.URL] = {}
        self.appid = appid
        self.mch_id = mch_id
        self._api_key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)
        self.sign_type = sign_type
        self._retry = retry or RetryPolicy()
        self._max_bytes = max_response_bytes

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        http: httpx.AsyncClient,
        refund_http: httpx.AsyncClient | None = None,
    ) -> WeChatPayClient:
        return cls(
            http,
            api_base=settings.pay_api,
            appid=settings.appid,
            mch_id=settings.mch_id,
            api_key=settings.api_key,
            sign_type=settings.sign_type,
            retry=RetryPolicy(max_attempts=settings.wechat_max_attempts),
            refund_http=refund_http,
        )

    def __repr__(self) -> str:
        return (
            f"WeChatPayClient(api_base={self._api_base!r}, appid={self.appid!r}, "
            f"mch_id={self.mch_id!r})"
        )

    # --- merchant API calls -------------------------------------------------------------

    async def unified_order(self, request: UnifiedOrderRequest) -> UnifiedOrderResponse:
        """Place an order and get its ``prepay_id`` (§2.1).

        Retried on ``WeChatUnavailable``: WeChat answers a re-sent ``out_trade_no`` with
        identical business fields with the same ``prepay_id``. Only nonce and sign change.
        """
        return await self._call("/pay/unifiedorder", request, UnifiedOrderResponse, self._http)

    async def order_query(self, request: OrderQueryRequest) -> OrderQueryResponse:
        """The order's ``trade_state`` (§6.1); only ``SUCCESS`` means paid. Read-only, retried."""
        return await self._call("/pay/orderquery", request, OrderQueryResponse, self._http)

    async def close_order(self, request: CloseOrderRequest) -> CloseOrderResponse:
        """Close an unpaid order (§6.2). Retried; ``ORDERPAID``/``ORDERCLOSED`` come back as
        ``WeChatRejected`` for the caller to interpret."""
        return await self._call("/pay/closeorder", request, CloseOrderResponse, self._http)

    async def refund(self, request: RefundRequest) -> RefundResponse:
        """Ask for a refund over mutual TLS (§6.3); success means accepted, not completed.

        Retried: the same ``out_refund_no`` with the same fields refunds at most once.
        """
        path = "/secapi/pay/refund"
        return await self._call(path, request, RefundResponse, self._refund_http)

    async def refund_query(self, request: RefundQueryRequest) -> RefundQueryResponse:
        """The refunds of an order or one refund (§6.4). Read-only, retried."""
        return await self._call("/pay/refundquery", request, RefundQueryResponse, self._http)

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        """The ``wx.requestPayment`` parameters for ``prepay_id``, signed like the order (§4)."""
        return build_pay_params(
            appid=self.appid,
            prepay_id=prepay_id,
            api_key=self._api_key.get_secret_value(),
            sign_type=self.sign_type,
        )

    async def _call(
        self, path: str, request: PayRequest, model: type[R], http: httpx.AsyncClient
    ) -> R:
        # The business fields are fixed once, outside the retry loop, so every attempt sends
        # the same parameters; only nonce_str and sign differ.
        business = request.to_fields()

        async def attempt() -> R:
            return await self._post_once(path, business, model, http)

        return await with_retries(attempt, self._retry, path)

    async def _post_once(
        self, path: str, business: Mapping[str, object], model: type[R], http: httpx.AsyncClient
    ) -> R:
        body = to_signed_xml(self._envelope(business), self._key, self.sign_type)
        what = f"WeChat Pay {path}"
        reply = await send(
            http,
            "POST",
            self._url(path),
            content=body,
            headers=_XML_HEADERS,
            max_bytes=self._max_bytes,
            what=what,
            api=f"v2 {path}",
        )
        fields = self._parse_response(success_body(reply, what), what)
        self._check_response(fields, what)
        try:
            return model.from_fields(fields)
        except ValidationError as exc:
            raise WeChatUnavailable(f"{what} answered unexpected fields: {_summary(exc)}") from None

    def _url(self, path: str) -> httpx.URL:
        # Parsed once per path (a handful): httpx parses a string URL on every request.
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self._api_base + path)
        return url

    def _envelope(self, business: Mapping[str, object]) -> dict[str, object]:
        fields: dict[str, object] = {
            **business,
            "appid": self.appid,
            "mch_id": self.mch_id,
            "nonce_str": new_nonce(),
        }
        # MD5 is WeChat's default; HMAC-SHA256 must be declared, and the declaration is signed.
        if self.sign_type is SignType.HMAC_SHA256:
            fields["sign_type"] = self.sign_type.value
        return fields

    def _parse_response(self, raw: bytes, what: str) -> dict[str, str]:
        try:
            return from_xml(raw, max_bytes=self._max_bytes)
        except XmlRejected as exc:
            raise WeChatUnavailable(f"{what} answered unreadable XML ({exc.fault})") from exc

    def _check_response(self, fields: Mapping[str, str], what: str) -> None:
        """§2.2 in order: ``return_code``, then the signature and ids, then ``result_code``."""
        return_code = fields.get("return_code")
        if return_code == "FAIL":
            raise WeChatRejected(return_msg=fields.get("return_msg") or None)
        if return_code != SUCCESS:
            raise WeChatUnavailable(f"{what} answered without a valid return_code")
        if not verify(fields, self._key, self.sign_type):
            # Unsigned or forged: we cannot know what WeChat really did, so never trust it.
            raise WeChatUnavailable(f"{what} answered with a missing or wrong signature")
        if not self._is_ours(fields):
            raise WeChatUnavailable(f"{what} answered for another appid or mch_id")
        result_code = fields.get("result_code")
        if result_code == SUCCESS:
            return
        err_code = fields.get("err_code") or None
        err_code_des = fields.get("err_code_des") or None
        if result_code != "FAIL":
            raise WeChatUnavailable(f"{what} answered without a valid result_code")
        if err_code in RETRYABLE_ERR_CODES:
            raise WeChatUnavailable(err_code_des or f"{what}: {err_code}", err_code=err_code)
        raise WeChatRejected(
            err_code=err_code, err_code_des=err_code_des, return_msg=fields.get("return_msg")
        )

    def _is_ours(self, fields: Mapping[str, str]) -> bool:
        appid, mch_id = fields.get("appid"), fields.get("mch_id")
        return appid in (None, "", self.appid) and mch_id in (None, "", self.mch_id)

    @property
    def _key(self) -> str:
        return self._api_key.get_secret_value()

    # --- incoming notifies -----------------------------------------------------------------

    def parse_payment_notify(self, body: bytes) -> PaymentNotify:
        """A verified payment notify (§5), or ``InvalidNotification``.

        The signature is checked over every received field, with the sign type the notify
        declares in ``sign_type`` or else ours (§3.1 step 7); ``appid`` and ``mch_id`` must be
        ours. A ``return_code=FAIL`` notify carries nothing to act on and is refused too. The
        caller still compares ``total_fee`` with the stored order amount.
        """
        fields = _notify_fields(body, root="xml")
        if fields.get("return_code") != SUCCESS:
            raise InvalidNotification("return_code is not SUCCESS", RefusalKind.PROTOCOL)
        try:
            sign_type = sign_type_of(fields, self.sign_type)
        except ValueError:
            raise InvalidNotification("unknown sign_type", RefusalKind.SIGNATURE) from None
        if not verify(fields, self._key, sign_type):
            raise InvalidNotification("signature does not verify", RefusalKind.SIGNATURE)
        if fields.get("appid") != self.appid or fields.get("mch_id") != self.mch_id:
            raise InvalidNotification("appid or mch_id is not ours", RefusalKind.MERCHANT)
        return _build_notify(PaymentNotify, fields)

    def decrypt_refund_notify(self, body: bytes) -> RefundNotifyInfo:
        """The decrypted result of a refund notify (§6.5), or ``InvalidNotification``.

        The outer message is unsigned; it counts as WeChat's only because ``req_info`` decrypts
        (AES-256-ECB, key = lowercase MD5 hex of the API key, PKCS#7) and the ids are ours.
        """
        outer = _build_notify(RefundNotify, _notify_fields(body, root="xml"))
        if outer.return_code != SUCCESS or not outer.req_info:
            raise InvalidNotification(
                "return_code is not SUCCESS or req_info is missing", RefusalKind.PROTOCOL
            )
        if outer.appid != self.appid or outer.mch_id != self.mch_id:
            raise InvalidNotification("appid or mch_id is not ours", RefusalKind.MERCHANT)
        try:
            plaintext = decrypt_req_info(outer.req_info, self._key)
        except ReqInfoInvalid as exc:
            raise InvalidNotification(f"req_info: {exc}", RefusalKind.DECRYPTION) from None
        return _build_notify(RefundNotifyInfo, _notify_fields(plaintext, root="root"))


def merchant_cert(settings: Settings) -> tuple[str, str] | None:
    """The (certificate, key) pair for the refund client's mutual TLS, if both are configured."""
    if settings.mch_cert_path and settings.mch_key_path:
        return settings.mch_cert_path, settings.mch_key_path
    return None


def _notify_fields(body: bytes, *, root: str) -> dict[str, str]:
    try:
        return from_xml(body, root=root)
    except XmlRejected as exc:
        raise InvalidNotification(f"unreadable XML ({exc.fault})", RefusalKind.XML) from None


def _build_notify(model: type[N], fields: Mapping[str, str]) -> N:
    try:
        return model.from_fields(fields)
    except ValidationError as exc:
        raise InvalidNotification(
            f"unexpected fields: {_summary(exc)}", RefusalKind.FIELDS
        ) from None


def _summary(exc: ValidationError) -> str:
    # Field locations and messages only; WeChat's values stay out of error text and logs.
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors()
    )
