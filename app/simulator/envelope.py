"""The v2 envelope every Pay endpoint shares: parse, authenticate, answer signed.

WeChat answers in two layers (PROTOCOL.md §2): ``return_code=FAIL`` with only ``return_msg``
when it cannot or will not read the request (bad XML, unknown merchant, bad signature, bad
field format), unsigned; otherwise ``return_code=SUCCESS``, signed with the request's sign
type, with ``result_code`` SUCCESS or FAIL + ``err_code``/``err_code_des``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from app.simulator.config import SimulatorConfig
from app.wechat.signing import SignType, new_nonce, sign, sign_type_of, verify
from app.wechat.xmlcodec import XmlFault, XmlRejected, from_xml, to_xml

_XML_MESSAGES = {
    XmlFault.EMPTY: "post数据为空",
    XmlFault.NOT_UTF8: "编码格式错误,请使用UTF-8编码",
}
PROTOCOL_FIELDS = ("appid", "mch_id", "nonce_str", "sign")


class ProtocolFail(Exception):
    """``return_code=FAIL``: WeChat did not accept the request at all."""

    def __init__(self, return_msg: str) -> None:
        super().__init__(return_msg)
        self.return_msg = return_msg


class BusinessFail(Exception):
    """``result_code=FAIL`` with WeChat's ``err_code`` and ``err_code_des``."""

    def __init__(self, err_code: str, err_code_des: str) -> None:
        super().__init__(f"{err_code}: {err_code_des}")
        self.err_code = err_code
        self.err_code_des = err_code_des


@dataclass(frozen=True, slots=True)
class SignedRequest:
    fields: dict[str, str]
    sign_type: SignType

    def get(self, name: str) -> str | None:
        return self.fields.get(name) or None


def open_request(body: bytes, config: SimulatorConfig) -> SignedRequest:
    """The authenticated fields of a request; ``ProtocolFail`` when WeChat would refuse it.

    Rules: well-formed flat UTF-8 XML; ``appid``/``mch_id``/``nonce_str``/``sign`` present;
    our ``mch_id``; a known ``sign_type``; a signature over every received field.
    """
    try:
        fields = from_xml(body)
    except XmlRejected as rejected:
        raise ProtocolFail(_XML_MESSAGES.get(rejected.fault, "XML格式错误")) from rejected
    for name in PROTOCOL_FIELDS:
        if not fields.get(name):
            raise ProtocolFail(f"缺少参数{name}")
    if not hmac.compare_digest(fields["mch_id"].encode(), config.mch_id.encode()):
        raise ProtocolFail("mch_id参数错误,商户号不存在")
    try:
        sign_type = sign_type_of(fields, SignType.MD5)
    except ValueError as unknown:
        raise ProtocolFail("sign_type参数错误") from unknown
    if not verify(fields, config.api_key, sign_type):
        raise ProtocolFail("签名错误")
    return SignedRequest(fields, sign_type)


def check_appid(request: SignedRequest, config: SimulatorConfig) -> None:
    if request.fields["appid"] != config.appid:
        raise BusinessFail("APPID_MCHID_NOT_MATCH", "appid和mch_id不匹配")


def signed_reply(
    request: SignedRequest, config: SimulatorConfig, fields: Mapping[str, object]
) -> bytes:
    """A ``return_code=SUCCESS`` answer, signed with the request's sign type."""
    reply: dict[str, object] = {
        "return_code": "SUCCESS",
        "return_msg": "OK",
        "appid": request.fields["appid"],
        "mch_id": config.mch_id,
        "nonce_str": new_nonce(),
        **fields,
    }
    reply["sign"] = sign(reply, config.api_key, request.sign_type)
    return to_xml(reply)


def success_reply(
    request: SignedRequest, config: SimulatorConfig, fields: Mapping[str, object]
) -> bytes:
    return signed_reply(request, config, {"result_code": "SUCCESS", **fields})


def business_fail_reply(
    request: SignedRequest, config: SimulatorConfig, fail: BusinessFail
) -> bytes:
    fields = {"result_code": "FAIL", "err_code": fail.err_code, "err_code_des": fail.err_code_des}
    return signed_reply(request, config, fields)


def protocol_fail_reply(fail: ProtocolFail) -> bytes:
    return to_xml({"return_code": "FAIL", "return_msg": fail.return_msg})
