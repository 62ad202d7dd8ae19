import pytest

from generator import AtlasError, load_config
from tests.conftest import ROOT


def test_default_config_reads():
    config = load_config(ROOT / "site_config" / "default.yml")
    assert config.model.source == "default"
    assert config.input.size == 64 and config.input.mean == (0.5, 0.5, 0.5)
    assert config.ranking.top_k == 24


def test_typo_names_the_key_and_the_fix(config_file):
    with pytest.raises(AtlasError, match=r"unknown setting `ranking.topk`.*Did you mean `top_k`"):
        load_config(config_file(ranking={"topk": 10}))


def test_unknown_top_level_key(config_file):
    with pytest.raises(AtlasError, match=r"unknown setting `modle`.*`model`"):
        load_config(config_file(modle={"source": "default"}))


@pytest.mark.parametrize("settings, message", [
    ({"ranking": {"top_k": 0}}, "positive whole number"),
    ({"ranking": {"top_k": "many"}}, "positive whole number"),
    ({"input": {"mean": "grey"}}, "list of numbers"),
    ({"input": {"mean": [0.5]}}, "one value per input channel"),
    ({"input": {"std": [0.0, 1.0, 1.0]}}, "must be positive"),
    ({"model": "default"}, "must be a mapping"),
    ({"title": 3}, "must be text"),
])
def test_bad_values_are_reported(config_file, settings, message):
    with pytest.raises(AtlasError, match=message):
        load_config(config_file(**settings))


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(AtlasError, match="does not exist"):
        load_config(tmp_path / "nope.yml")
    bad = tmp_path / "bad.yml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(AtlasError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("settings, message", [
    ({"title": None}, "must be text"),
    ({"model": {"source": None}}, "must be text"),
    ({"site": {"output": ""}}, "is empty"),
    ({"ranking": {"hops": 9}}, "at most 3"),
    ({"layers": "conv1"}, "list of layer names"),
])
def test_empty_and_out_of_range_values(config_file, settings, message):
    with pytest.raises(AtlasError, match=message):
        load_config(config_file(**settings))
