"""The status page in a real browser (Debian's headless Chromium, driven by Selenium):
load it, stop a health target, and see the member turn DOWN on the page.

Chromium is started so that it reaches nothing but loopback: every other request
goes to a dead proxy (127.0.0.1:9), and background networking is off.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import GslbProcess
from tests.targets import Target, free_port

CHROMIUM = shutil.which("chromium")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver (make deps)"
)

HOSTS = ["127.0.0.111", "127.0.0.112"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-domain-reliability", "--no-pings",
                 "--disable-client-side-phishing-detection", "--dns-prefetch-disable",
                 "--proxy-server=http://127.0.0.1:9", "--window-size=1200,900",
                 f"--user-data-dir={tmp_path / 'chromium'}"):  # fmt: skip
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER or ""), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def test_member_turns_down_on_the_page(browser: object, tmp_path: Path) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    port = free_port(HOSTS)
    ts = [Target(h, port) for h in HOSTS]
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "page.test.yaml").write_text(f"""zone: page.test.
nameservers: {{ns1.page.test.: [192.0.2.53]}}
checks: {{web: {{type: http, port: {port}, interval: 0.5s, timeout: 0.3s, fall: 2, rise: 2}}}}
pools:
  p: {{check: web, members: [{{address: {HOSTS[0]}, name: lb1}}, {{address: {HOSTS[1]}, name: lb2}}]}}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
""")
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    try:
        browser.get(f"http://127.0.0.1:{srv.api_port}/")
        # the page re-renders its tables every 2 s: an element found a moment ago may be gone
        wait = WebDriverWait(
            browser, 10, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        )

        def badge(name: str) -> tuple[str, str]:
            for _ in range(20):
                try:
                    el = browser.find_element(By.CSS_SELECTOR, f'span.state[data-member="{name}"]')
                    return el.text, el.get_attribute("class") or ""
                except StaleElementReferenceException:
                    continue  # replaced between finding and reading: find it again
            raise AssertionError("the status page kept re-rendering")

        wait.until(lambda d: badge("lb2")[0] == "UP")
        for _ in range(50):  # some traffic for the queries-per-second plot
            srv.query("www.page.test.", "A")
        ts[1].stop()
        wait.until(lambda d: badge("lb2")[0] == "DOWN")
        assert "down" in badge("lb2")[1].split()
        assert badge("lb1") == ("UP", "state up")
        # the page says why, and shows the transition
        wait.until(
            lambda d: (
                "connection refused"
                in d.find_element(By.XPATH, '//span[@data-member="lb2"]/ancestor::tr').text
            )
        )
        wait.until(lambda d: "127.0.0.112" in d.find_element(By.ID, "transitions").text)
        # both plots have drawn a line once there are a few samples (every 2 s)
        wait = WebDriverWait(
            browser, 12, poll_frequency=0.5, ignored_exceptions=[StaleElementReferenceException]
        )
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#healthy polyline").get_attribute("points"))
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#qps polyline").get_attribute("points"))
        wait.until(lambda d: "1 of 2" in d.find_element(By.ID, "healthy-now").text)
        browser.save_screenshot(str(tmp_path / "status.png"))
    finally:
        srv.stop()
        for t in ts:
            t.close()


def test_cluster_banner_when_the_store_is_unreachable(browser: object, tmp_path: Path) -> None:
    """A node whose etcd does not answer says so on its page, and who it is."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.support.ui import WebDriverWait

    assert isinstance(browser, WebDriver)
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "page.test.yaml").write_text("""zone: page.test.
nameservers: {ns1.page.test.: [192.0.2.53]}
records: {www: [{type: A, value: 192.0.2.1}]}
""")
    dead = free_port(["127.0.0.1"])  # no etcd there
    srv = GslbProcess(
        zdir, tmp_path / "gslb.log", ["--cluster", f"etcd://127.0.0.1:{dead}", "--node", "ams1",
                                      "--cluster-stale-after", "1"]
    )  # fmt: skip
    try:
        browser.get(f"http://127.0.0.1:{srv.api_port}/")
        wait = WebDriverWait(browser, 15, poll_frequency=0.2)
        wait.until(lambda d: "own observations only" in d.find_element(By.ID, "cluster-banner").text)
        banner = browser.find_element(By.ID, "cluster-banner").text
        assert banner.startswith("cluster store unreachable"), banner
        assert "node ams1" in browser.find_element(By.ID, "cluster-line").text
    finally:
        srv.stop()
