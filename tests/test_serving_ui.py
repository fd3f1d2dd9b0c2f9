"""The chat page in a real browser: Debian's headless Chromium driven by selenium through chromedriver.

Type a question, watch the answer stream in, see a numbered citation; a screenshot stays in tmp.
"""

import os
import shutil
from pathlib import Path

import pytest

from ragtune.serving.app import create_app

# `make browser` installs both from Debian (chromium, chromium-driver); nothing is downloaded at run time
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def driver():
    if CHROMIUM is None or CHROMEDRIVER is None:
        missing = "chromium" if CHROMIUM is None else "chromedriver"
        if os.environ.get("RAGTUNE_REQUIRE_BROWSER"):
            pytest.fail(f"RAGTUNE_REQUIRE_BROWSER is set but {missing} is not on PATH (run `make browser`)")
        pytest.skip(f"{missing} is not installed (`make browser` installs it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # an explicit driver path: selenium's own driver manager would try the network
    d = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
    yield d
    d.quit()


def test_chat_page_streams_an_answer_with_citations(serving_pipeline, live_server, driver, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 120)
    with live_server(create_app(serving_pipeline())) as url:
        driver.get(url + "/")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#adapter option")) > 1)
        assert "tiny" in [o.text for o in driver.find_elements(By.CSS_SELECTOR, "#adapter option")]
        driver.find_element(By.ID, "question").send_keys("How long does a Zorblat lamp battery last?")
        Select(driver.find_element(By.ID, "mode")).select_by_visible_text("rag")
        # count how often the answer text changes: streaming shows pieces, not one final block
        driver.execute_script(
            "window.pieces = 0; new MutationObserver((ms) => { for (const m of ms) {"
            " const t = m.target.nodeType === 1 ? m.target : m.target.parentElement;"
            " if (t && t.classList.contains('a')) window.pieces++; } })"
            ".observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});"
        )
        driver.find_element(By.ID, "send").click()
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ".cites li")))
        answer_el = driver.find_element(By.CSS_SELECTOR, ".turn .a")
        answer, answer_class = answer_el.text, answer_el.get_attribute("class") or ""
        cites = [li.text for li in driver.find_elements(By.CSS_SELECTOR, ".cites li")]
        meta = driver.find_element(By.CSS_SELECTOR, ".turn .meta").text
        pieces = driver.execute_script("return window.pieces")
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        driver.save_screenshot(str(tmp_path / "chat.png"))
    assert answer.strip() and "error" not in answer_class
    assert cites[0] == "Zorblat Battery (zorblat-battery)"
    assert pieces >= 2
    assert "mode rag" in meta and "snapshot s" in meta
    assert (tmp_path / "chat.png").stat().st_size > 1000
    assert not errors, errors


def test_chat_page_sends_the_conversation_and_forgets_it_on_reset(serving_pipeline, live_server, driver):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    wait = WebDriverWait(driver, 120)

    def ask(question: str, turns: int) -> None:
        driver.find_element(By.ID, "question").send_keys(question)
        driver.find_element(By.ID, "send").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn .meta")) == turns)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".turn .meta")[-1].text)

    with live_server(create_app(serving_pipeline())) as url:
        driver.get(url + "/")
        # record what the page sends, as the server receives it
        driver.execute_script(
            "window.sent = []; const f = window.fetch; window.fetch = (u, o) => {"
            " if (o && o.body) window.sent.push(JSON.parse(o.body)); return f(u, o); };"
        )
        Select(driver.find_element(By.ID, "mode")).select_by_visible_text("ft")  # short prompts: a quick test
        ask("How long does a Zorblat lamp battery last?", 1)
        first = driver.find_element(By.CSS_SELECTOR, ".turn .a").text
        ask("And how long does charging take?", 2)
        sent = driver.execute_script("return window.sent")
        driver.find_element(By.ID, "reset").click()
        cleared = len(driver.find_elements(By.CSS_SELECTOR, ".turn"))
        ask("What colours does the lamp come in?", 1)
        after_reset = driver.execute_script("return window.sent")[-1]
        errors = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert [m["role"] for m in sent[1]["messages"]] == ["user", "assistant", "user"]
    assert sent[1]["messages"][1]["content"] == first and first.strip()
    assert sent[1]["model"] == "ragtune-ft" and sent[1]["stream"] is True
    assert cleared == 0 and [m["content"] for m in after_reset["messages"]] == ["What colours does the lamp come in?"]
    assert not errors, errors
