"""The chat page in a real browser (Debian's headless Chromium driven by playwright, as the verdict test does).

Type a question, watch the answer stream in, see a numbered citation; a screenshot stays in tmp.
"""

import os
import shutil
from pathlib import Path

import pytest

from ragtune.serving.app import create_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # `make browser` installs it


@pytest.fixture(scope="module")
def page():
    if CHROMIUM is None:
        if os.environ.get("RAGTUNE_REQUIRE_BROWSER"):
            pytest.fail("RAGTUNE_REQUIRE_BROWSER is set but no chromium on PATH (run `make browser`)")
        pytest.skip("Chromium is not installed (`make browser` installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser.new_page(viewport={"width": 1100, "height": 900})
        browser.close()


def test_chat_page_streams_an_answer_with_citations(serving_pipeline, live_server, page, tmp_path: Path):
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    with live_server(create_app(serving_pipeline())) as url:
        page.goto(url + "/")
        page.wait_for_function("document.querySelectorAll('#adapter option').length > 1", timeout=120_000)
        assert "tiny" in page.eval_on_selector_all("#adapter option", "os => os.map(o => o.textContent)")
        page.fill("#question", "How long does a Zorblat lamp battery last?")
        page.select_option("#mode", label="rag")
        # count how often the answer text changes: streaming shows pieces, not one final block
        page.evaluate(
            "window.pieces = 0; new MutationObserver((ms) => { for (const m of ms) {"
            " const t = m.target.nodeType === 1 ? m.target : m.target.parentElement;"
            " if (t && t.classList.contains('a')) window.pieces++; } })"
            ".observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});"
        )
        page.click("#send")
        page.wait_for_selector(".cites li", timeout=120_000)
        answer = page.inner_text(".turn .a")
        answer_class = page.get_attribute(".turn .a", "class") or ""
        cites = page.eval_on_selector_all(".cites li", "ls => ls.map(l => l.innerText)")
        meta = page.inner_text(".turn .meta")
        pieces = page.evaluate("window.pieces")
        page.screenshot(path=str(tmp_path / "chat.png"))
    assert answer.strip() and "error" not in answer_class
    assert cites[0] == "Zorblat Battery (zorblat-battery)"
    assert pieces >= 2
    assert "mode rag" in meta and "snapshot s" in meta
    assert (tmp_path / "chat.png").stat().st_size > 1000
    assert not errors, errors
