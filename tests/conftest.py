"""Shared fixtures: atlas configs for toy models, and one build of the default atlas."""

from pathlib import Path

import pytest
import yaml

from generator import build_atlas, load_config

ROOT = Path(__file__).resolve().parent.parent


def write_config(directory: Path, **settings) -> Path:
    """An atlas config file with ``settings`` (nested dicts), returned as its path."""
    path = directory / "atlas.yml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path):
    return lambda **settings: write_config(tmp_path, **settings)


@pytest.fixture(scope="session")
def default_site(tmp_path_factory) -> Path:
    """The default atlas, built once from site_config/default.yml into a temporary folder."""
    output = tmp_path_factory.mktemp("default") / "site"
    build_atlas(load_config(ROOT / "site_config" / "default.yml"), output)
    return output
