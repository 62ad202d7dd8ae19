"""Hostile and faulty input: escaped text, unique file names, clear errors, nothing lost.

Each test is one input a careless or malicious user could give; the README's "Safe with
untrusted input" lists them.
"""

import errno
import fcntl
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from generator import AtlasError, build_atlas, load_config
from generator import files as files_module
from generator.__main__ import main
from generator.files import atomic_write
from generator.site import MARK, STAGE_LOCK, wait_for_removals
from tests.conftest import ROOT, write_config
from tests.toy_models import HostileNames

HOSTILE_LABELS = {"units": {
    "x/y": {0: {"label": "<script>alert(1)</script>", "family": "a/b"}, 1: {"label": "..", "family": "a-b"},
            2: {"family": "a/b"}, 3: {"family": "a-b"}},
    "ünïcödé ✓": {0: {"label": "ünï ✓ " + "long " * 38, "family": "<b>bold</b>"}, 1: {"family": "<b>bold</b>"}},
}}


def toy(tmp_path: Path, factory: str = "small_cnn", **settings) -> Path:
    settings.setdefault("input", {"channels": 3, "size": 12})
    settings.setdefault("site", {"output": str(tmp_path / "site")})
    return write_config(tmp_path, model={"source": f"tests.toy_models:{factory}"}, **settings)


@pytest.fixture(scope="module")
def hostile_site(tmp_path_factory) -> Path:
    """An atlas of :class:`HostileNames` with hostile labels and families, with pictures."""
    folder = tmp_path_factory.mktemp("hostile")
    config = toy(folder, "hostile_names", site={"output": str(folder / "out" / "site")})
    (folder / "atlas.labels.yml").write_text(yaml.safe_dump(HOSTILE_LABELS, allow_unicode=True), encoding="utf-8")
    before = set(folder.rglob("*"))
    build_atlas(load_config(config))
    site = (folder / "out" / "site").resolve()
    created = {p.resolve() for p in set(folder.rglob("*")) - before if not p.is_relative_to(folder / "cache")}
    outside = sorted(str(p) for p in created if not p.is_relative_to(site) and p != site.parent)
    assert not outside, outside
    return folder / "out" / "site"


def test_hostile_names_get_unique_short_file_names_inside_the_output(hostile_site):
    layers = sorted(p.name for p in (hostile_site / "layers").glob("*.html"))
    assert len(layers) == len(HostileNames.NAMES)  # two names alike, a blank one: still one page each
    assert {"x-y.html", "x-y-2.html", "unicode.html", "layer.html", "a" * 60 + ".html"} <= set(layers)
    assert len(list((hostile_site / "families").glob("*.html"))) == 3  # a/b and a-b stay two families
    assert all(len(p.name) <= 80 for p in hostile_site.rglob("*"))
    assert len([p for p in (hostile_site / "units").iterdir() if p.is_dir()]) == len(HostileNames.NAMES)


def test_hostile_names_and_labels_are_text_everywhere(hostile_site):
    pages = list(hostile_site.rglob("*.html"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in pages)
    for markup in ("<script>alert(1)</script>", "<img src=x", "<b>bold</b>"):
        assert markup not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "&lt;b&gt;bold&lt;/b&gt;" in text
    assert "ünïcödé ✓" in text  # unicode is shown as it is
    for data in hostile_site.rglob("*.json"):
        json.loads(data.read_text(encoding="utf-8"))  # every data file is valid JSON


def test_hostile_names_stay_text_in_the_browser(hostile_site):
    from selenium.webdriver.common.by import By

    from tests.chromium import require_chromium, start_browser

    require_chromium()
    browser = start_browser()
    try:
        for page in [*sorted((hostile_site / "layers").glob("img-src*.html")),
                     *sorted((hostile_site / "units" / "x-y").glob("0.html")), hostile_site / "index.html"]:
            browser.get(page.as_uri())
            assert browser.execute_script("return document.body.dataset.pwned") is None, page
            assert "onerror" in browser.execute_script("return document.body.innerText") or "index" in page.name
        box = browser.find_element(By.CSS_SELECTOR, ".wa-search input")
        box.click()
        box.send_keys("onerror")  # results show the layer's name: as text
        deadline = time.time() + 20
        while "matching" not in browser.find_element(By.CSS_SELECTOR, ".wa-search__meta").text:
            assert time.time() < deadline
            time.sleep(0.1)
        titles = [t.text for t in browser.find_elements(By.CSS_SELECTOR, ".wa-search__title")]
        assert any(HostileNames.NAMES[0] in t for t in titles), titles
        assert browser.execute_script("return document.body.dataset.pwned") is None
        pictures = [i.get_attribute("src") for i in browser.find_elements(By.CSS_SELECTOR, ".wa-search__results img")]
        assert all(p.startswith(hostile_site.resolve().as_uri()) and p.endswith(".thumb.webp") for p in pictures), pictures
    finally:
        browser.quit()


def test_a_config_that_is_not_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "atlas.yml"
    path.write_bytes(b"# atlas\ntitle: caf\xe9\n")
    with pytest.raises(AtlasError, match=r"atlas.yml:2 is not UTF-8"):
        load_config(path)


def test_the_output_is_checked_before_the_model_is_loaded(tmp_path, monkeypatch):
    """`site.output: .` inside an earlier atlas would delete the picture cache with it."""
    import generator.build as build_module

    monkeypatch.setattr(build_module, "load_model", lambda config: pytest.fail("loaded the model first"))
    atlas = tmp_path / "atlas"
    atlas.mkdir()
    (atlas / MARK).write_text("")
    monkeypatch.chdir(atlas)  # run from inside an earlier atlas
    config = load_config(write_config(tmp_path, model={"source": "default"}, cache=".atlas-cache",
                                      site={"output": "."}))
    with pytest.raises(AtlasError, match=r"picture cache \.atlas-cache lies inside the output folder"):
        build_atlas(config)
    inside = load_config(write_config(atlas, model={"source": "default"}, site={"output": "."}))
    with pytest.raises(AtlasError, match=r"atlas config .*atlas.yml lies inside the output folder"):
        build_atlas(inside)
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(AtlasError, match=r"cannot be written"):
        build_atlas(config, blocked / "site")  # its parent is a file: a missing or unwritable folder


def test_a_rebuild_keeps_cname_and_git(tmp_path):
    config = load_config(toy(tmp_path, featurevis={"enabled": False}))
    build_atlas(config)
    site = tmp_path / "site"
    (site / "CNAME").write_text("atlas.example.org\n")
    (site / ".git").mkdir()
    (site / ".git" / "HEAD").write_text("ref: refs/heads/gh-pages\n")
    (site / "stale.html").write_text("from an older build")
    build_atlas(config)
    assert (site / "CNAME").read_text() == "atlas.example.org\n"
    assert (site / ".git" / "HEAD").read_text() == "ref: refs/heads/gh-pages\n"
    assert not (site / "stale.html").exists() and (site / ".nojekyll").exists()


def test_staging_folders_of_dead_builds_are_removed_and_running_ones_kept(tmp_path):
    config = load_config(toy(tmp_path, featurevis={"enabled": False}))
    dead, running = tmp_path / ".site-build-dead", tmp_path / ".site-build-running"
    for stage in (dead, running):
        (stage / "docs").mkdir(parents=True)
        (stage / STAGE_LOCK).write_text("")
    with open(running / STAGE_LOCK) as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the build writing it would
        build_atlas(config)
        assert not dead.exists() and running.exists()
    build_atlas(config)
    assert not running.exists()
    wait_for_removals()  # the replaced site is removed by a process of its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.yml", "site"]


def test_a_swap_cut_short_is_repaired_by_the_next_build(tmp_path):
    """Killed between moving the old site aside and putting the new one in place: the next
    build puts the old site back first, so its CNAME reaches the new one."""
    config = load_config(toy(tmp_path, featurevis={"enabled": False}, site={"output": str(tmp_path / "s[1]")}))
    old = tmp_path / ".s[1]-old-x" / "s[1]"
    old.mkdir(parents=True)
    (old / MARK).write_text("")
    (old / "CNAME").write_text("atlas.example.org\n")
    build_atlas(config)
    assert (tmp_path / "s[1]" / "CNAME").read_text() == "atlas.example.org\n"
    wait_for_removals()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.yml", "s[1]"]  # the name is no pattern


def test_an_output_inside_the_dataset_folder_is_refused(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    config = load_config(toy(tmp_path, featurevis={"enabled": False}, dataset={"source": str(images)}))
    with pytest.raises(AtlasError, match="lies inside the dataset folder"):
        build_atlas(config, images / "site")


def test_concurrent_writes_of_one_file_leave_one_whole_file(tmp_path):
    target = tmp_path / "cache" / "picture.png"
    payloads = [bytes([i]) * 300_000 for i in range(8)]
    threads = [threading.Thread(target=lambda p=p: [atomic_write(target, p) for _ in range(20)]) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert target.read_bytes() in payloads
    assert [p.name for p in target.parent.iterdir()] == ["picture.png"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~files_module.UMASK  # readable as any file written


def test_two_builds_at_once_into_one_output_and_cache(tmp_path):
    config = toy(tmp_path, "seeded_cnn")
    runs = [subprocess.Popen([sys.executable, "-m", "generator", "build", str(config), "--quiet"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=600)
        assert run.returncode == 0, stderr
    first = {p.relative_to(tmp_path / "site"): p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file()}
    assert subprocess.run([sys.executable, "-m", "generator", "build", str(config), "--quiet"], cwd=ROOT).returncode == 0
    again = {p.relative_to(tmp_path / "site"): p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file()}
    assert first == again  # the site they left is whole: the same as one build alone
    deadline = time.monotonic() + 60  # the sites they replaced are removed by processes of their own
    while list(tmp_path.glob(".site-old-*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.yml", "cache", "site"]
    assert not list((tmp_path / "cache").rglob("*.partial"))


def test_sigterm_stops_the_workers_and_keeps_the_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / MARK).write_text("")
    (site / "index.html").write_text("the previous atlas")
    config = write_config(tmp_path, model={"source": "default"}, featurevis={"steps": 400, "jobs": 2},
                          site={"output": str(site)})
    build = subprocess.Popen([sys.executable, "-m", "generator", "build", str(config)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in build.stdout:  # wait until the picture workers run
        if line.startswith("feature visualisation:"):
            break
    deadline = time.monotonic() + 60
    while len(workers := _children(build.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) >= 2, workers
    build.send_signal(signal.SIGTERM)
    output, _ = build.communicate(timeout=60)
    assert build.returncode == 130 and "Traceback" not in output, output
    time.sleep(1)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists() and _state(pid) != "Z"]
    assert (site / "index.html").read_text() == "the previous atlas"
    assert not list(tmp_path.glob(".site-*"))  # no staging folder left


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]


def test_a_full_disk_mid_build_is_reported_and_the_site_kept(tmp_path, monkeypatch, capsys):
    config = toy(tmp_path, featurevis={"enabled": False})
    assert main(["build", str(config), "--quiet"]) == 0
    before = {p: p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file()}
    calls = {"n": 0}
    real = files_module.write

    def fills_up(target, data):
        calls["n"] += 1
        if calls["n"] > 5:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        real(target, data)

    monkeypatch.setattr(files_module, "write", fills_up)
    assert main(["build", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file()} == before
    assert not list(tmp_path.glob(".site-*"))  # no staging folder left


def test_broken_and_oversized_dataset_images_are_skipped(tmp_path, caplog):
    import struct
    import zlib

    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)  # claims 30000 x 30000 pixels
    (images / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) +
                                      chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    (images / "text.jpg").write_text("not an image")
    for i in range(3):
        Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(images / f"fine{i}.png")
    caplog.set_level("WARNING")
    build_atlas(load_config(toy(tmp_path, featurevis={"enabled": False}, dataset={"source": str(images), "top": 2})))
    assert "bomb.png" in caplog.text and "text.jpg" in caplog.text
    assert list((tmp_path / "site" / "units").rglob("*.examples.webp"))


def test_a_two_channel_model_with_an_image_folder_skips_the_examples(tmp_path, caplog):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (16, 16)).save(images / "a.png")
    caplog.set_level("INFO")
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:two_channels"},
                                      input={"channels": 2, "size": 12}, featurevis={"enabled": False},
                                      dataset={"source": str(images)}, site={"output": str(tmp_path / "site")}))
    build_atlas(config)
    assert "skipped dataset examples: image files are read as grey (1 channel) or RGB (3)" in caplog.text


def test_huge_weights_give_valid_json_and_overflowing_ones_an_error(tmp_path):
    config = load_config(toy(tmp_path, "huge_weights", featurevis={"enabled": False}))
    build_atlas(config)

    def refuse(constant):
        raise ValueError(f"{constant} in a data file")

    for data in (tmp_path / "site" / "units").rglob("*.json"):
        json.loads(data.read_text(encoding="utf-8"), parse_constant=refuse)
    text = (tmp_path / "site" / "units" / "conv2" / "0.html").read_text(encoding="utf-8")
    assert not re.search(r"\b(nan|inf)\b", text)
    expanded = load_config(toy(tmp_path, "huge_weights", featurevis={"enabled": False}, ranking={"hops": 2}))
    with pytest.raises(AtlasError, match="are not finite"):  # products of two such weights
        build_atlas(expanded)
    # Running the model overflows: pictures and examples are refused, and nothing is cached.
    for settings in ({"featurevis": {"steps": 2, "batch": 64, "jobs": 1}},
                     {"featurevis": {"enabled": False}, "dataset": {"source": "procedural", "images": 64}}):
        with pytest.raises(AtlasError, match=r"activations of `conv1`.* are not finite"):
            build_atlas(load_config(toy(tmp_path, "huge_weights", **settings)))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_published_files_carry_no_path_of_the_build_machine(tmp_path):
    """The same atlas built from two config paths, into two outputs, is the same site."""
    sites = []
    for name in ("first", "second"):
        folder = tmp_path / name / "deep"
        folder.mkdir(parents=True)
        checkpoint = folder / "weights.pth"
        torch.manual_seed(0)
        from tests.toy_models import small_cnn

        torch.save(small_cnn().state_dict(), checkpoint)
        (folder / "units.yml").write_text("units:\n  conv1:\n    0: edge\n", encoding="utf-8")
        config = write_config(folder, model={"source": "tests.toy_models:small_cnn", "checkpoint": str(checkpoint),
                                             "url": "https://user:token@example.org/w/weights.pth?key=1"},
                              input={"channels": 3, "size": 12}, featurevis={"enabled": False},
                              labels=str(folder / "units.yml"), site={"output": str(folder / "site")},
                              cache=str(tmp_path / "cache"))
        assert main(["build", str(config), "--quiet"]) == 0
        sites.append({p.relative_to(folder / "site"): p.read_bytes()
                      for p in (folder / "site").rglob("*") if p.is_file()})
    assert sites[0] == sites[1]
    assert not [p for site in sites for p, data in site.items() if str(tmp_path).encode() in data or b"token" in data]
    assert "labels: units.yml" in (tmp_path / "first" / "deep" / "site" / "index.html").read_text(encoding="utf-8")


def test_a_pickle_payload_in_a_checkpoint_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    checkpoint = tmp_path / "evil.pth"
    with open(checkpoint, "wb") as file:
        pickle.dump({"conv1.weight": Payload()}, file)
    config = load_config(write_config(tmp_path, model={"source": "tests.toy_models:small_cnn",
                                                       "checkpoint": str(checkpoint)},
                                      input={"channels": 3, "size": 12}, site={"output": str(tmp_path / "site")}))
    with pytest.raises(AtlasError):
        build_atlas(config)
    assert not marker.exists()
