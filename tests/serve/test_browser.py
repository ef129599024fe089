"""The web page in a real browser: headless Debian Chromium (/usr/bin/chromium) driven by Playwright.

Never downloads a browser (`executable_path`); CI installs Debian's `chromium`. Screenshots go to the test's
tmp dir; set TOONLAB_SCREENSHOT_DIR to keep them (docs/serve-screenshot*.png were made that way).
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from serve_helpers import encode, running_server
from toonlab.serve.config import ServeConfig

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TOONLAB_CHROMIUM", "/usr/bin/chromium")  # another path only to test the skip
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    cfg = ServeConfig(max_upload_bytes=2_000_000, access_log=None)
    with running_server(cfg) as url:
        yield url


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; CI does)")
    sync_playwright = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed "
                                          "(pip install -e '.[dev]')").sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                   args=FLAGS, accept_downloads=True,
                                                   viewport={"width": 1200, "height": 820})
        yield ctx
        ctx.close()


def _keep(shot: Path, name: str):
    folder = os.environ.get("TOONLAB_SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / name)


def test_upload_compare_download(site, browser_context, tmp_path, astronaut):
    page = browser_context.new_page()
    page.goto(site + "/")
    page.wait_for_selector("#model option[value=classic]", state="attached")
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(astronaut).resize((384, 384), Image.LANCZOS).save(photo, quality=92)
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#after[data-loaded]", timeout=60_000)  # (the page's CSP forbids wait_for_function)
    assert page.is_visible("#after") and page.is_visible("#before") and page.is_hidden("#error")
    size = page.evaluate("[document.getElementById('after').naturalWidth, document.getElementById('after').naturalHeight]")
    assert size == [384, 384]
    page.fill("#slider", "30")  # the comparison split follows the slider
    assert "30%" in page.get_attribute("#after", "style")
    box = page.locator("#compare").bounding_box()  # and a click/drag on the picture moves it
    page.mouse.click(box["x"] + 0.8 * box["width"], box["y"] + box["height"] / 2)
    assert page.input_value("#slider") == "80" and "80%" in page.get_attribute("#after", "style")
    page.fill("#slider", "45")
    shot = tmp_path / "serve-desktop.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    _keep(shot, "serve-screenshot.png")
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == "astronaut-classic.png"
    got = np.asarray(Image.open(download.path()).convert("RGB"))
    # the downloaded file is exactly what the API answers for the same photo and settings
    api = httpx.post(f"{site}/v1/cartoonize", files={"image": ("a.jpg", photo.read_bytes(), "image/jpeg")},
                     data={"model": "classic", "format": "png"}, timeout=60)
    assert np.array_equal(got, np.asarray(Image.open(io.BytesIO(api.content)).convert("RGB")))
    page.close()


def test_rejected_file_shows_the_api_message(site, browser_context, tmp_path):
    page = browser_context.new_page()
    page.goto(site + "/")
    page.wait_for_selector("#model option[value=classic]", state="attached")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo\n" * 20)
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    text = page.inner_text("#error")
    assert "415" in text and "not a recognised image" in text and "png, jpeg, webp" in text
    page.close()


def test_phone_viewport(site, browser_context, tmp_path, photo_small):
    page = browser_context.new_page()
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(site + "/")
    page.wait_for_selector("#model option[value=classic]", state="attached")
    photo = tmp_path / "small.png"
    photo.write_bytes(encode(photo_small))
    page.set_input_files("#file", str(photo))
    page.wait_for_selector("#after[data-loaded]", timeout=60_000)  # (the page's CSP forbids wait_for_function)
    # one column, nothing wider than the screen, the result as wide as its card
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    box = page.locator("#compare").bounding_box()
    assert 300 <= box["width"] <= 390
    shot = tmp_path / "serve-phone.png"
    page.screenshot(path=str(shot), full_page=True)
    _keep(shot, "serve-screenshot-phone.png")
    page.close()


def test_api_docs_render_offline(site, browser_context):
    """/docs is Swagger UI from local files (no CDN): the operations appear without internet."""
    page = browser_context.new_page()
    page.goto(site + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/cartoonize']", timeout=30_000)
    assert page.locator(".opblock").count() >= 3
    page.close()


def test_api_key_prompt(browser_context, tmp_path, photo_small):
    """With $TOONLAB_API_KEY set on the server, the page asks for the key, then works with it."""
    cfg = ServeConfig(api_key="k3y-for-test", access_log=None)
    with running_server(cfg) as url:
        page = browser_context.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#keyrow:not([hidden])", timeout=30_000)
        assert "API key" in page.inner_text("#error")
        page.fill("#apikey", "k3y-for-test")
        page.dispatch_event("#apikey", "change")
        page.wait_for_selector("#model option[value=classic]", state="attached", timeout=30_000)
        photo = tmp_path / "small.png"
        photo.write_bytes(encode(photo_small))
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("#after[data-loaded]", timeout=60_000)
        assert page.is_hidden("#error")
        page.close()
