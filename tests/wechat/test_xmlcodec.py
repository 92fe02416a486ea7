"""The XML codec: exact output, and refusal of hostile bodies (PROTOCOL.md §2, §9.1)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from app.wechat import xmlcodec
from app.wechat.signing import SignType, sign, verify
from app.wechat.xmlcodec import (
    DEFAULT_MAX_BYTES,
    XmlFault,
    XmlRejected,
    from_xml,
    to_signed_xml,
    to_xml,
)
from tests.wechat.conftest import API_KEY


def _refusal(body: bytes, **options: object) -> XmlFault:
    with pytest.raises(XmlRejected) as caught:
        from_xml(body, **options)  # type: ignore[arg-type]
    return caught.value.fault


# --- building --------------------------------------------------------------------------------


def test_text_goes_in_cdata_integers_bare_and_none_is_left_out() -> None:
    body = to_xml({"body": "示例 <b>&", "total_fee": 100, "attach": None, "detail": ""})
    assert (
        body
        == (
            "<xml><body><![CDATA[示例 <b>&]]></body><total_fee>100</total_fee>"
            "<detail><![CDATA[]]></detail></xml>"
        ).encode()
    )


def test_a_cdata_terminator_inside_a_value_survives_the_round_trip() -> None:
    value = "a]]>b<![CDATA[c]]>"
    body = to_xml({"attach": value})
    assert body.count(b"<attach>") == 1
    assert from_xml(body) == {"attach": value}


def test_carriage_returns_survive_the_round_trip() -> None:
    # XML parsers turn CR and CRLF into LF even inside CDATA, which would break the signature.
    value = "line1\r\nline2\rline3"
    assert from_xml(to_xml({"detail": value})) == {"detail": value}


@pytest.mark.parametrize("value", ["nul\x00", "bell\x07", "\ufffe", "esc\x1b["])
def test_characters_xml_cannot_carry_are_refused_when_building(value: str) -> None:
    with pytest.raises(ValueError):
        to_xml({"attach": value})


@pytest.mark.parametrize("name", ["a b", "a><x", "1abc", "", "a&b"])
def test_field_names_that_are_not_plain_xml_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        to_xml({name: "v"})


def test_signed_xml_equals_sign_then_build_in_ascii_order() -> None:
    fields = {"b": "2", "a": 1, "c": "", "d": None, "sign": "STALE"}
    expected_sign = sign(fields, API_KEY, SignType.HMAC_SHA256)
    assert to_signed_xml(fields, API_KEY, SignType.HMAC_SHA256) == to_xml(
        {"a": 1, "b": "2", "c": "", "sign": expected_sign}
    )


# --- parsing ---------------------------------------------------------------------------------


def test_parses_a_flat_document_with_whitespace_between_fields() -> None:
    body = b"<xml>\n  <return_code>SUCCESS</return_code>\n  <n><![CDATA[1]]></n>\n  <e/>\n</xml>"
    assert from_xml(body) == {"return_code": "SUCCESS", "n": "1", "e": ""}


def test_external_entity_file_read_is_refused_before_parsing(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-API-KEY")
    body = (
        f'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file://{secret}">]>'
        "<xml><attach>&xxe;</attach></xml>"
    ).encode()
    with pytest.raises(XmlRejected) as caught:
        from_xml(body)
    assert caught.value.fault is XmlFault.DOCTYPE
    assert "TOP-SECRET" not in str(caught.value)


def test_the_parser_itself_resolves_no_entities_even_past_the_screen(tmp_path: Path) -> None:
    # Defence in depth (§9.1): were the DOCTYPE screen ever bypassed, lxml still must not
    # read the file.
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-API-KEY")
    body = (
        f'<!DOCTYPE xml [<!ENTITY xxe SYSTEM "file://{secret}">]><xml><a>&xxe;</a></xml>'
    ).encode()
    document = etree.fromstring(body, xmlcodec._parser())
    assert b"TOP-SECRET" not in etree.tostring(document)


def test_billion_laughs_is_refused() -> None:
    entities = "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10)
    )
    body = (
        f'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY lol0 "lol">{entities}]>'
        "<xml><a>&lol9;</a></xml>"
    ).encode()
    assert _refusal(body) is XmlFault.DOCTYPE


def test_a_lowercase_or_spaced_doctype_is_refused_too() -> None:
    assert _refusal(b"<!doctype xml><xml/>") is XmlFault.DOCTYPE
    assert _refusal(b"<xml><!ENTITY a 'b'></xml>") is XmlFault.DOCTYPE


def test_a_ten_megabyte_body_is_refused_by_size() -> None:
    body = b"<xml><a>" + b"A" * (10 * 1024 * 1024) + b"</a></xml>"
    assert _refusal(body) is XmlFault.TOO_LARGE


def test_the_size_limit_is_exact_and_configurable() -> None:
    padding = b" " * (DEFAULT_MAX_BYTES - len(b"<xml></xml>"))
    assert from_xml(b"<xml>" + padding + b"</xml>") == {}
    assert _refusal(b"<xml>" + padding + b" </xml>") is XmlFault.TOO_LARGE
    assert _refusal(b"<xml><a>1</a></xml>", max_bytes=10) is XmlFault.TOO_LARGE


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><a>1</a>",  # truncated
        b"<xml><a>1</b></xml>",  # mismatched tags
        b"<html><body>502 Bad Gateway",  # a proxy's error page
        b'{"return_code": "SUCCESS"}',
        b"<xml><a>&undefined;</a></xml>",  # an entity reference with no DTD
        b"<xml><a>&#0;</a></xml>",
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    assert _refusal(body) is XmlFault.MALFORMED


@pytest.mark.parametrize(
    "body",
    [
        "<xml><a>示例</a></xml>".encode("gbk"),
        b'<?xml version="1.0" encoding="GBK"?><xml><a>ok</a></xml>',
        "<xml><a>ok</a></xml>".encode("utf-16"),
        b'\xef\xbb\xbf<?xml version="1.0" encoding="ISO-8859-1"?><xml/>',
    ],
)
def test_bodies_that_are_not_utf8_are_refused(body: bytes) -> None:
    assert _refusal(body) is XmlFault.NOT_UTF8


@pytest.mark.parametrize(
    "body",
    [
        # Valid UTF-8 byte by byte (every byte < 0x80), but lxml would sniff UTF-16 or UTF-32.
        "<xml><a>ok</a></xml>".encode("utf-16-le"),
        "<xml><a>ok</a></xml>".encode("utf-16-be"),
        "<xml><a>ok</a></xml>".encode("utf-32-le"),
        '<?xml version="1.0" encoding="UTF-16"?><xml><a>ok</a></xml>'.encode("utf-16-le"),
        b"<xml><a>o\x00k</a></xml>",
    ],
)
def test_nul_bytes_are_refused_as_not_utf8(body: bytes) -> None:
    assert _refusal(body) is XmlFault.NOT_UTF8


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-16", "utf-32", "utf-7"])
def test_a_doctype_is_refused_in_any_encoding(encoding: str) -> None:
    body = '<!DOCTYPE xml [<!ENTITY e "x">]><xml><a>&e;</a></xml>'.encode(encoding)
    assert _refusal(body) in (XmlFault.DOCTYPE, XmlFault.NOT_UTF8)


@pytest.mark.parametrize("doctype", [b"<!DOCTYPE xml>", b'<!DOCTYPE xml SYSTEM "x.dtd">'])
def test_a_doctype_past_the_byte_screen_is_still_refused(doctype: bytes) -> None:
    # Defence in depth: the parsed document is checked for a DTD too, were the screen's
    # pattern ever talked around.
    document = etree.fromstring(doctype + b"<xml><a>1</a></xml>", xmlcodec._parser())
    with pytest.raises(XmlRejected) as caught:
        xmlcodec._check_root(document, "xml")
    assert caught.value.fault is XmlFault.DOCTYPE


def test_a_document_declaring_another_encoding_is_still_read_as_utf8() -> None:
    # The screen already refuses the declaration; the parser must not obey it either.
    body = '<?xml version="1.0" encoding="ISO-8859-1"?><xml><a>示例</a></xml>'.encode()
    parsed = etree.fromstring(body, xmlcodec._parser())
    assert parsed[0].text == "示例"


@pytest.mark.parametrize(
    "body",
    [
        b'<xml><total_fee amount="1">990</total_fee></xml>',
        b'<xml a="1"><total_fee>990</total_fee></xml>',
        b'<xml xmlns:x="urn:x"><total_fee>990</total_fee></xml>',
        b'<xml><total_fee xml:lang="en">990</total_fee></xml>',
    ],
)
def test_attributes_are_refused(body: bytes) -> None:
    assert _refusal(body) is XmlFault.ATTRIBUTE


@pytest.mark.parametrize(
    "body",
    [b"<xml>9<a>1</a></xml>", b"<xml><a>1</a>90</xml>", b"<xml><a>1</a><![CDATA[x]]></xml>"],
)
def test_text_between_fields_is_refused(body: bytes) -> None:
    assert _refusal(body) is XmlFault.MALFORMED


def test_a_field_nested_two_levels_down_is_refused() -> None:
    assert _refusal(b"<xml><a>1<b>2<c>3</c></b></a></xml>") is XmlFault.NESTED


def test_cdata_and_plain_text_read_alike_with_whitespace_between_fields() -> None:
    body = b"<xml>\n  <a><![CDATA[990]]></a>\n\t<b>990</b>\r\n</xml>"
    assert from_xml(body) == {"a": "990", "b": "990"}


def test_a_utf8_declaration_and_bom_are_accepted() -> None:
    body = '\ufeff<?xml version="1.0" encoding="UTF-8"?><xml><a>示例</a></xml>'.encode()
    assert from_xml(body) == {"a": "示例"}


def test_nested_elements_are_refused() -> None:
    assert _refusal(b"<xml><a><b>1</b></a></xml>") is XmlFault.NESTED


def test_another_root_element_is_refused() -> None:
    assert _refusal(b"<root><a>1</a></root>") is XmlFault.WRONG_ROOT
    assert from_xml(b"<root><a>1</a></root>", root="root") == {"a": "1"}


def test_a_repeated_field_is_refused() -> None:
    # With two total_fee elements, which one was signed would be the parser's guess.
    assert _refusal(b"<xml><total_fee>1</total_fee><total_fee>100</total_fee></xml>") is (
        XmlFault.DUPLICATE
    )


@pytest.mark.parametrize("body", [b"", b"  \n "])
def test_an_empty_body_is_refused(body: bytes) -> None:
    assert _refusal(body) is XmlFault.EMPTY


def test_comments_and_processing_instructions_do_not_become_fields() -> None:
    assert from_xml(b"<xml><!-- note --><a>1<!-- x -->2</a><?pi data?></xml>") == {"a": "12"}


# --- property: build -> parse -> verify ------------------------------------------------------

_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,20}", fullmatch=True).filter(lambda n: n != "sign")
# Any text XML 1.0 can carry, including CR, "]]>" and non-BMP characters.
_xml_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\ufffe\uffff").filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20
    ),
    max_size=40,
)
_values = st.one_of(_xml_text, st.integers(min_value=0, max_value=10**12))


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(_names, _values, max_size=25),
    sign_type=st.sampled_from(SignType),
)
def test_any_field_set_round_trips_and_verifies(
    fields: dict[str, str | int], sign_type: SignType
) -> None:
    received = from_xml(to_signed_xml(fields, API_KEY, sign_type))
    assert {k: v for k, v in received.items() if k != "sign"} == {
        k: str(v) for k, v in fields.items()
    }
    assert verify(received, API_KEY, sign_type)
    assert received["sign"] == sign(fields, API_KEY, sign_type)
