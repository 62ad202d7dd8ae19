"""Every torchvision classification family, and a trained non-torchvision model, builds a whole atlas."""

import json
import re
from pathlib import Path

import pytest

from generator import build_atlas, load_config
from tests.conftest import write_config
from tests.test_site import local_target, parse
from tests.zoo import FAMILIES

# Unit pages link-checked per layer, spread from the first to the last. Checking all of them
# (27,000 in the zoo, about 6 ms each, most of it HTML parsing) would about double the time of
# these tests. Every other page is checked, and every unit's page and data file must exist.
UNIT_PAGES_CHECKED = 8


def build(tmp_path: Path, source: str, size: int, title: str):
    """The report and site folder of ``source``'s atlas at ``size`` px, without feature visualisations."""
    config = write_config(tmp_path, model={"source": source}, input={"size": size}, featurevis={"enabled": False},
                          title=title, site={"output": str(tmp_path / "site")})
    return build_atlas(load_config(config)), tmp_path / "site"


def pages_to_check(site: Path):
    units = site / "units"
    yield from (page for page in site.rglob("*.html") if not page.is_relative_to(units))
    for folder in units.iterdir():
        pages = sorted(folder.glob("*.html"), key=lambda page: int(page.stem))
        yield from pages[::max(1, len(pages) // UNIT_PAGES_CHECKED)] + pages[-1:]


def check_site(site: Path, report) -> None:
    """A page and data file for every unit of every layer, local links and images resolve, no error text."""
    site = site.resolve()
    files = set(site.rglob("*"))
    unit_pages = [f for f in files if f.suffix == ".html" and f.is_relative_to(site / "units")]
    assert report.layers > 0 and len(unit_pages) == report.units > 0, f"{len(unit_pages)} pages, {report.units} units"
    assert not [page for page in unit_pages if page.with_suffix(".json") not in files], "unit data files missing"
    targets = {}  # (folder, address) -> the file it names: a folder's pages share most addresses
    for page in pages_to_check(site):
        found = parse(page)
        sheets = re.findall(r"url\(['\"]?([^'\")]+)", page.read_text(encoding="utf-8"))  # <style>: tile sprites
        for address in found.links + found.loads + sheets:
            key = (page.parent, address)
            if key not in targets:
                targets[key] = local_target(page, address)
            target = targets[key]
            assert target is None or target in files, f"{page.relative_to(site)}: broken link {address}"
    index = (site / "index.html").read_text(encoding="utf-8")
    for leak in ("Traceback", "{{", "{%", "None</", ">nan<"):
        assert leak not in index, f"index.html shows {leak!r}"


@pytest.mark.parametrize("family", FAMILIES)
def test_family_builds(tmp_path, family):
    factory, size = FAMILIES[family]
    report, site = build(tmp_path, f"tests.zoo:{factory}", size, family)
    check_site(site, report)


def test_trained_onet_from_its_package(tmp_path):
    """MTCNN's ONet as a user model (its shipped weights, read weights-only): its dense layer reads conv4's
    map through a permute and a flatten, and its units show kernel tiles from it."""
    report, site = build(tmp_path, "facenet_pytorch:ONet", 48, "ONet")
    check_site(site, report)
    units = site / "units" / "dense5"
    assert sum(1 for _ in units.glob("*.html")) == 256
    data = json.loads((units / "0.json").read_text(encoding="utf-8"))
    assert [group["from"] for group in data["inputs"]] == ["conv4"] and data["inputs"][0]["units"]
    assert 'class="wa-tile ' in (units / "0.html").read_text(encoding="utf-8")
