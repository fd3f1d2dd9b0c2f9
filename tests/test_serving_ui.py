"""The chat page in a real browser (Debian's headless Chromium driven by selenium).

Type a question, watch the answer stream in, see a numbered citation; a screenshot stays in tmp.
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ragtune.serving.app import create_app


def ensure_browser() -> tuple[str, str] | None:
    """Chromium and its driver; installed from Debian when missing and we may (root + apt)."""

    def found() -> tuple[str, str] | None:
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
        return (browser, driver) if browser and driver else None

    if found() is None and os.geteuid() == 0 and shutil.which("apt-get"):
        install = ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
        if subprocess.run(install, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            subprocess.run(install, capture_output=True, timeout=600)
    return found()


@pytest.fixture(scope="module")
def browser():
    paths = ensure_browser()
    if paths is None:
        if os.environ.get("RAGTUNE_REQUIRE_BROWSER"):
            pytest.fail("RAGTUNE_REQUIRE_BROWSER is set but Chromium/chromedriver could not be installed")
        pytest.skip("Chromium and chromedriver are not installed (needs root + apt)")
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must not try to download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=paths[1]))
    yield driver
    driver.quit()


def test_chat_page_streams_an_answer_with_citations(serving_pipeline, live_server, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with live_server(create_app(serving_pipeline())) as url:
        browser.get(url + "/")
        wait = WebDriverWait(browser, 120)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "adapter")).options) > 1)  # adapters listed
        assert "tiny" in [o.text for o in Select(browser.find_element(By.ID, "adapter")).options]
        browser.find_element(By.ID, "question").send_keys("How long does a Zorblat lamp battery last?")
        Select(browser.find_element(By.ID, "mode")).select_by_visible_text("rag")
        # count how often the answer text changes: streaming shows pieces, not one final block
        browser.execute_script(
            "window.pieces = 0; new MutationObserver((ms) => { for (const m of ms) {"
            " const t = m.target.nodeType === 1 ? m.target : m.target.parentElement;"
            " if (t && t.classList.contains('a')) window.pieces++; } })"
            ".observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});"
        )
        browser.find_element(By.ID, "send").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".cites li"))
        answer = browser.find_element(By.CSS_SELECTOR, ".turn .a").text
        cites = [li.text for li in browser.find_elements(By.CSS_SELECTOR, ".cites li")]
        meta = browser.find_element(By.CSS_SELECTOR, ".turn .meta").text
        browser.save_screenshot(str(tmp_path / "chat.png"))
    assert answer.strip() and "error" not in browser.find_element(By.CSS_SELECTOR, ".turn .a").get_attribute("class")
    assert cites[0] == "Zorblat Battery (zorblat-battery)"
    assert browser.execute_script("return window.pieces") >= 2
    assert "mode rag" in meta and "snapshot s" in meta
    assert (tmp_path / "chat.png").stat().st_size > 1000
