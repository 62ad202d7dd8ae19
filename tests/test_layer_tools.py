"""The layer page's toolbar (filter, sort, group by family, hide dead) and sortable statistics table, in
headless Chromium."""

import shutil
from pathlib import Path

import pytest

from tests.chromium import require_chromium, start_browser

require_chromium()

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

ASSETS = Path(__file__).resolve().parents[1] / "site_config" / "assets"

# unit, branch, family, label, l2, excitatory, dead
CELLS_A = [
    (0, "1x1", "colour", "green blob", 0.30, 0.50, 0),
    (1, "1x1", "colour", "", 0.90, 0.40, 0),
    (2, "1x1", "", "", 0.10, 0.70, 0),
    (3, "1x1", "colour", "red ring", 0.55, 0.80, 0),
    (12, "1x1", "lines", "edge", 0.42, 0.20, 0),
]
CELLS_B = [
    (5, "3x3", "curves", "curve detector", 0.75, 0.61, 0),
    (6, "3x3", "curves", "", 0.20, 0.33, 0),
    (7, "3x3", "lines", "orientation 12 deg", 0.65, 0.45, 0),
    (8, "3x3", "", "", 0.05, 0.10, 1),
    (112, "3x3", "curves", "small curve", 0.75, 0.52, 0),
]
ALL = CELLS_A + CELLS_B


def cell(unit, branch, family, label, l2, exc, dead):
    attrs = f'data-unit="{unit}" data-branch="{branch}" data-l2="{l2}" data-excitatory="{exc}" data-dead="{dead}"'
    if family:
        attrs += f' data-family="{family}"'
    if label:
        attrs += f' data-label="{label}"'
    return f'<a class="wa-cell" href="../units/x/{unit}.html" {attrs}><img alt=""><span>{unit}</span></a>'


def row(unit, branch, family, label, l2, exc, dead):
    return (f'<tr data-unit="{unit}"><td data-value="{unit}"><a href="../units/x/{unit}.html">{unit}</a></td>'
            f"<td>{label}</td><td>{branch}</td><td>{family}</td><td data-value=\"{l2}\">{l2:.3f}</td>"
            f'<td data-value="{exc}">{exc:.0%}</td></tr>')


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>x</title>
<link rel="stylesheet" href="../assets/atlas.css"><link rel="stylesheet" href="../assets/layer-tools.css">
<script src="../assets/layer-tools.js" defer></script></head>
<body><article class="md-typeset"><div class="wa-layer">
<div class="wa-layer-tools"></div>
<details class="wa-family" id="family-1" open><summary>Branch 1x1</summary>
<section class="wa-group"><div class="wa-grid">{a}</div></section>
</details>
<details class="wa-family" id="family-2"><summary>Branch 3x3</summary>
<section class="wa-group"><div class="wa-grid">{b}</div></section>
</details>
<table class="wa-stats wa-sortable"><thead><tr><th data-sort="number">Unit</th><th data-sort="text">Label</th>
<th data-sort="text">Branch</th><th data-sort="text">Family</th><th data-sort="number">Input L2</th>
<th data-sort="number">Excitatory share</th></tr></thead><tbody>{rows}</tbody></table>
</div></article></body></html>"""

BARE = """<!doctype html><html><head><meta charset="utf-8"><title>y</title>
<link rel="stylesheet" href="../assets/layer-tools.css"><script src="../assets/layer-tools.js" defer></script></head>
<body><div class="wa-grid"><a class="wa-cell" data-unit="1">1</a></div></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("layer_tools")
    (root / "assets").mkdir()
    for name in ("layer-tools.js", "layer-tools.css", "atlas.css"):
        shutil.copy(ASSETS / name, root / "assets" / name)
    (root / "layers").mkdir()
    (root / "layers" / "x.html").write_text(PAGE.format(
        a="\n".join(cell(*c) for c in CELLS_A), b="\n".join(cell(*c) for c in CELLS_B),
        rows="\n".join(row(*c) for c in ALL)), encoding="utf-8")
    (root / "layers" / "bare.html").write_text(BARE, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def driver():
    drv = start_browser()
    yield drv
    drv.quit()


@pytest.fixture
def page(driver, site):
    driver.get_log("browser")  # drop what earlier tests left
    driver.get((site / "layers" / "x.html").as_uri())
    driver.find_element(By.CSS_SELECTOR, ".wa-layer-tools .wa-filter")  # the toolbar is built
    yield driver
    severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe


def shown_cells(drv):
    """Units of the cells the filter leaves shown (neither they nor their section hidden), in page order."""
    return drv.execute_script(
        "return [...document.querySelectorAll('.wa-cell')].filter(c => !c.closest('[hidden]'))"
        ".map(c => +c.dataset.unit)")


def shown_rows(drv):
    return [int(r.get_attribute("data-unit")) for r in drv.find_elements(By.CSS_SELECTOR, "table.wa-stats tbody tr")
            if r.is_displayed()]


def count_text(drv):
    return drv.find_element(By.CSS_SELECTOR, ".wa-layer-tools .wa-count").text


def type_filter(drv, text):
    box = drv.find_element(By.CSS_SELECTOR, ".wa-layer-tools .wa-filter")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.BACKSPACE)
    if text:
        box.send_keys(text)


def test_toolbar_is_built_with_labels(page):
    tools = page.find_element(By.CSS_SELECTOR, ".wa-layer-tools")
    box = tools.find_element(By.CSS_SELECTOR, "input.wa-filter")
    assert box.get_attribute("placeholder") == "Filter: label, family, branch or unit number"
    assert box.get_attribute("aria-label")
    options = [o.text for o in Select(tools.find_element(By.CSS_SELECTOR, "select.wa-sort")).options]
    assert options == ["Unit", "Input L2 (largest first)", "Excitatory share (largest first)"]  # no data-active
    assert tools.find_element(By.CSS_SELECTOR, "select.wa-sort").get_attribute("aria-label")
    assert "Hide dead units" in tools.find_element(By.CSS_SELECTOR, "label.wa-hide-dead-label").text
    assert tools.find_element(By.CSS_SELECTOR, "input.wa-hide-dead").is_selected()  # hidden at first
    assert "Group by family" in tools.find_element(By.CSS_SELECTOR, "label.wa-grouped-label").text
    assert count_text(page) == "9 of 10 units shown; 1 that never fire hidden"


def test_filter_by_label(page):
    type_filter(page, "RING")
    assert shown_cells(page) == [3]
    assert shown_rows(page) == [3]
    assert count_text(page) == "1 of 10 units shown; 1 that never fire hidden"
    groups = page.find_elements(By.CSS_SELECTOR, ".wa-group")
    assert groups[0].is_displayed() and groups[1].get_attribute("hidden") is not None  # empty section hidden
    type_filter(page, "")
    assert count_text(page) == "9 of 10 units shown; 1 that never fire hidden"
    assert len(shown_rows(page)) == 9


def test_filter_by_branch_opens_details(page):
    details = page.find_element(By.CSS_SELECTOR, "#family-2")
    assert details.get_attribute("open") is None
    type_filter(page, "3x3")
    assert details.get_attribute("open") is not None
    assert shown_cells(page) == [5, 6, 7, 112]  # 8 never fires
    assert all(page.find_element(By.CSS_SELECTOR, f'.wa-cell[data-unit="{u}"]').is_displayed()
               for u in (5, 6, 7, 112))
    assert page.find_elements(By.CSS_SELECTOR, ".wa-group")[0].get_attribute("hidden") is not None
    assert shown_rows(page) == [5, 6, 7, 112]
    assert count_text(page) == "4 of 10 units shown; 1 that never fire hidden"


def test_filter_by_unit_number(page):
    type_filter(page, "12")  # unit 12 exactly, and the label "orientation 12 deg"; not unit 112
    assert shown_cells(page) == [12, 7]
    assert sorted(shown_rows(page)) == [7, 12]
    type_filter(page, "curves")
    assert shown_cells(page) == [5, 6, 112]


def test_hide_dead_units(page):
    dead = page.find_element(By.CSS_SELECTOR, '.wa-cell[data-unit="8"]')
    page.find_element(By.CSS_SELECTOR, "#family-2 summary").click()
    assert not dead.is_displayed()  # hidden at first
    assert 8 not in shown_cells(page) and 8 not in shown_rows(page)
    page.find_element(By.CSS_SELECTOR, "input.wa-hide-dead").click()
    assert dead.is_displayed()
    assert count_text(page) == "10 of 10 units shown"
    page.find_element(By.CSS_SELECTOR, "input.wa-hide-dead").click()
    assert not dead.is_displayed()
    assert count_text(page) == "9 of 10 units shown; 1 that never fire hidden"


def test_sort_orders_the_whole_layer(page):
    page.find_element(By.CSS_SELECTOR, "input.wa-hide-dead").click()  # show every unit
    Select(page.find_element(By.CSS_SELECTOR, "select.wa-sort")).select_by_visible_text("Input L2 (largest first)")
    grouped = page.find_element(By.CSS_SELECTOR, "input.wa-grouped")
    assert not grouped.is_selected()  # a sort orders all units, families aside
    assert shown_cells(page) == [1, 5, 112, 7, 3, 12, 0, 6, 2, 8]  # 5 and 112 tie at 0.75: by unit number
    assert not page.find_element(By.CSS_SELECTOR, "#family-1").is_displayed()
    grouped.click()  # back in families: sorted within each
    grids = page.find_elements(By.CSS_SELECTOR, "details .wa-grid")
    order = [[int(c.get_attribute("data-unit")) for c in g.find_elements(By.CSS_SELECTOR, ".wa-cell")] for g in grids]
    assert order == [[1, 3, 12, 0, 2], [5, 112, 7, 6, 8]]
    Select(page.find_element(By.CSS_SELECTOR, "select.wa-sort")).select_by_visible_text("Excitatory share (largest first)")
    assert shown_cells(page) == [3, 2, 5, 112, 0, 7, 1, 6, 12, 8]
    Select(page.find_element(By.CSS_SELECTOR, "select.wa-sort")).select_by_visible_text("Unit")
    grouped.click()
    assert shown_cells(page) == [0, 1, 2, 3, 12, 5, 6, 7, 8, 112]
    type_filter(page, "curve")  # filtering keeps the order
    assert shown_cells(page) == [5, 6, 112]


def test_table_header_sorts_rows(page):
    l2 = page.find_elements(By.CSS_SELECTOR, "table.wa-stats thead th")[4]
    assert l2.get_attribute("tabindex") == "0"
    assert l2.value_of_css_property("cursor") == "pointer"
    l2.click()
    values = [float(td.get_attribute("data-value")) for td in
              page.find_elements(By.CSS_SELECTOR, "table.wa-stats tbody td:nth-child(5)")]
    assert values == sorted(values) and l2.get_attribute("aria-sort") == "ascending"
    l2.click()
    values = [float(td.get_attribute("data-value")) for td in
              page.find_elements(By.CSS_SELECTOR, "table.wa-stats tbody td:nth-child(5)")]
    assert values == sorted(values, reverse=True) and l2.get_attribute("aria-sort") == "descending"
    unit = page.find_elements(By.CSS_SELECTOR, "table.wa-stats thead th")[0]
    unit.click()  # numeric, so 112 comes after 12
    assert [int(r.get_attribute("data-unit")) for r in page.find_elements(By.CSS_SELECTOR, "table.wa-stats tbody tr")] \
        == [0, 1, 2, 3, 5, 6, 7, 8, 12, 112]
    assert l2.get_attribute("aria-sort") is None and unit.get_attribute("aria-sort") == "ascending"
    label = page.find_elements(By.CSS_SELECTOR, "table.wa-stats thead th")[1]
    label.send_keys(Keys.ENTER)  # keyboard: text sort with localeCompare
    labels = [td.text for td in page.find_elements(By.CSS_SELECTOR, "table.wa-stats tbody td:nth-child(2)")]
    assert [x for x in labels if x] == ["curve detector", "edge", "green blob", "orientation 12 deg", "red ring",
                                        "small curve"]
    label.send_keys(Keys.SPACE)
    assert label.get_attribute("aria-sort") == "descending"


def test_page_without_toolbar_is_left_alone(driver, site):
    driver.get_log("browser")
    driver.get((site / "layers" / "bare.html").as_uri())
    assert driver.find_elements(By.CSS_SELECTOR, ".wa-filter") == []
    assert driver.find_element(By.CSS_SELECTOR, ".wa-cell").get_attribute("hidden") is None
    assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
