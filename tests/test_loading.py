import pytest
import torch
from safetensors.torch import save_file

from generator import AtlasError, load_config
from generator.loading import load_model
from tests.toy_models import SmallCNN


def _config(config_file, source, checkpoint=None):
    return load_config(config_file(model={"source": source, "checkpoint": str(checkpoint) if checkpoint else None}))


def test_factory_with_safetensors_and_state_dict(config_file, tmp_path):
    reference = SmallCNN()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        model = load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / name))
        assert not model.training
        assert torch.equal(model.conv2.weight, reference.conv2.weight)


def test_default_model_loads_committed_weights(config_file):
    model = load_model(_config(config_file, "default"))
    assert model.conv2d0.weight.shape[1:] == (3, 7, 7)
    assert model.conv2d0.weight.abs().sum() > 0


@pytest.mark.parametrize("source, message", [
    ("tests.toy_models", "not understood"),
    ("no_such_package.models:net", "cannot be imported"),
    ("tests.toy_models:nothing_here", "no callable"),
    ("tests.toy_models:not_a_module", "not an nn.Module"),
    ("tests.toy_models:perceptron", "no nn.Conv2d"),
])
def test_bad_sources(config_file, source, message):
    with pytest.raises(AtlasError, match=message):
        load_model(_config(config_file, source))


def test_missing_corrupt_and_unsafe_checkpoints(config_file, tmp_path):
    with pytest.raises(AtlasError, match="does not exist"):
        load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / "absent.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(AtlasError, match="could not be read as safetensors"):
        load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / "junk.safetensors"))
    (tmp_path / "junk.pt").write_bytes(b"garbage bytes")
    with pytest.raises(AtlasError, match="could not be read as a PyTorch state dict"):
        load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / "junk.pt"))
    torch.save(SmallCNN(), tmp_path / "whole_model.pt")  # a pickled object, not a state dict
    with pytest.raises(AtlasError, match="not loaded for safety"):
        load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / "whole_model.pt"))


def test_mismatched_checkpoint_names_the_keys(config_file, tmp_path):
    state = SmallCNN().state_dict()
    state.pop("conv1.bias")
    state["extra.weight"] = torch.zeros(1)
    state["conv2.weight"] = torch.zeros(12, 8, 5, 5)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(AtlasError) as error:
        load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / "w.safetensors"))
    text = str(error.value)
    assert "conv1.bias" in text and "extra.weight" in text
    assert "conv2.weight (checkpoint (12, 8, 5, 5), model (12, 8, 3, 3))" in text


def test_nan_weights_are_reported(config_file, tmp_path):
    state = SmallCNN().state_dict()
    state["conv2.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(AtlasError, match=r"NaN or infinite values in `conv2.weight`"):
        load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / "w.safetensors"))
