"""The outbound HTTP client's trust: the public CAs, plus the ones the settings add."""

from __future__ import annotations

import httpx
import pytest

from app.config import Settings
from app.httpclient import build_http_client
from tests.plugins.tls import Pki, TlsSimulator


async def test_a_server_signed_by_the_extra_ca_is_trusted_only_with_the_setting(
    settings: Settings, tls_simulator: TlsSimulator, pki: Pki
) -> None:
    url = tls_simulator.handle.url("/_control/orders")
    trusting = settings.model_copy(update={"extra_ca_certs": str(pki.ca_cert)})

    async with build_http_client(trusting) as http:
        answered = await http.get(url)
    async with build_http_client(settings) as http:
        with pytest.raises(httpx.TransportError, match="certificate verify failed"):
            await http.get(url)

    assert answered.status_code == 200


def test_an_unreadable_extra_ca_file_fails_at_start_up(settings: Settings) -> None:
    missing = settings.model_copy(update={"extra_ca_certs": "/nonexistent/ca.pem"})

    with pytest.raises(FileNotFoundError):
        build_http_client(missing)
