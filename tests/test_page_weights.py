"""generator.page_weights measures what it claims, on a tiny hand-made site in headless Chromium."""

import gzip
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generator import page_weights
from tests.chromium import require_chromium

require_chromium()

ASSETS = Path(__file__).resolve().parents[1] / "site_config" / "assets"
HEADERS = 1024  # Chromium counts a flat 300 bytes of headers per fetch; allow a little more


@pytest.fixture(scope="module")
def browser():
    driver = page_weights.start_browser()
    yield driver
    driver.quit()


@pytest.fixture
def site(tmp_path):
    """index.html, a 20 KB picture of noise beside it, 50 KB of compressible CSS under assets/,
    and a 30 KB picture of noise lazily loaded far below the fold. (The pictures must be valid:
    Chromium cancels the download of an image it cannot decode.)"""
    rng = np.random.default_rng(0)
    for name, side in (("pic.png", 81), ("far.png", 100)):  # ~3 bytes a pixel, incompressible
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "assets").mkdir()
    css = "".join(f".rule-{i} {{ margin: {i % 7}px; color: #123456; }}\n" for i in range(1200))[:50_000]
    (tmp_path / "assets" / "style.css").write_text(css, encoding="utf-8")
    (tmp_path / "index.html").write_text(
        '<!doctype html><html><head><link rel="icon" href="data:,">'
        '<link rel="stylesheet" href="assets/style.css"></head><body>'
        '<img src="pic.png" width="100" height="100">'
        '<div style="height: 8000px"></div>'
        '<img src="far.png" loading="lazy" width="100" height="100"></body></html>', encoding="utf-8")
    return tmp_path


def test_server_gzips_text_like_github_pages(site):
    with page_weights.serve(site) as base:
        request = urllib.request.Request(base + "assets/style.css", headers={"Accept-Encoding": "gzip, br"})
        with urllib.request.urlopen(request) as reply:
            body = reply.read()
            assert reply.headers["Content-Encoding"] == "gzip"
            assert reply.headers["Content-Type"].startswith("text/css")
            assert int(reply.headers["Content-Length"]) == len(body) < 10_000
            assert gzip.decompress(body) == (site / "assets" / "style.css").read_bytes()
        with urllib.request.urlopen(base + "assets/style.css") as reply:  # no Accept-Encoding: plain
            assert reply.headers["Content-Encoding"] is None and len(reply.read()) == 50_000
        request = urllib.request.Request(base + "pic.png", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request) as reply:
            assert reply.headers["Content-Encoding"] is None and reply.headers["Content-Type"] == "image/png"
            assert int(reply.headers["Content-Length"]) == len(reply.read()) == (site / "pic.png").stat().st_size
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(base + "missing.html")


def test_page_weight_splits_own_and_shared_and_sees_lazy_images(browser, site):
    html, pic, far = ((site / name).stat().st_size for name in ("index.html", "pic.png", "far.png"))
    assert 19_000 < pic < 21_000 and 29_000 < far < 31_000
    with page_weights.serve(site) as base:
        weight = page_weights.page_weight(browser, base, "index.html")
    own = weight["own_kb"] * 1024
    assert html + pic <= own <= html + pic + 2 * HEADERS  # the page and its picture, not far.png
    assert weight["requests"] == 3
    largest = dict(weight["largest"])
    assert set(largest) == {"index.html", "pic.png", "assets/style.css"}
    css = largest["assets/style.css"] * 1024
    assert 0 < css < 10_000  # 50 KB of CSS, gzipped
    assert weight["first_visit_kb"] == pytest.approx(weight["own_kb"] + css / 1024)
    assert weight["own_decoded_kb"] * 1024 == html + pic
    assert far <= (weight["all_images_kb"] - weight["own_kb"]) * 1024 <= far + HEADERS  # far.png, once


def test_page_weight_is_cold_every_time(browser, site):
    with page_weights.serve(site) as base:
        first, again = (page_weights.page_weight(browser, base, "index.html") for _ in range(2))
    assert first == again


def test_layer_page_ready_waits_for_the_toolbar(browser, tmp_path):
    shutil.copy(ASSETS / "layer-tools.js", tmp_path)
    cells = "".join(f'<a class="wa-cell" data-unit="{i}" href="#">{i}</a>' for i in range(50))
    page = tmp_path / "layer.html"
    page.write_text('<!doctype html><html><head><script src="layer-tools.js" defer></script></head><body>'
                    f'<div class="wa-layer"><div class="wa-layer-tools"></div><div class="wa-grid">{cells}</div>'
                    '</div></body></html>', encoding="utf-8")
    seconds = page_weights.layer_page_ready(browser, page)
    assert 0 < seconds < 5
    assert browser.execute_script("return document.querySelector('.wa-count').textContent") == "50 of 50 units shown"


def test_typical_pages_are_the_worst_cases(tmp_path):
    for layer, images in (("a", [1, 3, 2]), ("b", [0, 5])):
        (tmp_path / "units" / layer).mkdir(parents=True)
        for unit, count in enumerate(images):
            (tmp_path / "units" / layer / f"{unit}.html").write_text("<img>" * count, encoding="utf-8")
    (tmp_path / "layers").mkdir()
    for layer, count in (("a", 3), ("b", 7)):
        cells = '<a class="wa-cell" href="#"><span class="wa-cell-pics"></span></a>' * count
        (tmp_path / "layers" / f"{layer}.html").write_text(cells, encoding="utf-8")
    assert page_weights.typical_pages(tmp_path) == (["units/a/1.html", "units/b/1.html"], ["layers/b.html"])
    assert page_weights.typical_pages(tmp_path, limit=1) == (["units/a/1.html"], ["layers/b.html"])


def test_the_default_atlas_pages_are_light(default_site):
    """The targets make bench checks, on the test build of the default atlas: the heaviest unit
    page of each layer at most 100 KB of its own and 300 KB on a first visit, over the wire."""
    units, layers = page_weights.typical_pages(default_site)
    measured = page_weights.measure_site(default_site, units, [])
    assert len(measured["unit_pages"]) == 6
    assert measured["unit_own_kb_max"] <= 100, measured["unit_pages"]
    assert measured["unit_first_visit_kb_max"] <= 300, measured["unit_pages"]
    for page in measured["unit_pages"]:
        assert not [name for name, _ in page["largest"] if name.endswith((".fv.webp", "search/index.js"))], page
