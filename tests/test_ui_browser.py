"""The web UI in headless Chromium (Debian's package, driven by Playwright): generate an image,
watch progress, stop a long job, reload and find both in the history; API keys and ownership.

Screenshots of the main views go to ``$UI_SCREENSHOTS`` (default ``build/screenshots``;
``UI_SCREENSHOTS=docs/screenshots`` refreshes the ones the README shows).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genaccel.service.auth import digest
from genaccel.settings import Settings
from tests.test_ui import KEY_A, KEY_B, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 30_000


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (scripts/test.sh installs chromium)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


def _shot(page: Any, path: Path, full_page: bool = False) -> None:
    """A screenshot in 256 colours (a few tens of kB: small enough to commit)."""
    from PIL import Image

    png = page.screenshot(full_page=full_page)
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(path, optimize=True)


@pytest.fixture
def shots() -> Path:
    folder = ROOT / os.environ.get("UI_SCREENSHOTS", "build/screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_generate_stop_reload_history_and_compare(browser: Any, settings: Settings, shots: Path) -> None:
    from playwright.sync_api import expect

    with running_app(settings) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url + "/ui/")
        page.locator("#image-prompt textarea").fill("a red circle")
        page.get_by_text("Advanced parameters").click()
        page.locator("#image-seed input").fill("abc")
        page.locator("#image-generate").click()
        expect(page.locator("#image-error")).to_contain_text("seed='abc' is invalid: is not a number",
                                                             timeout=WAIT_MS)  # inline, not a traceback
        page.locator("#image-seed input").fill("42")
        steps = page.get_by_label("number input for Steps (0: the profile's or model's own)")
        steps.fill("4")
        steps.press("Enter")
        page.locator("#image-generate").click()
        expect(page.locator("#image-progress")).to_contain_text("succeeded · step 4 of 4", timeout=WAIT_MS)
        expect(page.locator("#image-error")).to_be_empty()
        image = page.locator("#image-result img")
        expect(image).to_be_visible()
        assert page.evaluate("img => img.naturalWidth", image.element_handle()) == 64  # the file loaded
        expect(page.locator("#image-result")).to_contain_text("seed 42")
        page.get_by_text("Advanced parameters").click()  # fold it for the screenshot
        _shot(page, shots / "generate.png", full_page=True)

        page.locator("#image-prompt textarea").fill("a long job")
        page.get_by_text("Advanced parameters").click()
        steps.fill("200")
        steps.press("Enter")
        page.locator("#image-width textarea, #image-width input").first.fill("256")
        page.locator("#image-height textarea, #image-height input").first.fill("256")
        page.locator("#image-generate").click()
        page.get_by_text("Advanced parameters").click()
        expect(page.locator("#image-progress")).to_contain_text("of 200", timeout=WAIT_MS)
        expect(page.locator("#image-progress")).to_contain_text(re.compile(r"ETA \d"), timeout=WAIT_MS)
        _shot(page, shots / "progress.png")
        page.locator("#image-stop").click()
        expect(page.locator("#image-progress")).to_contain_text("cancelled", timeout=WAIT_MS)
        assert "step 200 of 200" not in page.locator("#image-progress").inner_text()

        page.reload()
        expect(page.locator("#image-progress")).to_contain_text("cancelled", timeout=WAIT_MS)  # the tab's last job
        page.get_by_role("tab", name="Queue & history").click()
        table = page.locator("#history-table")
        expect(table).to_contain_text("a long job", timeout=WAIT_MS)
        expect(table).to_contain_text("a red circle")
        expect(table).to_contain_text("cancelled")
        expect(table).to_contain_text("succeeded")
        table.get_by_text("a red circle").filter(visible=True).first.click()
        expect(page.locator("#history-result img")).to_be_visible(timeout=WAIT_MS)
        _shot(page, shots / "history.png", full_page=True)

        page.get_by_role("tab", name="Side by side").click()
        page.locator("#compare-prompt textarea").fill("a blue square")
        page.locator("#compare-go").click()
        expect(page.locator("#compare-summary")).to_contain_text("speed-up", timeout=WAIT_MS)
        expect(page.locator("#compare-off img")).to_be_visible()
        expect(page.locator("#compare-accel img")).to_be_visible()
        _shot(page, shots / "compare.png", full_page=True)

        page.get_by_role("tab", name="Video").click()  # the tiny video models: a clip plays in the tab
        page.locator("#video-prompt textarea").fill("a red ball")
        page.locator("#video-generate").click()
        expect(page.locator("#video-result video")).to_be_visible(timeout=WAIT_MS)
        _shot(page, shots / "video.png", full_page=True)
        page.close()


def test_api_key_scopes_jobs_and_survives_reload(browser: Any, isolated_home: Path) -> None:
    from playwright.sync_api import expect

    settings = Settings(home=isolated_home, default_model="tiny-sd", api_keys=[digest(KEY_A), digest(KEY_B)])
    with running_app(settings) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url + "/ui/")
        page.locator("#image-prompt textarea").fill("alice's cat")
        page.locator("#image-generate").click()
        expect(page.locator("#image-error")).to_contain_text("missing API key", timeout=WAIT_MS)
        page.locator("#api-key input").fill("not-a-key")
        expect(page.get_by_text("unknown API key").first).to_be_visible(timeout=WAIT_MS)
        page.locator("#api-key input").fill(KEY_A)
        expect(page.get_by_text("signed in").first).to_be_visible(timeout=WAIT_MS)
        page.locator("#image-generate").click()
        expect(page.locator("#image-progress")).to_contain_text("succeeded", timeout=WAIT_MS)
        src = page.locator("#image-result img").get_attribute("src")
        assert src and src.startswith("/ui/files/") and "sig=" in src

        page.reload()  # the key and the tab's last job come back
        expect(page.locator("#api-key input")).to_have_value(KEY_A, timeout=WAIT_MS)
        expect(page.locator("#image-progress")).to_contain_text("succeeded", timeout=WAIT_MS)
        page.get_by_role("tab", name="Queue & history").click()
        expect(page.locator("#history-table")).to_contain_text("alice's cat", timeout=WAIT_MS)
        page.locator("#api-key input").fill(KEY_B)
        expect(page.locator("#history-table")).not_to_contain_text("alice's cat", timeout=WAIT_MS)
        page.get_by_role("tab", name="Image").click()
        expect(page.locator("#image-result img")).to_have_count(0, timeout=WAIT_MS)  # bob does not see it
        page.close()
