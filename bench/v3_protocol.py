"""What WeChat Pay v3's cryptography costs per operation, beside v2's, in one process.

Planning data for moving create-order and notify to v3 (RSA-2048 instead of MD5):

- create order's protocol work: v2 = sign + build the unified-order XML, parse + verify the
  reply, sign the pay params; v3 = sign the request (RSA), verify the reply's signature (RSA
  public key), sign the pay params (RSA).
- notify: v2 = parse + verify the XML; v3 = verify the signature over the raw body, then
  AES-256-GCM decrypt the resource and parse its JSON.

Inputs are PROTOCOL.md §10 vectors (L1/L3 for v2, H/L5 for v3). Rounds interleave v2 and v3;
the ratio is the median of per-round ratios. Run: ``.venv/bin/python bench/v3_protocol.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from protocol import API_KEY, NOTIFY_XML, ORDER

from app.wechat.signing import SignType, build_pay_params, verify
from app.wechat.v3 import (
    MerchantSigner,
    decrypt_resource,
    load_private_key,
    load_public_key,
    verify_wechat_signature,
)
from app.wechat.xmlcodec import from_xml, to_signed_xml
from tests.wechat.vectors_v3 import (
    H_BODY,
    L5_API_V3_KEY,
    L5_BODY,
    L5_NONCE,
    L5_SIGNATURE,
    L5_TIMESTAMP,
    TEST_PRIVATE_KEY,
    TEST_PUBLIC_KEY,
)

SIGNER = MerchantSigner("1900007291", "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB",
                        load_private_key(TEST_PRIVATE_KEY))  # fmt: skip
WECHAT_KEY = load_public_key(TEST_PUBLIC_KEY)
REPLY_V2 = NOTIFY_XML  # a signed XML answer, about the size of unified order's reply


def v2_create() -> None:
    to_signed_xml(ORDER, API_KEY)
    verify(from_xml(REPLY_V2), API_KEY)
    build_pay_params(appid="wx1", prepay_id="wx20", api_key=API_KEY, sign_type=SignType.MD5)


def v3_create() -> None:
    SIGNER.authorization("POST", "/v3/pay/transactions/jsapi", H_BODY, timestamp=L5_TIMESTAMP)
    _v3_verify()
    SIGNER.pay_params("wx1", "wx20", timestamp=L5_TIMESTAMP)


def v2_notify() -> None:
    verify(from_xml(NOTIFY_XML), API_KEY)


def v3_notify() -> None:
    _v3_verify()
    resource = json.loads(L5_BODY)["resource"]
    plaintext = decrypt_resource(
        L5_API_V3_KEY,
        nonce=resource["nonce"],
        associated_data=resource["associated_data"],
        ciphertext=resource["ciphertext"],
    )
    json.loads(plaintext)


def _v3_verify() -> None:
    verify_wechat_signature(
        timestamp=L5_TIMESTAMP, nonce=L5_NONCE, body=L5_BODY, signature=L5_SIGNATURE,
        key=WECHAT_KEY, now=int(L5_TIMESTAMP),
    )  # fmt: skip


def per_call_us(operation: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        operation()
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    pairs = {"create order": (v2_create, v3_create), "notify": (v2_notify, v3_notify)}
    print(f".venv/bin/python bench/v3_protocol.py --rounds {args.rounds} --calls {args.calls}\n")
    print("| operation | v2 µs | v3 µs | v3 / v2 |\n|---|---:|---:|---:|")
    for name, (v2, v3) in pairs.items():
        v2_times, v3_times, ratios = [], [], []
        for index in range(args.rounds):
            order = (v2, v3) if index % 2 == 0 else (v3, v2)
            timed = {op: per_call_us(op, args.calls) for op in order}
            v2_times.append(timed[v2])
            v3_times.append(timed[v3])
            ratios.append(timed[v3] / timed[v2])
        v2_us, v3_us = statistics.median(v2_times), statistics.median(v3_times)
        print(f"| {name} | {v2_us:.1f} | {v3_us:.1f} | {statistics.median(ratios):.1f} |")


if __name__ == "__main__":
    main()
