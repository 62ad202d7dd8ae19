"""Shared fixtures: atlas configs for toy models, and one build of the default atlas."""

import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from generator import build_atlas, load_config

ROOT = Path(__file__).resolve().parent.parent


QUICK_PICTURES = {"steps": 4, "batch": 64, "jobs": 1}  # feature visualisations that only test the plumbing


def write_config(directory: Path, **settings) -> Path:
    """An atlas config file with ``settings`` (nested dicts), returned as its path. Unless
    ``settings`` say otherwise, feature visualisations are quick and cached in ``directory``."""
    settings.setdefault("featurevis", QUICK_PICTURES)
    settings.setdefault("cache", str(directory / "cache"))
    path = directory / "atlas.yml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path):
    return lambda **settings: write_config(tmp_path, **settings)


@pytest.fixture(scope="session")
def default_site(tmp_path_factory) -> Path:
    """The default atlas, built once from site_config/default.yml into a temporary folder."""
    folder = tmp_path_factory.mktemp("default")
    config = load_config(ROOT / "site_config" / "default.yml")
    # The site's structure, with short optimisations and fewer dataset images; the pictures'
    # quality is tested at full settings in test_featurevis.py.
    config = dataclasses.replace(config, cache=str(folder / "cache"),
                                 featurevis=dataclasses.replace(config.featurevis, steps=8),
                                 dataset=dataclasses.replace(config.dataset, images=512))
    build_atlas(config, folder / "site")
    return folder / "site"


def killed_part_way(config: Path, cache: Path, pictures: int) -> int:
    """Starts a build of ``config`` and kills it (SIGKILL) once ``cache`` holds ``pictures``
    finished pictures; returns how many it holds then."""
    build = subprocess.Popen([sys.executable, "-m", "generator", "build", str(config)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = lambda: len(list(cache.rglob("*.json")))  # noqa: E731
    deadline = time.monotonic() + 300
    while done() < pictures and build.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    build.send_signal(signal.SIGKILL)
    build.wait()
    return done()

