"""The default atlas in headless Chromium, opened from file:// as a reader would."""

import io
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from generator import build_atlas, load_config
from tests.chromium import require_chromium, start_browser
from tests.conftest import write_config

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


def _search(browser, page, query: str) -> list[str]:
    """The result links (from the site root) of ``query`` typed into the search box of ``page``."""
    browser.get(page.as_uri())
    box = browser.find_element(By.CSS_SELECTOR, ".wa-search input")
    box.click()
    box.send_keys(query)
    read = "return (document.querySelector('.wa-search__meta') || {}).textContent || ''"  # redrawn as it searches
    deadline = time.time() + 20
    while "matching" not in browser.execute_script(read) and time.time() < deadline:
        time.sleep(0.1)
    meta = browser.execute_script(read).strip()
    assert "matching" in meta and not meta.startswith("No"), (query, meta)
    return [a.get_attribute("href").split("/site/")[-1]
            for a in browser.find_elements(By.CSS_SELECTOR, ".wa-search__link")]


def test_search_loads_its_index_on_first_use_and_works_from_file_urls(browser, default_site):
    page = default_site / "units" / "mixed3b" / "12.html"
    browser.get(page.as_uri())
    loaded = ("return [typeof atlasSearchIndex, "
              "Array.from(document.scripts).filter(s => s.src.endsWith('search/index.js')).length]")
    assert browser.execute_script(loaded) == ["undefined", 0]  # nothing until search is used
    found = _search(browser, page, "mixed3a 40")
    assert found[0] == "units/mixed3a/40.html", found  # the exact unit first
    assert browser.execute_script(loaded) == ["object", 1]
    assert _search(browser, default_site / "index.html", "weight factors")  # sections of mkdocs pages


def _labelled(label: str) -> set[str]:
    """The unit pages of the units ``site_config/default.labels.yml`` labels ``label``."""
    units = yaml.safe_load((Path(__file__).parents[1] / "site_config" / "default.labels.yml").read_text())["units"]
    return {f"units/{layer}/{unit}.html" for layer, found in units.items() for unit, entry in found.items()
            if entry.get("label") == label}


def test_search_finds_units_by_label_family_attribute_and_layer_unit(browser, default_site):
    ringed = _labelled("ring") | {"units/logits/3.html"}  # and the class "shape=ring"
    assert len(ringed) >= 10
    found = _search(browser, default_site / "index.html", "ring")
    assert set(found[:len(ringed)]) == ringed, found  # labelled units first, then those whose examples are rings
    pictures = browser.execute_script("return Array.from(document.querySelectorAll('.wa-search__link'))"
                                      ".slice(0, 12).map(a => (a.querySelector('img') || {}).src || '')")
    assert all(p.startswith("file://") and p.endswith(".thumb.webp") for p in pictures), pictures
    green = _search(browser, default_site / "index.html", "green ring")
    texts = browser.execute_script("return Array.from(document.querySelectorAll('.wa-search__link'))"
                                   ".map(a => a.textContent.toLowerCase())")
    units = [t for f, t in zip(green, texts) if f.startswith("units/")]
    assert green[0].startswith("units/") and all("green" in t and "ring" in t for t in units[:5]), units[:5]
    assert _search(browser, default_site / "index.html", "3b:84")[0] == "units/mixed3b/84.html"
    pooled = {f"units/mixed3a/{u}.html" for u in range(112, 128)} | {f"units/mixed3b/{u}.html" for u in range(176, 208)}
    found = _search(browser, default_site / "index.html", "conv_pool_reduce")
    assert pooled & set(found) and all(f in pooled for f in found if f.startswith("units/")), found


def test_cards_load_thumbnails_from_file_urls(browser, default_site):
    """Every card's picture is a 40-pixel thumbnail that loads from file:// (nothing from the network)."""
    browser.get((default_site / "units" / "mixed3b" / "60.html").as_uri())
    browser.execute_script("document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
    deadline = time.time() + 20
    pending = "return Array.from(document.images).filter(i => !i.complete).length"
    while browser.execute_script(pending) and time.time() < deadline:
        time.sleep(0.1)
    cards = browser.execute_script(
        "return Array.from(document.querySelectorAll('.wa-card img')).map(i => [i.src, i.naturalWidth])")
    assert len(cards) >= 48  # the other unit of each card
    assert all(src.startswith("file://") and src.endswith(".thumb.webp") and width == 40 for src, width in cards), cards


def test_a_kernel_opens_large_on_click(browser, default_site):
    browser.get((default_site / "units" / "mixed3b" / "60.html").as_uri())
    tile = browser.find_element(By.CSS_SELECTOR, "#inputs ~ .wa-cards .wa-tile, .wa-cards .wa-tile")
    small = tile.size["width"]
    tile.click()
    dialog = browser.find_element(By.CSS_SELECTOR, "dialog.wa-kernel-view[open]")
    big = dialog.find_element(By.CSS_SELECTOR, ".wa-kernel-big")
    assert big.size["width"] >= 5 * small and big.value_of_css_property("image-rendering") == "pixelated"
    assert big.value_of_css_property("background-image") == tile.value_of_css_property("background-image")
    assert "Kernel from mixed3a" in dialog.text and "data file" in dialog.text  # from file://: where the numbers are
    assert browser.current_url.endswith("60.html")  # the click opened the kernel, not the card's link
    dialog.find_element(By.CSS_SELECTOR, ".wa-kernel-close").click()
    deadline = time.time() + 5  # the close event removes it
    while browser.find_elements(By.CSS_SELECTOR, "dialog.wa-kernel-view") and time.time() < deadline:
        time.sleep(0.05)
    assert not browser.find_elements(By.CSS_SELECTOR, "dialog.wa-kernel-view")


def test_a_kernel_shows_its_numbers_over_http(default_site):
    """Served (as GitHub Pages serves it), the large kernel shows the weights the data file holds."""
    import base64
    import json
    import zlib

    from generator.page_weights import serve

    driver = start_browser()
    try:
        with serve(default_site) as base:
            driver.get(f"{base}units/mixed3b/60.html")
            card = driver.find_element(By.CSS_SELECTOR, ".wa-cards .wa-card")
            card.find_element(By.CSS_SELECTOR, ".wa-tile").click()
            deadline = time.time() + 20
            while not driver.find_elements(By.CSS_SELECTOR, "table.wa-kernel-numbers") and time.time() < deadline:
                time.sleep(0.1)
            shown = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
                     for row in driver.find_elements(By.CSS_SELECTOR, "table.wa-kernel-numbers tr")]
    finally:
        driver.quit()
    data = json.loads((default_site / "units" / "mixed3b" / "60.json").read_text(encoding="utf-8"))
    group = data["inputs"][0]  # the first card is the first input
    block = group["kernels"]
    kernel = np.frombuffer(zlib.decompress(base64.b64decode(block["zlib"])), "i1").reshape(block["shape"])[0] / 127 * group["peak"][0]
    expected = [[("+" if v > 0 else "\u2212" if v < 0 else "") + f"{abs(float(v)):.2g}" for v in row] for row in kernel]
    assert len(shown) == kernel.shape[0] and [len(r) for r in shown] == [kernel.shape[1]] * kernel.shape[0]
    assert [float(t.replace("\u2212", "-")) for r in shown for t in r] == pytest.approx(
        [float(t.replace("\u2212", "-")) for r in expected for t in r], rel=0.06, abs=1e-6)



@pytest.mark.parametrize("page", ["index.html", "how-to-read.html", "layers/mixed3b.html", "units/mixed3b/84.html",
                                  "units/logits/3.html"])
def test_nothing_overflows_a_400_pixel_screen(browser, default_site, page):
    browser.set_window_size(400, 900)
    try:
        browser.get((default_site / page).as_uri())
        width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (page, width)
        title = browser.find_element(By.CSS_SELECTOR, ".md-header__topic .md-ellipsis")
        assert title.size["width"] >= 120, title.size  # the header title is not squeezed to a letter
    finally:
        browser.set_window_size(1280, 1000)


def test_sorting_a_layer_by_input_l2_puts_its_strongest_unit_first(browser, default_site):
    import json

    from selenium.webdriver.support.ui import Select

    l2 = {u: json.loads((default_site / "units" / "mixed3b" / f"{u}.json").read_text())["input_l2"] for u in range(208)}
    browser.get((default_site / "layers" / "mixed3b.html").as_uri())
    Select(browser.find_element(By.CSS_SELECTOR, "select.wa-sort")).select_by_value("l2")
    shown = browser.execute_script("return [...document.querySelectorAll('.wa-cell')].filter(c => !c.closest('[hidden]')"
                                   " && getComputedStyle(c.closest('details') || c).display !== 'none')"
                                   ".map(c => +c.dataset.unit)")
    alive = [u for u in sorted(l2, key=lambda u: (-l2[u], u))
             if json.loads((default_site / "units" / "mixed3b" / f"{u}.json").read_text())["dataset_examples"]["fired"]]
    assert shown[:5] == alive[:5]  # the whole layer in order (units that never fire hidden)


@pytest.fixture(scope="module")
def one_dimensional_site(tmp_path_factory) -> Path:
    """The atlas of a model that reads 1 x 1024 x 1 samples, with pictures."""
    folder = tmp_path_factory.mktemp("one-dimensional")
    config = write_config(folder, model={"source": "tests.toy_models:one_dimensional"},
                          input={"channels": 1, "size": [1024, 1], "mean": [0.0], "std": [1.0]},
                          featurevis={"steps": 2}, site={"output": str(folder / "site")})
    build_atlas(load_config(config))
    return folder / "site"


def test_a_one_dimensional_model_lays_out_in_strips(browser, one_dimensional_site):
    """Kernels of 256 x 1 and pictures of 1024 x 1 are drawn as strips, not hairlines, and no
    page is taller than ten screens."""
    browser.set_window_size(1400, 900)
    pages = sorted(one_dimensional_site.rglob("*.html"))
    assert len(pages) > 20
    for page in pages:
        browser.get(page.as_uri())
        height = browser.execute_script("return document.documentElement.scrollHeight")
        assert height <= 10 * 900, (page.name, height)
    browser.get((one_dimensional_site / "units" / "conv1" / "3.html").as_uri())
    for page, selectors in (("conv1/3", (".wa-fv-large", ".wa-rgb", ".wa-first .wa-tile")),
                            ("conv2/3", (".wa-nmf", ".wa-cards .wa-tile"))):
        browser.get((one_dimensional_site / "units" / f"{page}.html").as_uri())
        for selector in selectors:
            shown = browser.find_element(By.CSS_SELECTOR, selector)
            width, height = shown.size["width"], shown.size["height"]
            assert width >= height / 8 - 1 and height <= 1024, (page, selector, width, height)
    thumbnail = browser.find_element(By.CSS_SELECTOR, ".wa-cards img")
    assert thumbnail.size["height"] <= 42, thumbnail.size  # a square of 40 (and a border), the strip inside
