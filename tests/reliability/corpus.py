"""The hostile-input corpus: one JSON file per case under ``corpus/notify`` and ``corpus/api``.

A case names a request (``method``, ``path``, ``headers``, and a body: ``body`` text,
``body_file`` exact bytes beside it, ``body_b64``, or ``body_repeat`` for large bodies made at
run time; ``chunked`` sends it with no Content-Length) and what must come back (``expect``:
``"4xx"``, ``"fail"`` for a WeChat XML FAIL, or ``{"status": N}``). ``{{NAME}}`` placeholders
are filled from the scenario's fixtures; a case with ``sign`` gets ``{{SIGN}}`` replaced by a
signature made with the real key over the body's fields (with ``sign.over`` overriding some,
e.g. to move a valid signature onto another order, and ``sign.encoding`` sending the signed
document in another encoding). The fields to sign are read leniently, by pattern, so a case
can sign a form the service must refuse to read.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.wechat.signing import SignType, sign

CORPUS = Path(__file__).parent / "corpus"
# A field element with or without attributes, its value in CDATA or plain text.
_FIELD = re.compile(r"<([A-Za-z_][\w.-]*)(?:\s[^>]*)?>(?:<!\[CDATA\[(.*?)\]\]>|([^<]*))</\1>")


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    expect: Any
    chunked: bool = False  # sent as a stream with no Content-Length


def load_cases() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.parent.name}/{path.stem}", json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(CORPUS.glob("*/*.json"))
    ]


def render(name: str, spec: dict[str, Any], values: dict[str, str], api_key: str) -> Case:
    request = spec["request"]
    headers = {k: _fill(v, values) for k, v in request.get("headers", {}).items()}
    body = _body(request, values)
    if "sign" in spec:
        encoding = spec["sign"].get("encoding", "utf-8")
        body = _signed(body.decode(), spec["sign"], values, api_key).encode(encoding)
    return Case(
        name=name,
        description=spec["description"],
        method=request["method"],
        path=_fill(request["path"], values),
        headers=headers,
        body=body,
        expect=spec["expect"],
        chunked=bool(request.get("chunked", False)),
    )


def _body(request: dict[str, Any], values: dict[str, str]) -> bytes:
    if "body_file" in request:
        return (CORPUS / "notify" / str(request["body_file"])).read_bytes()
    if "body_b64" in request:
        return base64.b64decode(str(request["body_b64"]))
    if "body_repeat" in request:
        spec = request["body_repeat"]
        middle = str(spec["chunk"]) * int(spec["times"])
        prefix, suffix = _fill(spec["prefix"], values), _fill(spec["suffix"], values)
        return (prefix + middle + suffix).encode()
    return _fill(request.get("body", ""), values).encode()


def _signed(body: str, options: dict[str, Any], values: dict[str, str], api_key: str) -> str:
    fields = {
        name: cdata or text
        for name, cdata, text in _FIELD.findall(body.replace("{{SIGN}}", ""))
        if name != "sign"
    }
    fields.update({k: _fill(v, values) for k, v in options.get("over", {}).items()})
    declared = fields.get("sign_type", "MD5")
    sign_type = SignType(
        options.get("sign_type", declared if declared in {t.value for t in SignType} else "MD5")
    )
    return body.replace("{{SIGN}}", sign(fields, api_key, sign_type))


def _fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    return text
