"""/docs rendered in headless Chromium with no network (issue 15, item 8): every host name
but the loopback address fails to resolve, as on a machine with no internet, and Swagger UI
still lists the operations. Served by uvicorn, as a developer opens it."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.plugins.service import LiveFactory
from tests.simulator.test_cashier_page import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

# Nothing but 127.0.0.1 resolves: a CDN is as unreachable as it is offline.
OFFLINE = '--host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"'

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin"),
]


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[WebDriver]:
    try:
        from selenium import webdriver
    except ImportError as missing:  # a set-up mistake, not a reason to skip quietly
        raise RuntimeError("browser tests need: pip install -e '.[browser]'") from missing
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, OFFLINE):
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield driver
        finally:
            driver.quit()


async def test_docs_render_the_operations_with_no_network(
    make_live_client: LiveFactory, offline_browser: WebDriver
) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    client = await make_live_client()
    offline_browser.get(f"{client.base_url}/docs")

    wait = WebDriverWait(offline_browser, 20)
    wait.until(expected_conditions.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    paths = {
        e.get_attribute("data-path")
        for e in offline_browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
    }
    assert "/api/v1/auth/login" in paths
    assert "/api/v1/orders/{out_trade_no}/pay-params" in paths
    # The page really was offline: the CDN FastAPI's own /docs uses does not resolve.
    with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
        offline_browser.get("https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css")
