"""WeChat Pay API v3 over httpx (PROTOCOL.md §8): JSAPI prepay, query, close, refund, refund
query, and the payment and refund notifies, on the primitives of ``app.wechat.v3``.

- Every request is signed over the exact bytes sent; every 2xx answer must carry WeChat's
  signature, made with the key we were configured with (``Wechatpay-Serial``), or it is not
  trusted (§8.3): the outcome is then unknown, ``WeChatUnavailable``.
- Errors are an HTTP status plus ``{"code", "message"}`` (§8.1): 429 and 5xx (``SYSTEM_ERROR``)
  are retryable; other 4xx are WeChat's final word, ``WeChatRejected``.
- Retries resend the same body (same ``out_trade_no``, identical fields) with a fresh signature.

WeChat's signatures are checked with the keys in ``app.wechat.v3trust``: its public key, its
platform certificates (downloaded here when a serial is new), or both during a migration (§8.6).
``app.adapters.wechatpay_v3`` puts the client behind the payment-gateway port.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError

from app.wechat.errors import InvalidNotification, RefusalKind, WeChatRejected, WeChatUnavailable
from app.wechat.retry import RetryPolicy, with_retries
from app.wechat.transport import Reply, json_object, send
from app.wechat.v3 import (
    MerchantSigner,
    ResourceUnreadable,
    SignatureRejected,
    decrypt_resource,
    verify_wechat_signature,
)
from app.wechat.v3trust import PlatformCertificate, WeChatPayTrust

logger = logging.getLogger(__name__)

MAX_BYTES = 64 * 1024
_JSON = {"Accept": "application/json", "Content-Type": "application/json"}


class V3Amount(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    total: int = Field(ge=0)
    payer_total: int | None = None
    currency: str = "CNY"


class V3Transaction(BaseModel):
    """A transaction as order query and the payment notify report it (§8.5)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    appid: str
    mchid: str
    out_trade_no: str
    trade_state: str
    transaction_id: str | None = None
    trade_state_desc: str | None = None
    success_time: str | None = None
    amount: V3Amount | None = None


class V3RefundAmount(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    total: int = Field(ge=0)
    refund: int = Field(ge=0)
    payer_total: int | None = None
    payer_refund: int | None = None
    currency: str = "CNY"


class V3Refund(BaseModel):
    """A refund as the refund API, refund query and the refund notify report it (§8.7).

    ``status`` is ``SUCCESS``, ``CLOSED``, ``PROCESSING`` or ``ABNORMAL`` (the refund notify
    calls the same field ``refund_status``).
    """

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    out_refund_no: str
    out_trade_no: str
    refund_id: str
    status: str = Field(validation_alias=AliasChoices("status", "refund_status"))
    transaction_id: str | None = None
    mchid: str | None = None
    success_time: str | None = None
    amount: V3RefundAmount


class V3Rejected(WeChatRejected):
    """``WeChatRejected`` with what a v3 refusal adds: its HTTP status, and whether it carried
    a signature we verified. Only an unsigned 2xx is forged by rule (§8.3): an error may come
    unsigned (WeChat signs its answer only once the request's signature holds), and then
    anyone could have sent it."""

    def __init__(
        self, *, status: int, verified: bool, err_code: str | None, err_code_des: str
    ) -> None:
        super().__init__(err_code=err_code, err_code_des=err_code_des)
        self.status = status
        self.verified = verified


class WeChatPayV3Client:
    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        api_base: str,
        appid: str,
        signer: MerchantSigner,
        trust: WeChatPayTrust,
        api_v3_key: SecretStr,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``trust`` holds the keys WeChat Pay may sign with (§8.6); ``clock`` is a seam for
        tests of the five-minute window."""
        self._http = http
        self._api_base = api_base.rstrip("/")
        self.appid = appid
        self._signer = signer
        self.trust = trust
        if len(api_v3_key.get_secret_value().encode()) != 32:
            raise ValueError("the APIv3 key is 32 bytes")
        self._api_v3_key = api_v3_key
        self._retry = retry or RetryPolicy()
        self._clock = clock

    async def jsapi_prepay(
        self,
        *,
        description: str,
        out_trade_no: str,
        total: int,
        openid: str,
        notify_url: str,
        time_expire: str | None = None,
        attach: str | None = None,
        payer_client_ip: str | None = None,
    ) -> str:
        """``prepay_id`` for a mini-program order (§8.1), valid two hours."""
        body: dict[str, Any] = {
            "appid": self.appid,
            "mchid": self._signer.mchid,
            "description": description,
            "out_trade_no": out_trade_no,
            "notify_url": notify_url,
            "amount": {"total": total, "currency": "CNY"},
            "payer": {"openid": openid},
        }
        optional = {"time_expire": time_expire, "attach": attach}
        body |= {name: value for name, value in optional.items() if value is not None}
        if payer_client_ip:
            body["scene_info"] = {"payer_client_ip": payer_client_ip}
        answer = await self._call("POST", "/v3/pay/transactions/jsapi", body)
        prepay_id = answer.get("prepay_id")
        if not isinstance(prepay_id, str) or not prepay_id:
            raise WeChatUnavailable("WeChat Pay v3 prepay answered without a prepay_id")
        return prepay_id

    async def query(self, out_trade_no: str) -> V3Transaction:
        path = f"/v3/pay/transactions/out-trade-no/{_id(out_trade_no)}?mchid={self._signer.mchid}"
        return _model(V3Transaction, await self._call("GET", path, None), "WeChat Pay v3 query")

    async def close(self, out_trade_no: str) -> None:
        """204 on success; WeChat wants five minutes between order and close (§8.7)."""
        path = f"/v3/pay/transactions/out-trade-no/{_id(out_trade_no)}/close"
        await self._call("POST", path, {"mchid": self._signer.mchid})

    async def refund(
        self,
        *,
        out_trade_no: str,
        out_refund_no: str,
        refund: int,
        total: int,
        reason: str | None = None,
        notify_url: str | None = None,
    ) -> V3Refund:
        """Ask for a refund (§8.7); the same ``out_refund_no`` refunds at most once, so a retry
        is safe. Acceptance is not completion: see ``status``."""
        body: dict[str, Any] = {
            "out_trade_no": out_trade_no,
            "out_refund_no": out_refund_no,
            "amount": {"refund": refund, "total": total, "currency": "CNY"},
        }
        optional = {"reason": reason, "notify_url": notify_url}
        body |= {name: value for name, value in optional.items() if value is not None}
        answer = await self._call("POST", "/v3/refund/domestic/refunds", body)
        return _model(V3Refund, answer, "WeChat Pay v3 refund")

    async def refund_query(self, out_refund_no: str) -> V3Refund:
        path = f"/v3/refund/domestic/refunds/{_id(out_refund_no)}"
        answer = await self._call("GET", path, None)
        return _model(V3Refund, answer, "WeChat Pay v3 refund query")

    def pay_params(self, prepay_id: str) -> dict[str, str]:
        return self._signer.pay_params(self.appid, prepay_id, timestamp=str(int(self._clock())))

    async def parse_payment_notify(self, headers: Mapping[str, str], body: bytes) -> V3Transaction:
        """A verified, decrypted payment notify for our appid and mchid (§8.5), or
        ``InvalidNotification``: the signature is checked over the raw body first."""
        transaction = _notice(V3Transaction, await self._open_notify(headers, body))
        if transaction.appid != self.appid or transaction.mchid != self._signer.mchid:
            raise InvalidNotification("appid or mchid is not ours", RefusalKind.MERCHANT)
        if transaction.amount is None:
            # The amount is what must match the order (§8.5): without it, nothing to check.
            raise InvalidNotification("no amount in the transaction", RefusalKind.FIELDS)
        return transaction

    async def parse_refund_notify(self, headers: Mapping[str, str], body: bytes) -> V3Refund:
        """A verified, decrypted refund notify for our mchid (§8.7, ``REFUND.*`` events)."""
        refund = _notice(V3Refund, await self._open_notify(headers, body))
        if refund.mchid != self._signer.mchid:
            raise InvalidNotification("mchid is not ours", RefusalKind.MERCHANT)
        return refund

    async def _open_notify(self, headers: Mapping[str, str], body: bytes) -> bytes:
        _refuse_repeated_signature_headers(headers)
        try:
            await self._verify(headers, body)
        except SignatureRejected as exc:
            raise InvalidNotification(str(exc), RefusalKind.SIGNATURE) from None
        try:
            envelope = json.loads(body)
            resource = envelope["resource"]
            # §8.5: only an encrypted resource under AES-256-GCM is a notify we can read.
            if envelope.get("resource_type") != "encrypt-resource":
                raise InvalidNotification(
                    "resource_type is not encrypt-resource", RefusalKind.FIELDS
                )
            if resource.get("algorithm") != "AEAD_AES_256_GCM":
                raise InvalidNotification("algorithm is not AEAD_AES_256_GCM", RefusalKind.FIELDS)
            return decrypt_resource(
                self._api_v3_key.get_secret_value(),
                nonce=resource["nonce"],
                associated_data=resource.get("associated_data") or "",
                ciphertext=resource["ciphertext"],
            )
        except ResourceUnreadable as exc:
            raise InvalidNotification(str(exc), RefusalKind.DECRYPTION) from None
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InvalidNotification("no readable resource", RefusalKind.FIELDS) from None

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        # Serialised once, so every attempt sends (and signs) the same bytes.
        content = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()

        async def attempt() -> dict[str, Any]:
            return await self._send_once(method, path, content)

        return await with_retries(attempt, self._retry, path.split("?")[0])

    async def _send_once(self, method: str, path: str, content: bytes) -> dict[str, Any]:
        what = f"WeChat Pay v3 {method} {path.split('?')[0]}"
        reply = await self._exchange(method, path, content, what)
        # A success must be signed (§8.3); an error is checked too when it carries a signature,
        # and an unsigned one can only say "no": it moves no money.
        signed = 200 <= reply.status < 300 or "Wechatpay-Signature" in reply.headers
        if signed:
            try:
                await self._verify(reply.headers, reply.body)
            except SignatureRejected as exc:
                raise WeChatUnavailable(f"{what} answered untrusted: {exc}") from None
        _raise_for_error(reply, what, verified=signed)  # a signed answer got here verified
        return json_object(reply.body, what) if reply.body else {}

    async def _exchange(self, method: str, path: str, content: bytes, what: str) -> Reply:
        authorization = self._signer.authorization(
            method, path, content, timestamp=str(int(self._clock()))
        )
        headers = {**_JSON, "Authorization": authorization}
        if serial := self.trust.request_serial:
            headers["Wechatpay-Serial"] = serial
        return await send(
            self._http, method, self._api_base + path, max_bytes=MAX_BYTES, what=what,
            api=api_name(method, path), content=content or None, headers=headers,
        )  # fmt: skip

    async def _verify(self, headers: Mapping[str, str], body: bytes) -> None:
        headers = httpx.Headers(headers)  # header names are case-insensitive, whatever the caller
        serial = headers.get("Wechatpay-Serial", "")
        key = self.trust.key(serial)
        if key is None and serial and self.trust.due_for_download():
            # A serial we have not seen: WeChat may have rotated its certificate (§8.3).
            await self._refresh_trust()
            key = self.trust.key(serial)
        if key is None:
            raise SignatureRejected("signed with a key we do not know (Wechatpay-Serial)")
        _verify_with(key, headers, body, now=int(self._clock()))

    async def _refresh_trust(self) -> None:
        # A failed download leaves the serial unknown: the message is then untrusted (an
        # answer's outcome unknown, a notify refused and sent again), never a refusal.
        try:
            await self.trust.refresh(self.download_certificates)
        except (WeChatUnavailable, WeChatRejected) as exc:
            logger.warning("WeChat Pay platform certificates not downloaded: %s", exc)

    async def download_certificates(self) -> list[PlatformCertificate]:
        """WeChat Pay's platform certificates (§8.6), each decrypted with the APIv3 key and
        checked, and the answer's signature verified by one of them.

        The answer cannot be checked with a key known in advance (it is how keys become known):
        the AES-GCM seal proves each certificate came from WeChat, since only WeChat and we hold
        the APIv3 key; the signature then proves the list was not cut or replayed."""
        what = "WeChat Pay v3 GET /v3/certificates"

        async def attempt() -> Reply:
            reply = await self._exchange("GET", "/v3/certificates", b"", what)
            _raise_for_error(reply, what)
            return reply

        reply = await with_retries(attempt, self._retry, "/v3/certificates")
        listed = _model(_CertificateList, json_object(reply.body, what), what)
        certificates = _certificates(listed, self._api_v3_key, self._now())
        by_serial = {c.serial: c.key for c in certificates}
        serial = reply.headers.get("Wechatpay-Serial", "").upper()
        key = by_serial.get(serial) or self.trust.key(serial)
        try:
            if key is None:
                raise SignatureRejected("not signed by a certificate it lists")
            _verify_with(key, reply.headers, reply.body, now=int(self._clock()))
        except SignatureRejected as exc:
            raise WeChatUnavailable(f"{what} answered untrusted: {exc}") from None
        return certificates

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)


def _verify_with(
    key: rsa.RSAPublicKey, headers: Mapping[str, str], body: bytes, *, now: int
) -> None:
    verify_wechat_signature(
        timestamp=headers.get("Wechatpay-Timestamp", ""),
        nonce=headers.get("Wechatpay-Nonce", ""),
        body=body,
        signature=headers.get("Wechatpay-Signature", ""),
        key=key,
        now=now,
    )


class _SealedCertificate(BaseModel):
    model_config = ConfigDict(frozen=True)

    algorithm: str
    nonce: str
    associated_data: str | None = None
    ciphertext: str


class _ListedCertificate(BaseModel):
    model_config = ConfigDict(frozen=True)

    serial_no: str
    encrypt_certificate: _SealedCertificate


class _CertificateList(BaseModel):
    """The shape of a ``GET /v3/certificates`` answer (§8.6); anything else is an answer with
    unexpected fields, like any other."""

    model_config = ConfigDict(frozen=True)

    data: list[_ListedCertificate]


def _certificates(
    listed: _CertificateList, api_v3_key: SecretStr, now: datetime
) -> list[PlatformCertificate]:
    """The listed certificates that are valid now. During a rotation WeChat lists the old
    certificate next to the new one (§8.6): one that has lapsed, or is not valid yet, is
    skipped, not a reason to distrust the others. Any other flaw in any entry fails the whole
    download, and so does a list in which no certificate is valid now."""
    try:
        checked = [_certificate(entry, api_v3_key, now) for entry in listed.data]
    except ValueError as exc:
        raise WeChatUnavailable(f"WeChat Pay v3 certificates unusable: {exc}") from None
    valid = [certificate for certificate in checked if certificate is not None]
    if checked and not valid:
        raise WeChatUnavailable("WeChat Pay v3 certificates unusable: none is valid now")
    return valid


def _certificate(
    entry: _ListedCertificate, api_v3_key: SecretStr, now: datetime
) -> PlatformCertificate | None:
    """The certificate ``entry`` seals, checked; ``None`` when it is not valid now."""
    sealed = entry.encrypt_certificate
    if sealed.algorithm != "AEAD_AES_256_GCM":
        raise ValueError("algorithm is not AEAD_AES_256_GCM")
    pem = decrypt_resource(
        api_v3_key.get_secret_value(),
        nonce=sealed.nonce,
        associated_data=sealed.associated_data or "",
        ciphertext=sealed.ciphertext,
    )
    certificate = x509.load_pem_x509_certificate(pem)
    serial = format(certificate.serial_number, "X")
    if serial != entry.serial_no.upper():
        raise ValueError("serial_no does not match the certificate")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"certificate {serial} does not hold an RSA key")
    expiry = certificate.not_valid_after_utc
    if not certificate.not_valid_before_utc <= now < expiry:
        state = "expired" if expiry <= now else "not valid yet"
        logger.warning(
            "WeChat Pay platform certificate %s skipped: %s (expires %s)",
            serial, state, expiry.isoformat(),
        )  # fmt: skip
        return None
    return PlatformCertificate(serial, key, expiry)


_SIGNATURE_HEADERS = ("wechatpay-signature", "wechatpay-timestamp", "wechatpay-nonce",
                      "wechatpay-serial")  # fmt: skip


def _refuse_repeated_signature_headers(headers: Mapping[str, str]) -> None:
    """A signature header sent twice is ambiguous (which one was checked?): refused."""
    getlist = getattr(headers, "getlist", None)  # Starlette's and httpx's headers keep repeats
    if getlist is None:
        return
    if any(len(getlist(name)) > 1 for name in _SIGNATURE_HEADERS):
        raise InvalidNotification("a Wechatpay-* header is repeated", RefusalKind.SIGNATURE)


_IDS_IN_PATH = re.compile(r"/(out-trade-no|refunds)/[^/?]+")


def api_name(method: str, path: str) -> str:
    """``v3 GET /v3/pay/transactions/out-trade-no/{id}``: the path with its ids taken out, so
    one API is one metric label however many orders there are."""
    template = _IDS_IN_PATH.sub(r"/\1/{id}", path.split("?")[0])
    return f"v3 {method} {template}"


def _raise_for_error(reply: Reply, what: str, *, verified: bool = False) -> None:
    if 200 <= reply.status < 300:
        return
    try:
        error = json.loads(reply.body)
        code, message = str(error.get("code") or ""), str(error.get("message") or "")
    except (ValueError, AttributeError):
        code, message = "", ""
    # WeChat's Request-ID names the call in a support ticket: kept with the error, so it is
    # stored where the failure is (an order's prepay_error, a refund's error).
    request_id = _request_id(reply)
    if reply.status == 429 or reply.status >= 500:
        raise WeChatUnavailable(
            f"{what} answered HTTP {reply.status} {code}".strip() + request_id, err_code=code
        )
    raise V3Rejected(
        status=reply.status,
        verified=verified,
        err_code=code or None,
        err_code_des=(message or code) + request_id,
    )


def _request_id(reply: Reply) -> str:
    found = reply.headers.get("Request-ID") or ""
    # Only what an id looks like: the header is not signed on an error answer.
    return f" (Request-ID {found})" if _REQUEST_ID.fullmatch(found) else ""


M = TypeVar("M", bound=BaseModel)
# What WeChat takes for out_trade_no and out_refund_no (§2.1, §6.3): safe in a URL path as is.
_ID = re.compile(r"[0-9A-Za-z_\-|*@]{1,64}")
_REQUEST_ID = re.compile(r"[0-9A-Za-z\-]{1,64}")


def _id(value: str) -> str:
    if not _ID.fullmatch(value):
        raise ValueError(f"not an id WeChat Pay accepts: {value!r}")
    return value


def _model(model: type[M], answer: dict[str, Any], what: str) -> M:
    try:
        return model.model_validate(answer)
    except ValidationError:
        raise WeChatUnavailable(f"{what} answered unexpected fields") from None


def _notice(model: type[M], plaintext: bytes) -> M:
    try:
        return model.model_validate_json(plaintext)
    except ValidationError:
        raise InvalidNotification("unexpected fields in the resource", RefusalKind.FIELDS) from None
