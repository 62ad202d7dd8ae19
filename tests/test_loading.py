import pytest
import torch
from safetensors.torch import save_file

from generator import AtlasError, load_config
from generator.loading import load_model
from generator.page_weights import serve as served
from tests.toy_models import SmallCNN


def _config(config_file, source, checkpoint=None):
    return load_config(config_file(model={"source": source, "checkpoint": str(checkpoint) if checkpoint else None}))


def test_factory_with_safetensors_and_state_dict(config_file, tmp_path):
    reference = SmallCNN()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "w.pt")
    # the format before PyTorch 1.6, which cannot be mapped from the file: read into memory instead
    torch.save(reference.state_dict(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    for name in ("w.safetensors", "w.pt", "old.pt"):
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
    with pytest.raises(AtlasError, match="pickles Python objects .*never loads them"):
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


def test_inceptionv1_reads_the_conversion_format(config_file, tmp_path):
    from generator.inceptionv1 import write_random_checkpoint
    from generator.graph import trace_layers

    path = tmp_path / "inception5h.pth"
    write_random_checkpoint(str(path), seed=3)
    saved = torch.load(path, weights_only=True)
    assert "mixed3a_3x3_bottleneck_pre_relu_conv.weight" in saved and "softmax2_pre_activation_matmul.bias" in saved
    model = load_model(_config(config_file, "inceptionv1", path))
    assert torch.equal(model.mixed3a._modules["3x3_bottleneck"].weight, saved["mixed3a_3x3_bottleneck_pre_relu_conv.weight"])
    _, graph = trace_layers(model, (3, 224, 224))
    widths = {layer.name: layer.channels for layer in graph.layers}
    assert widths == {"conv2d0": 64, "conv2d1": 64, "conv2d2": 192, "mixed3a": 256, "mixed3b": 480, "mixed4a": 508,
                      "mixed4b": 512, "mixed4c": 512, "mixed4d": 528, "mixed4e": 832, "mixed5a": 832,
                      "mixed5b": 1024, "softmax2_pre_activation": 1008}
    assert [(b.name, b.start, b.stop) for b in graph.layer("mixed3a").branches] == [
        ("1x1", 0, 64), ("3x3", 64, 192), ("5x5", 192, 224), ("pool_reduce", 224, 256)]


def test_missing_checkpoint_is_downloaded_from_its_url(config_file, tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    reference = SmallCNN()
    save_file(reference.state_dict(), str(published / "net.safetensors"))
    target = tmp_path / "downloads" / "net.safetensors"
    with served(published) as base:
        model = load_model(load_config(config_file(model={
            "source": "tests.toy_models:small_cnn", "checkpoint": str(target), "url": f"{base}net.safetensors"})))
    assert torch.equal(model.conv2.weight, reference.conv2.weight)
    assert target.read_bytes() == (published / "net.safetensors").read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["net.safetensors"]  # no partial file left


def test_torchvision_source_without_torchvision_is_explained(config_file, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name == "torchvision":
            raise ImportError("No module named 'torchvision'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    with pytest.raises(AtlasError, match="torchvision is not installed. Install the release that matches"):
        load_model(_config(config_file, "torchvision:resnet18"))


def test_torchvision_models_import_where_its_compiled_operators_do_not_load(monkeypatch):
    """torchvision's package fails to import beside a torch it was not built for; its models do not."""
    import builtins
    import sys

    from generator.torchvision_models import import_torchvision

    real_import, failed = builtins.__import__, []

    def operators_missing(name, *args, **kwargs):
        if name == "torchvision" and not failed:
            failed.append(name)
            raise RuntimeError("operator torchvision::nms does not exist")
        return real_import(name, *args, **kwargs)

    for name in [n for n in sys.modules if n.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", operators_missing)
    torchvision = import_torchvision()
    assert failed and type(torchvision.models.resnet18()).__name__ == "ResNet"


def test_a_failing_factory_and_a_bad_url_are_reported(config_file, tmp_path):
    with pytest.raises(AtlasError, match=r"calling data_dependent_broken\(\) failed \(RuntimeError: weights server unavailable\)"):
        load_model(_config(config_file, "tests.toy_models:data_dependent_broken"))
    target = tmp_path / "downloads" / "x.pth"
    config = load_config(config_file(model={"source": "tests.toy_models:small_cnn", "checkpoint": str(target),
                                            "url": "http://127.0.0.1:9/inception5h.pth"}))
    with pytest.raises(AtlasError, match="downloading it from http://127.0.0.1:9/inception5h.pth failed.*put it at"):
        load_model(config)
    assert list(target.parent.iterdir()) == []  # no partial download left behind


def test_non_finite_weights_are_found_in_any_block(config_file, tmp_path, monkeypatch):
    """Weights are checked a block at a time: a NaN or infinity in the last block of a tensor
    is found as one in the first."""
    import generator.loading as loading

    monkeypatch.setattr(loading, "FINITE_BLOCK", 7)
    for bad in (float("nan"), float("inf")):
        state = SmallCNN().state_dict()
        state["conv2.weight"].view(-1)[-1] = bad
        save_file(state, str(tmp_path / "w.safetensors"))
        with pytest.raises(AtlasError, match="NaN or infinite values in `conv2.weight`"):
            load_model(_config(config_file, "tests.toy_models:small_cnn", tmp_path / "w.safetensors"))
