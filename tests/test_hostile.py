"""Hostile and faulty input, one table: each row is something a careless or malicious user
could hand the build, and what must come of it.

Every row runs the command line in this process and checks, besides its own expectation,
that nothing ended in a traceback; a refused input must also be refused within seconds
and leave the earlier site as it was. Add a row for each new hostile input.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from generator.__main__ import main
from generator.dataset_examples import check_examples
from generator.featurevis.cache import check_picture
from generator.linearity import read_effect
from generator.site import MARK
from generator.page_weights import serve as served
from tests.conftest import QUICK_PICTURES
from tests.toy_models import SmallCNN

SECRET = "root:x:0:0:the secret line\n"
def _bomb() -> str:
    """Nine nested aliases, each used nine times: 9**9 (387 million) values once expanded."""
    value = "&a [" + ", ".join(["lol"] * 9) + "]"
    for used, anchor in zip("abcdefgh", "bcdefghi"):
        value = f"&{anchor} [{value}, " + ", ".join([f"*{used}"] * 8) + "]"
    return f"title: {value}\n"


BOMB = _bomb()


@dataclass
class World:
    """What a row may arrange: its own folder (the current folder), and the pytest tools."""

    folder: Path
    monkeypatch: pytest.MonkeyPatch
    template: Callable[[], Path]  # a folder with a finished build (config, cache, site) to copy
    cleanup: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)  # closed after the row
    capsys: pytest.CaptureFixture | None = None
    caplog: pytest.LogCaptureFixture | None = None
    record: Path | None = None  # a damaged picture's data file
    layer: Path | None = None  # a damaged layer's examples folder

    def config(self, text: str | None = None, **settings) -> str:
        """An atlas config of a small CNN, ``text`` as it is or ``settings`` over the base ones."""
        path = self.folder / "atlas.yml"
        if text is None:
            base = {"model": {"source": "tests.toy_models:small_cnn"}, "input": {"channels": 3, "size": 12},
                    "featurevis": QUICK_PICTURES, "cache": str(self.folder / "cache"),
                    "site": {"output": str(self.folder / "site")}}
            for key, value in settings.items():
                base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
            text = yaml.safe_dump(base)
        path.write_text(text, encoding="utf-8")
        return str(path)

    def secret(self) -> Path:
        """A private file outside every folder the atlas reads."""
        private = self.folder.parent / f"{self.folder.name}-private"
        private.mkdir(exist_ok=True)
        (private / "secret.txt").write_text(SECRET)
        return private / "secret.txt"

    def built(self) -> str:
        """This row's folder holds a copy of the finished build; returns its config."""
        for name in ("cache", "site"):
            shutil.copytree(self.template() / name, self.folder / name, symlinks=True)
        # the images where the template's build read them: the cache's key names their folder
        return self.config(dataset={"source": str(self.template() / "images"), "images": 64, "top": 3},
                           featurevis={"negative": False})

    def repository(self) -> Path:
        """A clone (the current folder) with a bare `origin` and a built atlas in site/; returns the bare one."""
        self.monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(self.folder))
        bare = self.folder / "origin.git"
        git("init", "--quiet", "--bare", str(bare))
        git("init", "--quiet", "--initial-branch=main", cwd=self.folder)
        git("config", "user.name", "Tester", cwd=self.folder)
        git("config", "user.email", "tester@example.com", cwd=self.folder)
        (self.folder / ".gitignore").write_text("*\n")
        git("add", "-f", ".gitignore", cwd=self.folder)
        git("commit", "--quiet", "-m", "source", cwd=self.folder)
        git("remote", "add", "origin", str(bare), cwd=self.folder)
        return bare


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@dataclass
class Row:
    name: str
    arrange: Callable[[World], list[str]]  # prepares the input; the command line's arguments
    says: str  # a pattern the command's output (and log) must hold
    status: int = 2  # 2: refused with an error; 0: a whole site
    then: Callable[[World], None] | None = None  # further checks


# -- arrangements ----------------------------------------------------------------------------
def labels_naming(path: Callable[[World], str]) -> Callable[[World], list[str]]:
    def arrange(world: World) -> list[str]:
        config = world.config(featurevis={"enabled": False})
        (world.folder / "atlas.labels.yml").write_text(yaml.safe_dump({"classes": {"layer": "fc", "file": path(world)}}))
        return ["build", config]
    return arrange


def linked_classes(world: World) -> str:
    (world.folder / "classes.txt").symlink_to(world.secret())
    return "classes.txt"


def url_of_a_file(world: World) -> list[str]:
    return ["build", world.config(model={"url": world.secret().as_uri(), "checkpoint": str(world.folder / "w.pt")})]


def url_with_credentials(world: World) -> list[str]:
    return ["build", world.config(model={"url": "http://someone:hunter2@bad host/w.pt",
                                         "checkpoint": str(world.folder / "w.pt")})]


def download_that_is_not_a_checkpoint(world: World) -> list[str]:
    served_folder = world.folder / "www"
    served_folder.mkdir()
    (served_folder / "w.pt").write_bytes(b"<html>Not Found</html>")
    base = world.cleanup.enter_context(served(served_folder))
    return ["build", world.config(model={"url": f"{base}w.pt", "checkpoint": str(world.folder / "w.pt")},
                                  featurevis={"enabled": False})]


def pinned_checkpoint(world: World) -> list[str]:
    torch.save(SmallCNN().state_dict(), world.folder / "w.pt")
    return ["build", world.config(model={"checkpoint": str(world.folder / "w.pt"), "sha256": "ab" * 32},
                                  featurevis={"enabled": False})]


def pickled_checkpoint(world: World) -> list[str]:
    torch.save(SmallCNN(), world.folder / "w.pt")  # a whole pickled object, not a state dict
    return ["build", world.config(model={"checkpoint": str(world.folder / "w.pt")}, featurevis={"enabled": False})]


def unwritable_cache(world: World) -> list[str]:
    (world.folder / "a-file").write_text("not a folder")
    return ["build", world.config(cache=str(world.folder / "a-file" / "cache"))]


def home_output(world: World) -> list[str]:
    world.monkeypatch.setenv("HOME", str(world.folder / "home"))
    return ["build", world.config(site={"output": "~/atlas"}, featurevis={"enabled": False})]


def thin_input_with_images(world: World) -> list[str]:
    images = world.folder / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((30, 40, 3), 60 * i, np.uint8)).save(images / f"{i}.png")
    return ["build", world.config(model={"source": "tests.toy_models:thin"}, input={"size": [1, 1000]},
                                  dataset={"source": str(images)})]


def published_link(kind: str) -> Callable[[World], list[str]]:
    def arrange(world: World) -> list[str]:
        world.repository()
        site = world.folder / "site"
        site.mkdir()
        (site / MARK).write_text("built\n")
        (site / "index.html").write_text("<h1>atlas</h1>\n")
        if kind == "file":
            (site / "leak.txt").symlink_to(world.secret())
        elif kind == "folder":
            (site / "private").symlink_to(world.secret().parent)
        else:
            os.mkfifo(site / "pipe")
        return ["deploy", world.config(featurevis={"enabled": False})]
    return arrange


def nothing_published(world: World) -> None:
    assert git(f"--git-dir={world.folder / 'origin.git'}", "branch", "--list") == ""


def deploy_to_a_missing_remote(world: World) -> list[str]:
    world.repository()
    world.monkeypatch.setattr("generator.__main__.build_atlas", lambda *a: pytest.fail("built before the check"))
    return ["deploy", world.config(), "--build", "--remote", "nowhere"]


def linked_cname(world: World) -> list[str]:
    config = world.config(featurevis={"enabled": False})
    assert main(["build", config, "--quiet"]) == 0
    (world.folder / "site" / "CNAME").symlink_to(world.secret())
    return ["build", config]


def cname_left_behind(world: World) -> None:
    assert not os.path.lexists(world.folder / "site" / "CNAME")


def random_weights(*extra: str, existing: bool = False) -> Callable[[World], list[str]]:
    def arrange(world: World) -> list[str]:
        (world.folder / "a-file").write_text("not a folder")
        if existing:
            (world.folder / "w.pth").write_bytes(b"my trained weights")
        return ["random-inceptionv1", *extra]
    return arrange


def damaged(what: str) -> Callable[[World], list[str]]:
    """A finished build whose cache then lost part of one entry, ``what``."""
    def arrange(world: World) -> list[str]:
        config = world.built()
        record = sorted((world.folder / "cache" / "featurevis").rglob("3.positive.json"))[0]
        layer = sorted((world.folder / "cache" / "examples").rglob("examples.json"))[0].parent
        if what == "truncated picture":
            data = record.with_suffix(".png").read_bytes()
            record.with_suffix(".png").write_bytes(data[: len(data) // 2])
        elif what == "empty picture":
            record.with_suffix(".png").write_bytes(b"")
        elif what == "garbage picture":
            record.with_suffix(".png").write_bytes(os.urandom(300))
        elif what == "garbage picture data":
            record.write_bytes(b"\xff\xfe garbage {")
        elif what == "NaN in picture data":
            record.write_text(record.read_text().replace('"objective_value": ', '"objective_value": NaN, "x": '))
        elif what == "picture data of another unit":
            record.write_text(record.read_text().replace('"unit": 3', '"unit": 4'))
        elif what == "garbage examples":
            (layer / "examples.json").write_text("[[{\"image\": 1e999}]]")
        elif what == "truncated examples strip":
            strip = layer / "0.webp"
            strip.write_bytes(strip.read_bytes()[:40])
        world.record, world.layer = record, layer
        return ["build", config]
    return arrange


def escaped_once(world: World, title: str) -> None:
    """The title in every page's <title>, header and tooltip, escaped exactly once."""
    for page in [world.folder / "site" / "index.html", *(world.folder / "site" / "units").rglob("*.html")][:3]:
        text = page.read_text(encoding="utf-8")
        assert f" - {title}</title>" in text or f"<title>{title}</title>" in text, page
        assert f'title="{title}"' in text and "&amp;lt;" not in text and "<script>x()" not in text, page


def healed(world: World) -> None:
    assert check_picture(world.record) is None
    assert check_examples(world.layer) is None


ROWS = [
    # the config file itself
    Row("config that is 0", lambda w: ["build", w.config("0\n")], "holds 0, not a mapping of settings"),
    Row("config that is false", lambda w: ["build", w.config("false\n")], "holds False, not a mapping"),
    Row("empty config", lambda w: ["build", w.config("# nothing\n")], "holds nothing, not a mapping"),
    Row("key given twice", lambda w: ["build", w.config("title: a\ntitle: b\n")], r"atlas.yml:2: the key `title` is given twice"),
    Row("YAML bomb as title", lambda w: ["build", w.config(BOMB)], "expands to more than 100,000 values"),
    Row("YAML bomb under an unknown key", lambda w: ["build", w.config(BOMB.replace("title", "titel"))],
        "expands to more than 100,000 values"),
    Row("alias inside its own anchor", lambda w: ["build", w.config("title: &a [1, *a]\n")], "contains itself"),
    Row("nesting 5,000 deep", lambda w: ["build", w.config("title: " + "[" * 5000 + "]" * 5000 + "\n")],
        "nested too deeply"),
    Row("config of 2 MB", lambda w: ["build", w.config("title: x\n" + "#" * 2_000_000 + "\n")], "larger than 1,024 KB"),
    Row("title of 1 MB", lambda w: ["build", w.config(title="t" * 1_000_000)],
        r"`title` is 1,000,000 characters long; at most 200"),
    Row("huge number in a message", lambda w: ["build", w.config("ranking: {top_k: " + "9" * 4000 + "}\n")],
        r"`ranking.top_k` must be a whole number from 1 to 1,000, not a 4000-digit number"),
    # numbers that would allocate
    Row("a billion input channels", lambda w: ["build", w.config(input={"channels": 10**9})],
        r"`input.channels` must be a whole number from 1 to 1,024, not 1000000000"),
    Row("pictures of a million pixels a side", lambda w: ["build", w.config(featurevis={"size": 10**6})],
        r"`featurevis.size` must be a whole number from 0 to 4,096"),
    Row("10**12 steps", lambda w: ["build", w.config(featurevis={"steps": 10**12})],
        r"`featurevis.steps` must be a whole number from 1 to 100,000"),
    Row("input of 100,000 pixels", lambda w: ["build", w.config(input={"size": [8, 100_000]})],
        r"`input.size` must be a whole number of pixels from 1 to 4,096"),
    Row("a million examples per unit", lambda w: ["build", w.config(dataset={"top": 10**6})],
        r"`dataset.top` must be a whole number from 1 to 64"),
    Row("rotation of 1e300 degrees", lambda w: ["build", w.config(featurevis={"transforms": {"rotate": 1e300}})],
        r"`featurevis.transforms.rotate` must be a finite number from 0 to 180"),
    # the model
    Row("model.source sys:exit", lambda w: ["build", w.config(model={"source": "sys:exit"})], "Python's standard library"),
    Row("model.source os:abort", lambda w: ["build", w.config(model={"source": "os:abort"})], "Python's standard library"),
    Row("factory that calls sys.exit(0)", lambda w: ["build", w.config(model={"source": "tests.toy_models:exits"})],
        r"exits\(\) called sys.exit\(0\) instead of returning the model"),
    Row("factory that turns off gradients and changes the default dtype",
        lambda w: ["build", w.config(model={"source": "tests.toy_models:changes_global_state"})], "Built ", status=0,
        then=lambda w: (torch.is_grad_enabled() and torch.get_default_dtype() == torch.float32) or pytest.fail()),
    Row("worker killed by a signal",
        lambda w: ["build", w.config(model={"source": "tests.toy_models:dies_in_workers"},
                                     featurevis={"jobs": 2, "batch": 2})],
        r"A feature-visualisation worker process died \(killed by SIGABRT\)"),
    Row("model.url of a local file", url_of_a_file, r"`model.url` must be an http:// or https:// address"),
    Row("model.url with credentials and a bad host", url_with_credentials, r"downloading it from http://…@bad host/w.pt failed",
        then=lambda w: not any(w.folder.glob("*.pt*")) or pytest.fail("a download was left behind")),
    Row("download that is not a checkpoint", download_that_is_not_a_checkpoint, "could not be read as a PyTorch state dict",
        then=lambda w: not list(w.folder.glob("*.pt*")) or pytest.fail("the download was kept")),
    Row("checkpoint that does not match model.sha256", pinned_checkpoint, "does not have the SHA-256 that `model.sha256` pins"),
    Row("pickled objects in a checkpoint", pickled_checkpoint, r"pickles Python objects(?!.*weights_only)"),
    # labels files
    Row("class names from an absolute path", labels_naming(lambda w: str(w.secret())), "lies outside the labels file's folder"),
    Row("class names through ..", labels_naming(lambda w: f"../{w.folder.name}-private/secret.txt"),
        "lies outside the labels file's folder"),
    Row("class names through a link", labels_naming(linked_classes), "lies outside the labels file's folder"),
    Row("title with markup", lambda w: ["build", w.config(title="A <b>&</b> </title><script>x()</script>",
                                                       featurevis={"enabled": False})], "Built ", status=0,
        then=lambda w: escaped_once(w, "A &lt;b&gt;&amp;&lt;/b&gt; &lt;/title&gt;&lt;script&gt;x()&lt;/script&gt;")),
    # folders
    Row("unwritable cache", unwritable_cache, "The cache folder .* cannot be written"),
    Row("output under ~", home_output, "Built ", status=0,
        then=lambda w: (w.folder / "home" / "atlas" / "index.html").is_file() or pytest.fail()),
    Row("one-pixel-high input with a dataset", thin_input_with_images, "Built ", status=0),
    Row("CNAME that is a link", linked_cname, "not kept from the previous site", status=0, then=cname_left_behind),
    # publishing
    Row("deploy a link to a file outside", published_link("file"), r"leak.txt \(a link to .*secret.txt\)",
        then=nothing_published),
    Row("deploy a link to a folder outside", published_link("folder"), r"private \(a link to", then=nothing_published),
    Row("deploy a FIFO", published_link("fifo"), r"pipe \(a FIFO\)", then=nothing_published),
    Row("deploy --build to a missing remote", deploy_to_a_missing_remote, "no remote named 'nowhere'"),
    # random weights
    Row("random weights to /dev/full", random_weights("/dev/full"), "is not a regular file"),
    Row("random weights into a read-only place", lambda w: random_weights()(w) + [str(w.folder / "a-file" / "w.pth")],
        "could not write"),
    Row("random weights over a checkpoint", random_weights("w.pth", existing=True), "exists; it is left alone",
        then=lambda w: (w.folder / "w.pth").read_bytes() == b"my trained weights" or pytest.fail()),
    Row("random weights with seed 10**23", random_weights("x.pth", "--seed", str(10**23)), "--seed must be a whole number from 0 to"),
    # a damaged cache heals
    *[Row(f"cache with a {what}", damaged(what), "damaged and (is|are) made again", status=0, then=healed)
      for what in ("truncated picture", "empty picture", "garbage picture", "garbage picture data",
                   "NaN in picture data", "picture data of another unit", "garbage examples",
                   "truncated examples strip")],
]

@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Callable[[], Path]:
    """A finished build of a small CNN with pictures and dataset examples, made on first use."""
    folder = tmp_path_factory.mktemp("template")
    made: list[Path] = []

    def build() -> Path:
        if not made:
            images = folder / "images"
            images.mkdir()
            rng = np.random.default_rng(0)
            for i in range(64):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(images / f"{i}.png")
            world = World(folder, pytest.MonkeyPatch(), lambda: folder)
            config = world.config(dataset={"source": str(images), "images": 64, "top": 3},
                                  featurevis={"negative": False})
            assert main(["build", config, "--quiet"]) == 0
            made.append(folder)
        return made[0]
    return build


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_hostile_input(row, tmp_path, monkeypatch, capsys, caplog, template):
    caplog.set_level(logging.INFO, logger="weight_atlas")
    monkeypatch.chdir(tmp_path)
    world = World(tmp_path, monkeypatch, template, capsys=capsys, caplog=caplog)
    with world.cleanup:
        run(row, world)


def run(row: Row, world: World) -> None:
    tmp_path = world.folder
    args = row.arrange(world)
    earlier = {p: p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file() and not p.is_symlink()}
    start = time.monotonic()
    status = main(args)
    seconds = time.monotonic() - start
    printed = world.capsys.readouterr()
    output = printed.out + printed.err + world.caplog.text
    assert status == row.status, output
    assert "Traceback" not in output and re.search(row.says, output, re.S), output
    assert SECRET.strip() not in output and "hunter2" not in output
    for page in (tmp_path / "site").rglob("*"):
        if page.is_file() and not page.is_symlink():
            assert SECRET.strip() not in page.read_text(errors="replace"), page
    if row.status:
        assert printed.err.startswith("error: "), printed.err
        assert seconds < 20, f"refused only after {seconds:.0f} s"
        after = {p: p.read_bytes() for p in (tmp_path / "site").rglob("*") if p.is_file() and not p.is_symlink()}
        assert after == earlier  # the earlier site, if any, as it was
    if row.then is not None:
        row.then(world)


def test_cache_verify_finds_and_deletes_damaged_entries(tmp_path, monkeypatch, capsys, template):
    monkeypatch.chdir(tmp_path)
    world = World(tmp_path, monkeypatch, template)
    config = world.built()
    assert main(["cache", "verify", config]) == 0
    assert "0 damaged" in capsys.readouterr().out
    picture = sorted((tmp_path / "cache" / "featurevis").rglob("*.png"))[0]
    picture.write_bytes(picture.read_bytes()[:30])
    examples = sorted((tmp_path / "cache" / "examples").rglob("examples.json"))[0]
    examples.write_text(json.dumps([[{"image": 0}]]))
    effect = sorted((tmp_path / "cache" / "effects").rglob("*.safetensors"))[0]
    effect.write_bytes(effect.read_bytes()[:40])
    assert main(["cache", "verify", config, "--dry-run"]) == 1
    listed = capsys.readouterr().out
    assert all(str(p) in listed for p in (picture, examples.parent, effect)) and "3 damaged (listed)" in listed
    assert picture.exists() and examples.exists() and effect.exists()
    assert main(["cache", "verify", config]) == 1
    assert "3 damaged (deleted" in capsys.readouterr().out
    assert not picture.exists() and not examples.parent.exists() and not effect.exists()
    assert main(["build", config, "--quiet"]) == 0  # made again
    assert check_picture(picture.with_suffix(".json")) is None
    assert not isinstance(read_effect(effect), str)
