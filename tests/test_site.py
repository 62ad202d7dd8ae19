"""End to end: build atlases and walk every page as a browser would."""

import base64
import dataclasses
import json
import logging
import re
import subprocess
import sys
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from generator import AtlasError, build_atlas, load_config, trace_layers
from generator import build as build_module
from tests.conftest import ROOT, write_config

LOADS = {"img": "src", "script": "src", "iframe": "src", "source": "src", "link": "href", "embed": "src"}


class Links(HTMLParser):
    """Every address a page links to (``links``) and every address it loads (``loads``)."""

    def __init__(self):
        super().__init__()
        self.links, self.loads = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in LOADS and attrs.get(LOADS[tag]):
            self.loads.append(attrs[LOADS[tag]])
        if "url(" in (attrs.get("style") or ""):
            self.loads += re.findall(r"url\(['\"]?([^'\")]+)", attrs["style"])


def parse(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def is_remote(address: str) -> bool:
    return bool(re.match(r"^([a-z][a-z0-9+.-]*:)?//", address, re.I))


def local_target(page: Path, address: str) -> Path | None:
    """The file a relative address points to, or None for data:, mailto: and fragments."""
    if address.startswith(("data:", "mailto:", "javascript:", "#")) or is_remote(address):
        return None
    path = address.split("#")[0].split("?")[0]
    return (page.parent / path).resolve() if path else None


def test_every_local_link_and_image_resolves_and_nothing_loads_from_the_network(default_site):
    pages = sorted(default_site.rglob("*.html"))
    assert len(pages) > 500
    for page in pages:
        found = parse(page)
        for address in found.loads:
            assert not is_remote(address), f"{page} loads {address} from the network"
        for address in found.links + found.loads:
            target = local_target(page, address)
            if target is not None:
                assert target.is_relative_to(default_site.resolve()), f"{page}: {address} leaves the site"
                assert target.exists(), f"{page}: broken link {address}"
    for sheet in default_site.rglob("*.css"):
        assert not re.search(r"(@import|url\()\s*['\"]?(https?:)?//", sheet.read_text(encoding="utf-8")), sheet


def test_every_unit_is_within_two_clicks_of_the_index(default_site):
    index = default_site / "index.html"
    reached = {index}
    frontier = {index}
    for _ in range(2):
        frontier = {
            target for page in frontier for address in parse(page).links
            if (target := local_target(page, address)) is not None and target.suffix == ".html"
        } - reached
        reached |= frontier
    units = set((default_site / "units").rglob("*.html"))
    assert len(units) == 48 + 48 + 96 + 128 + 208 + 32
    assert units <= {p.resolve() for p in reached}


def test_unit_page_and_its_data_file(default_site):
    page = default_site / "units" / "conv2d1" / "5.html"
    html = page.read_text(encoding="utf-8")
    data = json.loads((page.parent / "5.json").read_text(encoding="utf-8"))
    assert data["layer"] == "conv2d1" and data["unit"] == 5
    [inputs] = data["inputs"]
    assert inputs["from"] == "conv2d0" and len(inputs["units"]) == 24
    assert inputs["l2"] == sorted(inputs["l2"], reverse=True)
    assert inputs["weights"] == "expanded"  # through a max-pool
    about = json.loads((page.parent / data["about"]).read_text(encoding="utf-8"))
    assert about["settings"]["ranking"]["top_k"] == 24 and about["ranking"]["by"].startswith("inputs: L2 norm of the kernel")
    # the kernels of the listed connections, each within 0.4% of its peak of the weights the model composes
    from generator.expanded import layer_weights
    from generator.graph import find_layers
    from generator.loading import load_model
    from generator.network import TracedNetwork

    config = load_config(ROOT / "site_config" / "default.yml")
    network = TracedNetwork(load_model(config), config.input.shape)
    graph = find_layers(network)
    composed = next(w for w in layer_weights(network, graph, 1, None, 2048).weights if w.dst == "conv2d1")
    block = inputs["kernels"]
    kernels = np.frombuffer(zlib.decompress(base64.b64decode(block["zlib"])), "i1").reshape(block["shape"]) / 127
    assert block["shape"] == [24, *composed.kernel.shape[2:]]
    for i, source in enumerate(inputs["units"]):
        truth = composed.kernel[5, source]
        assert np.abs(kernels[i] * inputs["peak"][i] - truth).max() <= 0.005 * np.abs(truth).max()
        assert f'id="{inputs["anchor"]}-{source}"' in html
    links = parse(page).links
    assert "5.json" in links and "4.html" in links and "6.html" in links
    assert "../../layers/conv2d1.html" in links
    unit_links = [a for a in links if a.startswith("../conv2d0/")]
    assert unit_links[:3] == [f"../conv2d0/{u}.html" for u in inputs["units"][:3]]  # rank order
    assert html.count('class="wa-tile ') == 48  # 24 inputs + 24 outputs, all from one sprite
    assert html.count('.wa-tile{background-image:url(data:image/png;base64,') == 1  # the sprite, in the page
    assert not list((default_site / "units").rglob("*.tiles.png"))
    assert "image-rendering: pixelated" in (default_site / "assets" / "atlas.css").read_text()
    first = (default_site / "units" / "conv2d0" / "0.html").read_text(encoding="utf-8")
    assert 'src="0.png"' in first


def test_mixed_layer_pages_name_branches_and_mark_expanded_weights(default_site):
    html = (default_site / "layers" / "mixed3a.html").read_text(encoding="utf-8")
    assert re.findall(r"<b>(\w+)</b> \d+&ndash;\d+", html) == ["conv_1x1", "conv_3x3", "conv_5x5", "conv_pool_reduce"]
    assert 'data-branch="conv_pool_reduce"' in html
    unit = (default_site / "units" / "mixed3b" / "60.html").read_text(encoding="utf-8")
    assert "branch <b>conv_3x3</b>" in unit
    assert '<h2 id="inputs">Inputs <span class="wa-expanded">expanded weights</span></h2>' in unit
    assert "how-to-read.html#expanded-weights" in unit
    direct = (default_site / "units" / "conv2d2" / "0.html").read_text(encoding="utf-8")
    assert "These are direct weights" in direct and '<h2 id="inputs">Inputs</h2>' in direct
    read = (default_site / "how-to-read.html").read_text(encoding="utf-8")
    assert 'id="expanded-weights"' in read and "mixed3b 345" in read  # the cancellation caveat


def _families(page: Path) -> dict[str, list[int]]:
    """The families of a layer page: name -> units of its grid, in page order."""
    html = page.read_text(encoding="utf-8")
    found = {}
    for block in html.split('<details class="wa-family"')[1:]:
        name = re.search(r"<summary><b>([^<]*)</b>", block).group(1)
        found[name] = [int(u) for u in re.findall(r'<a class="wa-cell[^"]*" href="[^"]*" data-unit="(\d+)"', block)]
    return found


def test_families_cover_every_unit_exactly_once(default_site):
    from generator.graph import find_layers
    from generator.network import TracedNetwork
    from generator.loading import load_model

    config = load_config(ROOT / "site_config" / "default.yml")
    graph = find_layers(TracedNetwork(load_model(config), config.input.shape))
    for layer in graph.layers:
        families = _families(default_site / "layers" / f"{layer.name}.html")
        units = [u for members in families.values() for u in members]
        assert sorted(units) == list(range(layer.channels)), layer.name
        sizes = [len(m) for name, m in families.items() if name not in ("other units", "never fire")]
        assert sizes == sorted(sizes, reverse=True)  # largest first, "never fire" and "other units" last
        assert list(families)[-2:].count("never fire") <= 1
    # automatic families gather units by what they do, not by their branch
    single, automatic = 0, 0
    for layer in graph.layers:
        if not layer.branches:
            continue
        html = (default_site / "layers" / f"{layer.name}.html").read_text(encoding="utf-8")
        for name, members in _families(default_site / "layers" / f"{layer.name}.html").items():
            block = html.split(f"<summary><b>{name}</b>")[1].split("</summary>")[0]
            if 'class="wa-auto"' in block and name not in ("never fire", "other units") and len(members) > 1:
                automatic += 1
                single += len({layer.branch_of(u).name for u in members}) == 1
    assert automatic >= 2 and single < 0.1 * automatic, (single, automatic)  # most units are labelled
    annotated = _families(default_site / "layers" / "mixed3a.html")  # from site_config/default.labels.yml
    labels = yaml.safe_load((ROOT / "site_config" / "default.labels.yml").read_text())["units"]["mixed3a"]
    assert annotated["shapes"] == sorted(u for u, entry in labels.items() if entry.get("family") == "shapes")
    named = {entry["family"] for entry in labels.values()}
    assert {"gratings", "colours", "shapes", "curves", "colour contrast"} <= named <= set(annotated)
    assert len(annotated) > 4  # the units the labels file leaves out are clustered too
    html = (default_site / "layers" / "mixed3b.html").read_text(encoding="utf-8")
    assert '<span class="wa-auto">automatic</span>' in html


def test_unit_pages_carry_their_weight_factors_and_inputs_grouped_by_factor(default_site):
    """Every unit with spatial inputs has its factor picture, its factors' top inputs, and (when
    they explain enough) inputs grouped by factor; the layer grid shows the same pictures."""
    config = load_config(ROOT / "site_config" / "default.yml")
    grouped = 0
    for layer in ("conv2d2", "mixed3a", "mixed3b"):
        sprite = Image.open(default_site / "units" / layer / "factors.png")
        grid = (default_site / "layers" / f"{layer}.html").read_text(encoding="utf-8")
        units = sorted(int(p.stem) for p in (default_site / "units" / layer).glob("*.json"))
        assert grid.count('<i class="wa-nmf"') == len(units) and "factors.png" in grid
        for unit in units:
            html = (default_site / "units" / layer / f"{unit}.html").read_text(encoding="utf-8")
            data = json.loads((default_site / "units" / layer / f"{unit}.json").read_text(encoding="utf-8"))
            factors = data["factors"]
            assert 'id="factors"' in html and '<i class="wa-nmf"' in html and "url(data:image/png;base64," in html
            assert sum(f["share"] for f in factors["factors"]) == pytest.approx(1, abs=1e-3)
            by_factor = "Grouped by the weight factor" in html
            assert not by_factor or factors["explained"] >= config.factors.grouped
            assert not by_factor or html.count('class="wa-factor-heading"') >= 2  # one group is no grouping
            if by_factor:
                grouped += 1
                # every ranked input is still there, once, under one of the factors
                cards = re.findall(r'<a class="wa-card[^"]*" id="[^"]+" href="([^"]+)"><i>(\d+)</i>',
                                   html.split('<h2 id="outputs">')[0])
                [inputs] = data["inputs"]
                listed = [f"../{inputs['from']}/{u}.html" for u in inputs["units"]]
                assert set(listed) <= {href for href, _ in cards}
                # the strongest input first; within a group, ranks ascend; factors beyond the list add cards
                assert cards[0][0] == listed[0] and int(cards[0][1]) == 1
                ranks = [int(rank) for _, rank in cards]
                groups = [re.findall(r'"><i>(\d+)</i>', g)
                          for g in html.split('<h2 id="outputs">')[0].split('class="wa-factor-heading"')[1:]]
                assert all([int(r) for r in g] == sorted(int(r) for r in g) for g in groups)
                assert [int(g[0]) for g in groups] == sorted(int(g[0]) for g in groups)
                assert len(ranks) == len(set(ranks))
        assert sprite.size[0] >= min(64, len(units))
    assert grouped > 100
    assert (default_site / "units" / "conv2d0" / "0.json").exists()
    assert json.loads((default_site / "units" / "conv2d0" / "0.json").read_text())["factors"] is None  # reads the image


def test_labels_reach_pages_cards_titles_and_search(default_site):
    logits = (default_site / "units" / "logits" / "3.html").read_text(encoding="utf-8")
    assert "<title>logits 3 · shape=ring" in logits  # the class name the checkpoint carries
    assert '<span class="wa-unit-label">shape=ring</span>' in logits
    assert 'family <a href="../../layers/logits.html#family-1"><b>shape head</b></a>' in logits
    assert "factors of this family" in logits
    assert '<details class="wa-family" id="family-1"' in (default_site / "layers" / "logits.html").read_text()
    data = json.loads((default_site / "units" / "logits" / "3.json").read_text(encoding="utf-8"))
    assert data["label"] == "shape=ring" and data["family"] == "shape head" and not data["family_automatic"]
    labels = yaml.safe_load((ROOT / "site_config" / "default.labels.yml").read_text())["units"]
    ring = min(u for u, entry in labels["mixed3b"].items() if entry.get("label") == "ring")
    reader = json.loads((default_site / "units" / "mixed3b" / f"{ring}.json").read_text(encoding="utf-8"))
    assert reader["label"] == "ring"
    cards = [(default_site / "units" / "mixed3b" / f"{u}.html").read_text(encoding="utf-8") for u in range(208)]
    assert any(re.search(r'href="../logits/3.html">.*?<em title="shape=ring">shape=ring</em>', c)
               for c in cards)  # an outputs card names the class it feeds
    entries = {location: text for location, _, text, _ in _search_index(default_site)}
    assert "shape=ring" in entries["units/logits/3.html"]
    assert "ring" in entries[f"units/mixed3b/{ring}.html"]
    assert "branch conv_pool_reduce" in entries["units/mixed3a/120.html"]
    mixed3a = (default_site / "layers" / "mixed3a.html").read_text(encoding="utf-8")
    assert 'data-label="disk"' in mixed3a


def test_group_pages_show_each_factor_and_each_member(default_site):
    pages = sorted((default_site / "families").glob("*.html"))
    names = {p.stem for p in pages}
    assert {"mixed3a-shapes", "mixed3a-colours", "mixed3a-gratings", "mixed3b-curves", "logits-shape-head"} <= names
    html = (default_site / "families" / "mixed3a-shapes.html").read_text(encoding="utf-8")
    labels = yaml.safe_load((ROOT / "site_config" / "default.labels.yml").read_text())["units"]["mixed3a"]
    members = [u for u, entry in labels.items() if entry.get("family") == "shapes"]
    assert html.count("<h3>Factor ") == 4
    assert all(f'href="../units/mixed3a/{u}.html"' in html for u in members)
    assert html.count('class="wa-tile ') == len(members) * 4  # a signed map per member and factor
    peaks = re.findall(r"<td>&plusmn;([0-9.e+-]+)</td></tr>", html)  # each row on its own scale
    assert len(peaks) == len(members) and len(set(peaks)) > 1
    # the family's circuit: the family as one node, at most 8 units (or family nodes) a column
    svg = html.split('aria-label="circuit of the family shapes in mixed3a"')[1].split("</svg>")[0]
    assert svg.count('href="../layers/mixed3a.html#family-') == 1  # the family itself, one node
    sources = re.findall(r'href="../units/(conv2d2)/(\d+)\.html"', svg) + re.findall(r'href="../layers/conv2d2', svg)
    assert 0 < len(sources) <= 8 and "<line " in svg
    assert re.search(r"reproduce \d+\.\d% of the squared weights", html)
    index = (default_site / "index.html").read_text(encoding="utf-8")
    assert "families/mixed3a-shapes.html" in index  # in the navigation


def test_layer_pages_have_statistics_and_plots(default_site):
    html = (default_site / "layers" / "mixed3b.html").read_text(encoding="utf-8")
    rows = re.findall(r'<tr data-unit="(\d+)">', html)
    assert sorted(map(int, rows)) == list(range(208))
    for unit in (10, 60):
        data = json.loads((default_site / "units" / "mixed3b" / f"{unit}.json").read_text(encoding="utf-8"))
        cell = re.search(rf'<a class="wa-cell[^"]*" href="../units/mixed3b/{unit}.html"[^>]*>', html).group(0)
        l2 = float(re.search(r'data-l2="([^"]+)"', cell).group(1))
        assert l2 == pytest.approx(data["input_l2"], rel=1e-3)
        excitatory = float(re.search(r'data-excitatory="([^"]+)"', cell).group(1))
        total = data["excitatory_inputs"] + data["inhibitory_inputs"]
        assert excitatory == pytest.approx(data["excitatory_inputs"] / total, abs=1e-3)
        active = float(re.search(r'data-active="([^"]+)"', cell).group(1))
        assert (active == 0) == (not data["dataset_examples"]["fired"])
    for plot in ("kernel-norms.svg", "balance.svg", "branches.svg"):
        assert f'src="mixed3b/{plot}"' in html and (default_site / "layers" / "mixed3b" / plot).is_file()
    assert "layer-tools.js" in html and '<div class="wa-layer-tools"></div>' in html


def test_the_search_index_is_stored_once_and_no_unused_theme_file_is_published(default_site):
    assert [p.name for p in (default_site / "search").iterdir()] == ["index.js"]
    published = [p.relative_to(default_site).as_posix() for p in default_site.rglob("*") if p.is_file()]
    assert not [p for p in published if p.endswith(".map") or "lunr" in p or "workers/" in p]
    shell = (default_site / "units" / "mixed3b" / "12.html").read_text(encoding="utf-8")
    assert "\n  " not in shell.split("<article")[0]  # the shell carries no indentation
    entries = {e[0]: e for e in _search_index(default_site)}
    assert "units/mixed3b/12.html" in entries and "how-to-read.html#factors" in entries
    assert "@@" not in json.dumps(list(entries.values()))  # no placeholder reached the index


def _search_index(site: Path) -> list[list[str]]:
    text = (site / "search" / "index.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def _toy_config(tmp_path, factory, output):
    return load_config(write_config(tmp_path, model={"source": f"tests.toy_models:{factory}"},
                                    input={"channels": 3, "size": 12}, site={"output": str(output)}))


def test_names_are_escaped_and_no_file_lands_outside_the_output(tmp_path):
    work = tmp_path / "work"
    output = work / "out" / "site"
    output.parent.mkdir(parents=True)
    config = _toy_config(tmp_path, "evil_names", output)
    before = set(tmp_path.rglob("*"))
    build_atlas(config)
    created = {p for p in set(tmp_path.rglob("*")) - before if not p.is_relative_to(config.cache)}
    assert created and all(p.resolve().is_relative_to(output.resolve()) for p in created), \
        sorted(str(p) for p in created if not p.resolve().is_relative_to(output.resolve()))
    pages = list(output.rglob("*.html"))  # the search index holds names as data, shown as text
    text = "".join(p.read_text(encoding="utf-8") for p in pages)
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert {p.name for p in (output / "layers").glob("*.html")} == {"stem.html", "script-alert-1-script.html", "evil.html"}


def test_a_hostile_title_is_text_on_every_page(tmp_path):
    output = tmp_path / "site"
    title = 'T</title><img src=x onerror="document.body.dataset.pwned=1"><title>'
    config = load_config(write_config(tmp_path, title=title, model={"source": "tests.toy_models:small_cnn"},
                                      input={"channels": 3, "size": 12}, featurevis={"enabled": False},
                                      site={"output": str(output)}))
    build_atlas(config)
    pages = list(output.rglob("*.html"))
    assert pages and not any("<img src=x" in p.read_text(encoding="utf-8") for p in pages)
    index = (output / "index.html").read_text(encoding="utf-8")
    assert "T&lt;/title&gt;&lt;img src=x" in index


def test_failed_build_leaves_the_existing_site_untouched(tmp_path, monkeypatch):
    output = tmp_path / "site"
    output.mkdir()
    (output / "index.html").write_text("the previous atlas")
    (output / ".weight-atlas").write_text("")

    def broken(*args, **kwargs):
        raise RuntimeError("mkdocs failed half way")

    monkeypatch.setattr(build_module, "mkdocs_site", broken)
    with pytest.raises(RuntimeError):
        build_atlas(_toy_config(tmp_path, "small_cnn", output))
    assert sorted(p.name for p in output.iterdir()) == [".weight-atlas", "index.html"]
    assert (output / "index.html").read_text() == "the previous atlas"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.yml", "cache", "site"]  # no staging left behind


def test_rebuild_replaces_the_site_and_is_deterministic(tmp_path):
    output = tmp_path / "site"
    config = _toy_config(tmp_path, "small_cnn", output)
    torch.manual_seed(0)  # the toy factory initialises its weights at random
    build_atlas(config)
    first = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    (output / "stale.html").write_text("from an older build")
    torch.manual_seed(0)
    build_atlas(config)
    second = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    assert first == second  # the stale file is gone, every other byte the same


def test_the_replaced_site_is_removed_only_after_the_build_reports(tmp_path, monkeypatch, capsys):
    """The command line renames the old site aside at the swap and has it removed once it has
    printed its report, by a process it does not wait for, so a slow disk holds back neither."""
    import generator.__main__ as cli

    config = write_config(tmp_path, model={"source": "tests.toy_models:small_cnn"}, input={"channels": 3, "size": 12},
                          featurevis={"enabled": False}, site={"output": str(tmp_path / "site")})
    assert cli.main(["build", str(config), "--quiet"]) == 0
    seen, original = [], cli.remove_left

    def removing(folders):
        seen.append((capsys.readouterr().out, [f.name for f in folders], [f.exists() for f in folders]))
        removers.append(original(folders))

    removers = []
    monkeypatch.setattr(cli, "remove_left", removing)
    assert cli.main(["build", str(config), "--quiet"]) == 0
    [(printed, names, present)] = seen
    assert printed.startswith("Built ") and len(names) == 1 and names[0].startswith(".site-old-") and present == [True]
    [remover] = removers
    assert remover is not None and remover.wait(60) == 0  # a process of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.yml", "site"]  # and then it is gone


def test_the_default_atlas_with_pictures_is_reproducible(default_site, tmp_path):
    """Built again from nothing (a new cache: every picture and example made again) into another
    folder, the default atlas is the same, byte for byte."""
    config = load_config(ROOT / "site_config" / "default.yml")
    config = dataclasses.replace(config, cache=str(tmp_path / "cache"),
                                 featurevis=dataclasses.replace(config.featurevis, steps=8),
                                 dataset=dataclasses.replace(config.dataset, images=512))  # as default_site
    build_atlas(config, tmp_path / "again")
    first = {p.relative_to(default_site): p for p in default_site.rglob("*") if p.is_file()}
    again = {p.relative_to(tmp_path / "again"): p for p in (tmp_path / "again").rglob("*") if p.is_file()}
    assert sorted(first) == sorted(again)
    assert [str(path) for path, file in first.items() if file.read_bytes() != again[path].read_bytes()] == []


def test_command_line_reports_errors_without_a_traceback(tmp_path):
    output = tmp_path / "site"
    output.mkdir()
    (output / "keep.txt").write_text("keep me")
    config = write_config(tmp_path, model={"source": "default"}, ranking={"topk": 3}, site={"output": str(output)})
    result = subprocess.run([sys.executable, "-m", "generator", "build", str(config)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown setting `ranking.topk`" in result.stderr and "Traceback" not in result.stderr
    assert (output / "keep.txt").read_text() == "keep me"


def test_a_labels_file_naming_an_unknown_unit_stops_the_build_with_its_line(tmp_path):
    output = tmp_path / "site"
    config = write_config(tmp_path, model={"source": "tests.toy_models:small_cnn"}, input={"channels": 3, "size": 12},
                          featurevis={"enabled": False}, site={"output": str(output)})
    (tmp_path / "atlas.labels.yml").write_text("units:\n  conv1:\n    0: edge\n    999: too far\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "generator", "build", str(config)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "atlas.labels.yml:4" in result.stderr and "999" in result.stderr, result.stderr
    assert not output.exists()


def test_random_weights_are_written_into_a_new_folder(tmp_path):
    path = tmp_path / "checkpoints" / "new" / "inception5h.pth"
    result = subprocess.run([sys.executable, "-m", "generator", "random-inceptionv1", str(path)], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0 and path.is_file(), result.stderr


def test_layer_selection_and_further_hops(tmp_path):
    output = tmp_path / "site"
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:small_cnn"},
                                      input={"channels": 3, "size": 12}, layers=["conv1", "conv2", "conv3"],
                                      ranking={"top_k": 4, "hops": 2}, site={"output": str(output)}))
    build_atlas(config)
    assert sorted(p.name for p in (output / "layers").glob("*.html")) == ["conv1.html", "conv2.html", "conv3.html"]
    unit = (output / "units" / "conv3" / "0.html").read_text(encoding="utf-8")
    assert "Inputs from conv1, 2 layers up" in unit
    data = json.loads((output / "units" / "conv3" / "0.json").read_text(encoding="utf-8"))
    assert data["further_inputs"][0]["from"] == "conv1" and len(data["further_inputs"][0]["units"]) == 4
    assert data["outputs"] == []  # fc is not in the atlas, so nothing links to it


def test_unknown_layer_in_config_is_reported(tmp_path):
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:small_cnn"},
                                      input={"channels": 3, "size": 12}, layers=["conv1", "conv9"],
                                      site={"output": str(tmp_path / "site")}))
    with pytest.raises(AtlasError, match=r"Unknown layer `conv9`.*conv1, conv2, conv3, fc"):
        build_atlas(config)


def test_a_folder_that_is_not_an_atlas_is_never_replaced(tmp_path):
    work = tmp_path / "project"
    work.mkdir()
    (work / "precious.py").write_text("print('years of work')")
    config = _toy_config(tmp_path, "small_cnn", work)
    with pytest.raises(AtlasError, match="is not an atlas built by Weight Atlas"):
        build_atlas(config)
    assert (work / "precious.py").read_text() == "print('years of work')"


def test_every_unit_is_shown_by_its_feature_visualisation(default_site):
    page = default_site / "units" / "mixed3b" / "60.html"
    html = page.read_text(encoding="utf-8")
    data = json.loads((page.parent / "60.json").read_text(encoding="utf-8"))
    positive, negative = data["feature_visualisation"]
    assert (positive["direction"], negative["direction"]) == ("positive", "negative")
    for record in (positive, negative):
        assert (page.parent / record["image"]).is_file()
        assert {"objective_value", "noise_value", "image", "device"} <= set(record)
    recipe = json.loads((page.parent / data["about"]).read_text(encoding="utf-8"))["feature_visualisation"]
    assert {"steps", "size", "learning_rate", "transforms", "seed", "parameterisation", "weights_sha256"} <= set(recipe)
    assert f'src="{positive["image"]}"' in html and f'src="{negative["image"]}"' in html
    assert "8 steps of Adam" in html and "seed 0" in html  # how it was made, on the page too
    with Image.open(page.parent / positive["image"]) as picture:
        assert picture.size == (80, 80)  # featurevis.size in site_config/default.yml
        assert np.asarray(picture).std() > 10  # a picture, not a blank
    # Every connection card: the other unit's picture, then the kernel (this unit's picture is on top
    # of the page, not on every card).
    cards = re.findall(r'<a class="wa-card[^"]*"[^>]*>(.*?)</a>', html)
    assert len(cards) >= 48
    for card in cards:
        other = r'<img src="\.\./(mixed3a|logits)/\d+\.thumb\.webp"[^>]*>'
        assert re.search(f'^<i>\\d+</i><span>{other}<i class="wa-tile[^>]*></i></span>', card), card
    assert '"60.thumb.webp"' not in html.split('<h2 id="inputs">')[1]  # its own; mixed3a 60's may be a card
    with Image.open(page.parent / "60.thumb.webp") as thumbnail:
        assert thumbnail.size == (40, 40)  # sized for the cards and grids, never the full picture
    # Pictures are lazily loaded and sized, so a layer of many units stays light.
    grid = (default_site / "layers" / "mixed3b.html").read_text(encoding="utf-8")
    pictures = re.findall(r"<img [^>]*>", grid)
    thumbnails = {re.search(r'src="([^"]+)"', p).group(1) for p in pictures if ".thumb.webp" in p}
    assert len(thumbnails) == 208  # and a collapsed family's first few again, beside its name
    assert all('loading="lazy"' in p and 'width="40"' in p for p in pictures if ".thumb.webp" in p)
    index = (default_site / "index.html").read_text(encoding="utf-8")
    assert "Units at a glance" in index and index.count(".thumb.webp") == 6 * 8


def test_dataset_examples_on_unit_pages(default_site):
    page = default_site / "units" / "conv2d2" / "3.html"
    data = json.loads((page.parent / "3.json").read_text(encoding="utf-8"))
    examples = data["dataset_examples"]
    assert examples["source"] == "512 procedural images" and len(examples["examples"]) == 8
    activations = [e["activation"] for e in examples["examples"]]
    assert activations == sorted(activations, reverse=True)
    html = page.read_text(encoding="utf-8")
    assert '<h2 id="dataset-examples">Dataset examples</h2>' in html and 'src="3.examples.webp"' in html
    assert examples["examples"][0]["label"] in html
    with Image.open(page.parent / "3.examples.webp") as strip:
        assert strip.size == (examples["width"], examples["height"]) == (8 * 66 - 2, 2 * 64 + 2)


def test_without_pictures_or_images_those_sections_are_left_out(tmp_path):
    output = tmp_path / "site"
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:small_cnn"},
                                      input={"channels": 3, "size": 12}, featurevis={"enabled": False},
                                      dataset={"source": str(tmp_path / "no-such-folder")},
                                      site={"output": str(output)}))
    report = build_atlas(config)
    assert report.pictures_made == 0 and not (tmp_path / "cache").exists()
    unit = (output / "units" / "conv2" / "0.html").read_text(encoding="utf-8")
    assert "Feature visualisation" not in unit and "Dataset examples" not in unit
    data = json.loads((output / "units" / "conv2" / "0.json").read_text(encoding="utf-8"))
    assert data["feature_visualisation"] is None and data["dataset_examples"] is None
    # the index shows every sampled unit by a picture: a first-layer colour kernel, else its factor picture
    index = (output / "index.html").read_text(encoding="utf-8")
    cells = re.findall(r'<a class="wa-cell" href="units/[^"]+"[^>]*>(.*?)</a>', index)
    assert cells and all("<img" in c or 'class="wa-nmf"' in c for c in cells), cells


def test_a_pair_without_a_linear_twin_is_listed_and_the_rest_builds(tmp_path, caplog):
    config = _toy_config(tmp_path, "absolute", tmp_path / "site")
    with caplog.at_level(logging.INFO, logger="weight_atlas"):
        report = build_atlas(config)
    assert report.layers == 2 and "skipped conv1 -> conv2: " in caplog.text
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    shown = re.search(r"<h2[^>]*>Not shown</h2>\s*<p>(.*?)</p>\s*<ul>(.*?)</ul>", index, re.S)
    assert "1 of 2 pairs of layers are not shown" in shown.group(1)
    assert "conv1 -&gt; conv2" in shown.group(2) and "`abs`" in shown.group(2).replace("&#96;", "`")
    conv2 = json.loads((tmp_path / "site" / "units" / "conv2" / "0.json").read_text(encoding="utf-8"))
    assert conv2["inputs"] == []  # no weights shown where there is no linear map
    # where it matters: the pages of both layers and of their units say which pair and why
    for page, says in (("units/conv2/0.html", "The weights from <b>conv1</b> are not shown: "),
                       ("units/conv1/0.html", "The weights to <b>conv2</b> are not shown: "),
                       ("layers/conv2.html", "The weights from <b>conv1</b> are not shown: "),
                       ("layers/conv1.html", "The weights to <b>conv2</b> are not shown: ")):
        html = (tmp_path / "site" / page).read_text(encoding="utf-8")
        assert says in html and "abs" in html.split(says)[1].split("</p>")[0], page


@pytest.mark.parametrize("source, target", [("conv2d2", "mixed3a"), ("mixed3a", "mixed3b")])
def test_outputs_lists_reach_every_branch_fairly(default_site, source, target):
    """Ranked by share, outputs lists reach each branch at least half as often as its share of units
    (by raw L2 the pool branches were never reached)."""
    from generator.default_model import NarrowInceptionV1

    _, graph = trace_layers(NarrowInceptionV1(), (3, 64, 64))
    layer = graph.layer(target)
    reached = {b.name: 0 for b in layer.branches}
    for data_file in (default_site / "units" / source).glob("*.json"):
        for group in json.loads(data_file.read_text(encoding="utf-8"))["outputs"]:
            assert group["share"] == sorted(group["share"], reverse=True)
            for unit in group["units"] if group["to"] == target else []:
                reached[layer.branch_of(unit).name] += 1
    total = sum(reached.values())
    for branch in layer.branches:
        assert reached[branch.name] / total >= 0.5 * (branch.stop - branch.start) / layer.channels, reached


def test_a_unit_that_never_fires_is_marked(default_site):
    """A unit whose strongest dataset example is at or below zero never fired: its page and its
    layer's grid say so; a unit that fired carries no mark."""
    data = {page: json.loads(page.read_text(encoding="utf-8")) for page in (default_site / "units").glob("*/*.json")}
    dead = [p for p, d in data.items() if d["dataset_examples"]["examples"][0]["activation"] <= 0]
    alive = [p for p, d in data.items() if d["dataset_examples"]["examples"][0]["activation"] > 0]
    assert dead and alive
    for page, fired in ((dead[0], False), (alive[0], True)):
        assert data[page]["dataset_examples"]["fired"] is fired
        html = page.with_suffix(".html").read_text(encoding="utf-8")
        assert ("This unit never fired" in html) is not fired and ("wa-dead" in html) is not fired
        layer = (default_site / "layers" / f"{page.parent.name}.html").read_text(encoding="utf-8")
        cell = re.search(rf'<a class="wa-cell[^"]*" href="../units/{page.parent.name}/{page.stem}.html"', layer).group(0)
        assert ("wa-dead-cell" in cell) is not fired


def test_how_to_read_reads_the_worked_example_the_labels_file_names(default_site):
    read = (default_site / "how-to-read.html").read_text(encoding="utf-8")
    example = yaml.safe_load((ROOT / "site_config" / "default.labels.yml").read_text())["example"]
    href = f'units/{example["layer"]}/{example["unit"]}.html'
    assert f'is <a href="{href}"><b>{example["layer"]} {example["unit"]}</b>' in read
    unit_page = (default_site / href).read_text(encoding="utf-8").split('<h2 id="inputs">')[1]
    ranked = dict(re.findall(r'<a class="wa-card[^"]*" id="(in-[^"]+)" href="[^"]+"><i>(\d+)</i>', unit_page))
    cards = re.findall(r'<a class="wa-card[^"]*" id="(in-[^"]+)" href="units/', read)
    assert cards == sorted(ranked, key=lambda c: int(ranked[c]))[:3]  # ranks 1 to 3 of that unit's inputs
    assert 'id="a-connection"' in read  # where every unit page's "how to read a card" leads
    assert ".wa-tile{background-image:url(data:image/png;base64," in read  # its card's tiles, in the page
    assert "distill.pub/2020/circuits/visualizing-weights" in read
    assert "of InceptionV1, the network it studies" in read


def test_each_layer_offers_its_own_weights(default_site):
    from safetensors.torch import load_file

    from generator.loading import load_model

    model = load_model(load_config(ROOT / "site_config" / "default.yml"))
    html = (default_site / "layers" / "mixed3b.html").read_text(encoding="utf-8")
    assert 'href="mixed3b/weights.safetensors"' in html
    stored = load_file(str(default_site / "layers" / "mixed3b" / "weights.safetensors"))
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("mixed3b.")}
    assert set(stored) == set(expected)
    assert all(torch.equal(stored[k], expected[k]) for k in expected)


def test_the_index_names_its_sampled_units_and_keeps_the_settings_folded(default_site):
    index = (default_site / "index.html").read_text(encoding="utf-8")
    assert re.search(r'<span class="wa-cell-label">shape=\w+</span>', index)  # logits by their class names
    assert '<details class="wa-config-details">' in index


def test_every_unit_with_inputs_has_its_circuit_and_its_edges_are_the_ranked_connections(default_site):
    """The circuit of a unit, recomputed from the data files alone: its 3 strongest inputs, and
    theirs; every edge the diagram draws is one of those links (family nodes standing for their
    members), and every node links to its page."""
    from generator.config import CircuitsConfig
    from generator.sections.circuit import ROW

    WIDTH = CircuitsConfig().width  # the default atlas's

    def data(layer, unit):
        return json.loads((default_site / "units" / layer / f"{unit}.json").read_text(encoding="utf-8"))

    def strongest(record):
        return [(g["from"], u) for g in record["inputs"] for u in g["units"]][:WIDTH]

    checked = 0
    for layer in ("mixed3a", "mixed3b", "logits"):
        for unit in range(0, 24, 5):
            record, html = data(layer, unit), (default_site / "units" / layer / f"{unit}.html").read_text(encoding="utf-8")
            circuit = record["circuit"]
            assert circuit is not None and '<svg class="wa-circuit"' in html
            expected = {(src, (layer, unit)) for src in strongest(record)}
            expected |= {(src, mid) for mid in strongest(record) for src in strongest(data(*mid))}
            members = [[(n["layer"], u) for u in n["units"]] if n["kind"] == "family" else [(n["layer"], n["unit"])]
                       for n in circuit["nodes"]]
            drawn = {(a, b) for e in circuit["edges"] for a in members[e["from"]] for b in members[e["to"]]}
            assert expected <= drawn and all(any((a, b) in expected for a in members[e["from"]] for b in members[e["to"]])
                                             for e in circuit["edges"])
            tallest = max(Counter(n["layer"] for n in circuit["nodes"]).values())
            assert f'height="{tallest * ROW + 4}"' in html.split('<svg class="wa-circuit"')[1].split(">")[0]  # no gaps
            for node in circuit["nodes"]:
                target = f'href="../{node["layer"]}/{node["unit"]}.html"' if node["kind"] == "unit" else "#family-"
                assert target in html.split('<svg class="wa-circuit"')[1] or node["layer"] == layer
            checked += 1
    assert checked == 15
    assert json.loads((default_site / "units" / "conv2d0" / "0.json").read_text())["circuit"] is None  # reads the image


def test_every_listed_connection_carries_its_measured_effect_and_marked_cards_are_those_that_disagree(default_site):
    """Each listed input has its measured effect, cosine and ratio; the figures agree with the
    decoded kernels and effects; exactly the connections below MARK carry the mark; circuit edges
    between units carry their connection's cosine; How to read tabulates every layer with inputs."""
    from generator.linearity import MARK

    def decoded(block, peaks):
        values = np.frombuffer(zlib.decompress(base64.b64decode(block["zlib"])), "i1").reshape(block["shape"]) / 127
        return values * np.array(peaks)[:, None, None]

    marked = 0
    for layer, unit in [("conv2d1", 5), ("mixed3a", 106), ("mixed3b", 20), ("logits", 3)]:
        record = json.loads((default_site / "units" / layer / f"{unit}.json").read_text(encoding="utf-8"))
        html = (default_site / "units" / layer / f"{unit}.html").read_text(encoding="utf-8")
        for group in record["inputs"]:
            kernels, effects = decoded(group["kernels"], group["peak"]), decoded(group["effects"], group["effect_peak"])
            assert len(group["cosine"]) == len(group["ratio"]) == len(group["units"]) == len(effects)
            for i, source in enumerate(group["units"]):
                k, e = kernels[i].ravel(), effects[i].ravel()
                cosine = k @ e / (np.linalg.norm(k) * np.linalg.norm(e)) if np.linalg.norm(e) > 0 else 0.0
                assert abs(cosine - group["cosine"][i]) < 0.02  # the data gives two digits
                assert abs(np.linalg.norm(e) / np.linalg.norm(k) - group["ratio"][i]) <= 0.06 * group["ratio"][i] + 1e-6
                card = html.split(f'id="{group["anchor"]}-{source}"')[1].split("</a>")[0]
                if abs(group["cosine"][i] - MARK) > 0.005:  # not rounded across the mark
                    assert ('class="wa-nonlinear"' in card) == (group["cosine"][i] < MARK)
                marked += group["cosine"][i] < MARK
        for edge in record["circuit"]["edges"] if record["circuit"] else []:
            assert edge["cosine"] is not None and edge["ratio"] is not None
    assert marked > 0
    how = (default_site / "how-to-read.html").read_text(encoding="utf-8")
    table = how.split('id="linearity"')[1].split("</table>")[0]
    assert all(f"<td>{layer}</td>" in table for layer in ("conv2d1", "conv2d2", "mixed3a", "mixed3b", "logits"))


@pytest.mark.parametrize("depth, width", [(1, 2), (3, 1)])
def test_circuits_follow_their_depth_and_width(tmp_path, depth, width):
    """`circuits.depth` layers of inputs, `circuits.width` followed from each unit: the fc unit of
    a three-convolution network reads conv3, which reads conv2, which reads conv1."""
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:small_cnn"},
                                      input={"channels": 3, "size": 12}, featurevis={"enabled": False},
                                      circuits={"depth": depth, "width": width}, site={"output": str(tmp_path / "site")}))
    build_atlas(config)
    circuit = json.loads((tmp_path / "site" / "units" / "fc" / "0.json").read_text(encoding="utf-8"))["circuit"]
    layers = {n["layer"] for n in circuit["nodes"]}
    assert layers == set(["fc", "conv3", "conv2", "conv1"][: depth + 1])
    assert circuit["follow"] == width
    into = {}
    for edge in circuit["edges"]:
        into.setdefault(edge["to"], []).append(edge["from"])
    assert all(len(sources) <= width for sources in into.values())
    assert sum(n["layer"] == "fc" for n in circuit["nodes"]) == 1


def test_profile_prints_each_stage_with_its_time_and_peak_memory(tmp_path):
    config = write_config(tmp_path, model={"source": "tests.toy_models:small_cnn"}, input={"channels": 3, "size": 12},
                          featurevis={"enabled": False}, site={"output": str(tmp_path / "site")})
    result = subprocess.run([sys.executable, "-m", "generator", "build", str(config), "--quiet", "--profile"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["stage", "seconds", "peak", "MB"])
    rows = {re.match(r"(.+?)\s{2,}", line)[1]: [float(v) for v in line.split()[-2:]] for line in lines[header + 1:]}
    assert list(rows) == ["load", "trace", "weights and factors", "ranking", "feature visualisation",
                          "dataset examples", "measured effects", "families", "mkdocs", "layer plots", "unit pages",
                          "whole build"]
    assert all(seconds >= 0 and 50 < peak < 4000 for seconds, peak in rows.values())  # MB: a Python with torch
    assert rows["whole build"][1] == max(peak for _, peak in rows.values())


def test_a_stage_peak_starts_from_the_memory_held_when_it_starts():
    from generator import memory

    memory.reset_peak()
    before = memory.peak_mb()
    held = np.ones(300 * 2**20 // 8)  # 300 MB, touched
    assert memory.peak_mb() >= before + 250
    del held
    assert memory.reset_peak()  # Linux: the peak is measured per stage
    assert memory.peak_mb() < before + 100


def test_a_worked_example_named_by_the_labels_file_is_read_through_its_strongest_inputs(tmp_path):
    """How to read walks the unit the labels file names: its three strongest inputs, strongest
    first, with their labels and links, as its own page ranks them."""
    output = tmp_path / "site"
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:seeded_cnn"},
                                      input={"channels": 3, "size": 12}, featurevis={"enabled": False},
                                      site={"output": str(output)}))
    (tmp_path / "atlas.labels.yml").write_text(
        "units:\n  conv2:\n    5: {label: corner, family: corners}\n    6: {family: corners}\n"
        "  conv1:\n    0: edge\nexample: {layer: conv2, unit: 5}\n", encoding="utf-8")
    build_atlas(config)
    read = (output / "how-to-read.html").read_text(encoding="utf-8")
    assert 'id="a-circuit"' in read and '<h2 id="a-connection">' not in read
    assert '<a href="units/conv2/5.html"><b>conv2 5</b> (corner)</a>' in read
    assert 'one of the <a href="families/' in read
    unit = (output / "units" / "conv2" / "5.html").read_text(encoding="utf-8").split('<h2 id="inputs">')[1]
    ranked = dict(re.findall(r'<a class="wa-card[^"]*" id="in-conv1-\d+" href="../conv1/(\d+).html"><i>(\d+)</i>', unit))
    strongest = sorted(ranked, key=lambda u: int(ranked[u]))[:3]
    listed = re.findall(r'<li><a href="units/conv1/(\d+)\.html"><b>conv1 \d+</b></a>', read)
    cards = re.findall(r'<a class="wa-card[^"]*" id="in-conv1-(\d+)"', read)
    assert len(strongest) == 3 and listed == strongest and cards == strongest
    if "0" in listed:
        assert '<b>conv1 0</b></a> (edge)' in read


def test_without_a_named_example_how_to_read_explains_the_strongest_connection(tmp_path):
    output = tmp_path / "site"
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:seeded_cnn"},
                                      input={"channels": 3, "size": 12}, featurevis={"enabled": False},
                                      site={"output": str(output)}))
    build_atlas(config)
    read = (output / "how-to-read.html").read_text(encoding="utf-8")
    assert '<h2 id="a-connection">' in read and 'id="a-circuit"' not in read
    card = re.search(r'<a class="wa-card[^"]*" id="(in-[^"]+)" href="units/([^"]+)">', read)
    target = re.search(r'into <a href="units/([^"#]+)#([^"]+)"', read)
    assert card and target and target.group(2) == card.group(1)
    unit_page = (output / "units" / target.group(1)).read_text(encoding="utf-8")
    ranked = dict(re.findall(r'<a class="wa-card[^"]*" id="(in-[^"]+)" href="[^"]+"><i>(\d+)</i>',
                             unit_page.split('<h2 id="inputs">')[1]))
    assert ranked[card.group(1)] == "1"  # the strongest of that unit's inputs
