"""The cashier page, driven in headless Chromium (Debian's ``chromium`` + ``chromium-driver``)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import wait_until
from tests.plugins.simulator import SimulatorHandle
from tests.simulator.test_server import unified_order

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    try:
        from selenium import webdriver
    except ImportError as missing:  # a set-up mistake, not a reason to skip quietly
        raise RuntimeError("browser tests need: pip install -e '.[browser]'") from missing
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    with tempfile.TemporaryDirectory() as profile:
        options.add_argument(f"--user-data-dir={profile}")
        service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
        driver = webdriver.Chrome(options=options, service=service)
        driver.implicitly_wait(2)
        try:
            yield driver
        finally:
            driver.quit()


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def text_of(driver: WebDriver, element_id: str) -> str:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    try:
        return str(by_id(driver, element_id).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""  # the page re-rendered in between; the caller polls again


async def test_minting_a_login_code_shows_a_usable_code(
    browser: WebDriver, fresh_simulator: SimulatorHandle
) -> None:
    browser.get(fresh_simulator.base_url + "/")
    by_id(browser, "openid").send_keys("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o")
    by_id(browser, "mint").click()

    await wait_until(lambda: len(text_of(browser, "minted-code")) == 32)
    assert text_of(browser, "minted-openid") == "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"


async def test_paying_a_pending_order_delivers_the_notify_and_logs_it(
    browser: WebDriver, fresh_simulator: SimulatorHandle
) -> None:
    _, openid = await fresh_simulator.login_code()
    reply = await unified_order(fresh_simulator, openid, "http://127.0.0.1:9/notify")
    out_trade_no = (await fresh_simulator.orders())[0]["out_trade_no"]
    browser.get(fresh_simulator.base_url + "/")

    by_id(browser, f"pay-{out_trade_no}").click()
    await wait_until(lambda: "SUCCESS" in text_of(browser, f"order-{out_trade_no}"))
    await wait_until(lambda: "error" in text_of(browser, "delivery-1"))

    assert reply["prepay_id"] == (await fresh_simulator.orders())[0]["prepay_id"]
    assert (await fresh_simulator.orders())[0]["trade_state"] == "SUCCESS"
    assert text_of(browser, "no-pending") == "No order is waiting for payment."


async def test_failing_a_payment_marks_the_order_payerror(
    browser: WebDriver, fresh_simulator: SimulatorHandle
) -> None:
    _, openid = await fresh_simulator.login_code()
    await unified_order(fresh_simulator, openid, "http://127.0.0.1:9/notify")
    out_trade_no = (await fresh_simulator.orders())[0]["out_trade_no"]
    browser.get(fresh_simulator.base_url + "/")

    by_id(browser, f"fail-{out_trade_no}").click()
    await wait_until(lambda: "PAYERROR" in text_of(browser, f"order-{out_trade_no}"))

    assert (await fresh_simulator.orders())[0]["trade_state"] == "PAYERROR"
    assert await fresh_simulator.notifies() == []
