"""The default atlas in headless Chromium, opened from file:// as a reader would."""

import io
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("CI"):
    pytest.skip("needs Debian's chromium and chromium-driver (CI installs them)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000", "--force-device-scale-factor=1"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_tiles_are_enlarged_without_blur(browser, default_site):
    browser.get((default_site / "units" / "conv2d2" / "0.html").as_uri())
    tile = browser.find_element(By.CSS_SELECTOR, ".wa-cards .wa-tile")
    assert (tile.size["width"], tile.size["height"]) == (48 + 2, 48 + 2)  # 16 px per weight, 1 px border
    assert tile.value_of_css_property("image-rendering") == "pixelated"
    shot = np.asarray(Image.open(io.BytesIO(tile.screenshot_as_png)).convert("RGB"))
    inner = shot[2:-2, 2:-2].reshape(-1, 3)  # inside the 1 px border
    colours = {tuple(p) for p in inner}
    assert len(colours) <= 9, f"{len(colours)} colours in a 3x3 kernel: the tile is interpolated"


def test_search_works_from_file_urls(browser, default_site):
    browser.get((default_site / "index.html").as_uri())
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    box.click()
    box.send_keys("mixed3a 40")
    meta = browser.find_element(By.CSS_SELECTOR, ".md-search-result__meta")
    deadline = time.time() + 20
    while "matching" not in meta.text and time.time() < deadline:
        time.sleep(0.2)
    assert "matching" in meta.text and not meta.text.startswith("No"), meta.text
    found = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, ".md-search-result__link")]
    assert any(href.endswith("units/mixed3a/40.html") for href in found), found  # unit pages are indexed
