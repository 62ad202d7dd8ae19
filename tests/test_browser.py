"""The default atlas in headless Chromium, opened from file:// as a reader would."""

import io
import time

import numpy as np
import pytest
from PIL import Image

from tests.chromium import require_chromium, start_browser

require_chromium()

from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
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


def _search(browser, site, query: str) -> list[str]:
    browser.get((site / "index.html").as_uri())
    box = browser.find_element(By.CSS_SELECTOR, "input.md-search__input")
    box.click()
    box.send_keys(query)
    meta = browser.find_element(By.CSS_SELECTOR, ".md-search-result__meta")
    deadline = time.time() + 20
    while "matching" not in meta.text and time.time() < deadline:
        time.sleep(0.2)
    assert "matching" in meta.text and not meta.text.startswith("No"), (query, meta.text)
    return [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, ".md-search-result__link")]


def test_search_finds_units_by_label_and_by_branch(browser, default_site):
    ringed = {f"units/mixed3b/{u}.html" for u in (44, 48, 49, 63, 78, 82, 84, 95, 110, 120, 129)} | \
        {"units/logits/3.html"}  # labelled "ring" in site_config/default.labels.yml, and the class "shape=ring"
    found = _search(browser, default_site, "ring")
    assert any(href.split("/site/")[-1] in ringed for href in found), found
    pooled = {f"units/mixed3a/{u}.html" for u in range(112, 128)} | {f"units/mixed3b/{u}.html" for u in range(176, 208)}
    found = _search(browser, default_site, "conv_pool_reduce")
    assert any(href.split("/site/")[-1] in pooled for href in found), found
