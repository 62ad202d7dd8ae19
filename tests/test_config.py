import pytest

from generator import AtlasError, load_config
from tests.conftest import ROOT


def test_default_config_reads():
    config = load_config(ROOT / "site_config" / "default.yml")
    assert config.model.source == "default"
    assert config.input.size == (64, 64) and config.input.shape == (3, 64, 64)
    assert config.input.mean == (0.5, 0.5, 0.5)
    assert config.ranking.top_k == 24


def test_typo_names_the_key_and_the_fix(config_file):
    with pytest.raises(AtlasError, match=r"unknown setting `ranking.topk`.*Did you mean `top_k`"):
        load_config(config_file(ranking={"topk": 10}))


def test_unknown_top_level_key(config_file):
    with pytest.raises(AtlasError, match=r"unknown setting `modle`.*`model`"):
        load_config(config_file(modle={"source": "default"}))


@pytest.mark.parametrize("settings, message", [
    ({"ranking": {"top_k": 0}}, "whole number from 1 to 1,000"),
    ({"ranking": {"top_k": "many"}}, "whole number from 1 to 1,000"),
    ({"input": {"mean": "grey"}}, "list of finite numbers"),
    ({"input": {"mean": [0.5]}}, "one value per input channel"),
    ({"input": {"std": [0.0, 1.0, 1.0]}}, "must be positive"),
    ({"model": "default"}, "must be a mapping"),
    ({"featurevis": {"learning_rate": float("inf")}}, "finite number above 0 and at most 100"),
    ({"featurevis": {"learning_rate": float("nan")}}, "finite number above 0 and at most 100"),
    ({"input": {"mean": [float("nan"), 0.5, 0.5]}}, "list of finite numbers"),
    ({"input": {"std": [0.25, float("inf"), 0.25]}}, "list of finite numbers"),
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
    ({"ranking": {"hops": 9}}, "from 1 to 3"),
    ({"layers": "conv1"}, "list of layer names"),
])
def test_empty_and_out_of_range_values(config_file, settings, message):
    with pytest.raises(AtlasError, match=message):
        load_config(config_file(**settings))


@pytest.mark.parametrize("size, shape", [(64, (3, 64, 64)), ([40, 56], (3, 40, 56)), ([224, 224], (3, 224, 224))])
def test_input_size_is_a_square_or_height_and_width(config_file, size, shape):
    config = load_config(config_file(input={"size": size}))
    assert config.input.shape == shape and config.input.size == shape[1:]
    assert (config.input.height, config.input.width) == shape[1:]


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "64", "40x56", [40], [40, 56, 3], [40, 0], [40.0, 56],
                                  [True, 56], None, {"height": 40}])
def test_bad_input_sizes_name_the_key_and_an_example(config_file, size):
    with pytest.raises(AtlasError, match=r"`input.size` must be a whole number of pixels .*224.*\[height, width\]"):
        load_config(config_file(input={"size": size}))


def test_grayscale_input_needs_no_mean_or_std(config_file):
    config = load_config(config_file(input={"channels": 1, "size": [40, 56]}))
    assert config.input.shape == (1, 40, 56) and config.input.mean == (0.5,) and config.input.std == (0.25,)
    with pytest.raises(AtlasError, match="one value per input channel"):
        load_config(config_file(input={"channels": 1, "mean": [0.5, 0.5, 0.5]}))


@pytest.mark.parametrize("input_size, featurevis_size, picture", [
    (64, 0, (64, 64)), (64, 96, (96, 96)), ([40, 56], 0, (40, 56)), ([40, 56], 112, (80, 112)),
    ([40, 56], 28, (20, 28)), ([56, 40], 28, (28, 20)), ([30, 300], 20, (2, 20)), ([1, 300], 30, (1, 30)),
])
def test_featurevis_size_is_the_longer_side_keeping_the_input_aspect(config_file, input_size, featurevis_size,
                                                                     picture):
    config = load_config(config_file(input={"size": input_size}, featurevis={"size": featurevis_size}))
    assert config.picture_shape == picture


def test_numbers_yaml_reads_as_text_are_numbers(tmp_path):
    """YAML 1.1 reads ``5e-2`` (no dot) as text; it is the number people mean."""
    path = tmp_path / "atlas.yml"
    path.write_text("featurevis:\n  learning_rate: 5e-2\ninput:\n  mean: [5e-1, 0.5, 0.5]\n", encoding="utf-8")
    config = load_config(path)
    assert config.featurevis.learning_rate == 0.05 and config.input.mean == (0.5, 0.5, 0.5)
