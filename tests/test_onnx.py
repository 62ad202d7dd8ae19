"""Models that come as ONNX files (generator/onnx_models.py) and graphs already traced.

The ONNX files are exported here from models of the tests, with torch's exporter, and come
back through onnx2torch: the atlas of the file must show the weights of the model it was
exported from, with no pair skipped that the model itself composes."""

import logging
import re
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.fx
from torch import nn

from generator import AtlasError, trace_layers
from generator.build import build_atlas
from generator.config import load_config
from generator.expanded import layer_weights
from generator.loading import load_model
from tests.conftest import write_config
from tests.test_expanded import check_against_gradient
from tests.test_zoo_weights import module_of, sampled_pairs
from tests.toy_models import exported



def _export(model: nn.Module, path, size: int) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own future
        torch.onnx.export(model, torch.zeros(1, 3, size, size), str(path), dynamo=False, opset_version=17)


def test_an_onnx_file_builds_with_the_weights_of_the_model_it_came_from(tmp_path, caplog):
    """Constant arithmetic, a hard swish written out (Add, Clip, Mul, Div), a hard-sigmoid gate,
    ReduceMean, Squeeze and Unsqueeze, GlobalAveragePool, Flatten and Gemm: every pair composes,
    and its expanded weights are those of the PyTorch model."""
    caplog.set_level(logging.INFO, logger="weight_atlas")
    _export(exported(), tmp_path / "toy.onnx", 16)
    config = load_config(write_config(tmp_path, model={"source": f"onnx:{tmp_path / 'toy.onnx'}"},
                                      input={"size": 16}, featurevis={"enabled": False},
                                      site={"output": str(tmp_path / "site")}))
    report = build_atlas(config)
    assert report.layers == 4 and "skipped" not in caplog.text
    assert re.search(r"matches onnxruntime to (\d\.\de-0[5-9]|\d\.\de-1\d)", caplog.text), caplog.text
    ours = layer_weights(*trace_layers(load_model(config), (3, 16, 16))).weights
    theirs = layer_weights(*trace_layers(exported(), (3, 16, 16))).weights
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.kernel, b.kernel, atol=1e-6 * np.abs(b.kernel).max())
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "toy.onnx" in index and str(tmp_path) not in index  # the file by its name only


def test_mobilenet_v3_from_onnx_composes_every_pair_as_the_original_does(tmp_path):
    """torchvision's MobileNetV3 (untrained) through ONNX: its hard swishes, hard-sigmoid gates,
    residual sums and global pools compose, as in the PyTorch model. The ONNX graph has no block
    modules, so its layers are the convolutions themselves; the convolutions that compute a
    squeeze-and-excitation gate are part of the gate, not layers. Sampled pairs, one through a
    gate among them, match the gradient reference on the converted model."""
    from generator.torchvision_models import import_torchvision

    models = import_torchvision().models
    torch.manual_seed(0)
    model = models.mobilenet_v3_small().eval()  # untrained: equal biases, which the exporter stores once
    size = 128  # every sampled kernel's window lies inside its map
    _export(model, tmp_path / "mnv3.onnx", size)
    config = load_config(write_config(tmp_path, model={"source": f"onnx:{tmp_path / 'mnv3.onnx'}"},
                                      input={"size": size}, featurevis={"enabled": False}))
    converted = load_model(config)
    network, graph = trace_layers(converted, (3, size, size))
    composed = layer_weights(network, graph)
    assert not composed.skipped and len(composed.weights) == len(graph.adjacent) >= 20
    assert not any(name.endswith(("fc1/Conv", "fc2/Conv")) for name in (layer.name for layer in graph.layers))
    assert not layer_weights(*trace_layers(model, (3, size, size))).skipped  # nor in the original
    # its expanded weights are the gradient of the linearised converted model, gates frozen
    pairs = sampled_pairs(graph, composed)
    assert any(w.frozen for w in pairs)  # a squeeze-and-excitation gate (onnx2torch's hard sigmoid)
    for w in pairs:
        held = {layer.name: module_of(network, graph, layer.name) for layer in graph.layers
                if layer.name not in (w.src, w.dst)}
        check_against_gradient(converted, w.src, w.dst, (3, size, size), module_of(network, graph, w.src),
                               module_of(network, graph, w.dst), max(1, len(w.kernel) // 6), held)


def test_a_missing_or_damaged_file_and_a_missing_extra_are_reported(tmp_path, monkeypatch):
    config = load_config(write_config(tmp_path, model={"source": f"onnx:{tmp_path / 'none.onnx'}"}, input={"size": 16}))
    with pytest.raises(AtlasError, match="there is no such file"):
        load_model(config)
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07not a model")
    config = load_config(write_config(tmp_path, model={"source": f"onnx:{tmp_path / 'bad.onnx'}"}, input={"size": 16}))
    with pytest.raises(AtlasError, match="not a readable ONNX model|cannot convert|failed to convert"):
        load_model(config)
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # as if the extra were not installed
    with pytest.raises(AtlasError, match=r"needs the ONNX extra: pip install 'weight-atlas\[onnx\]'"):
        load_model(config)


class Branching(nn.Module):
    """A module whose forward branches on a tensor value: torch.fx cannot trace into it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.sum() > -1e9 else x


class Leaves(torch.fx.Tracer):
    def is_leaf_module(self, m, name):
        return isinstance(m, Branching) or super().is_leaf_module(m, name)


class Outer(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.inner, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), Branching(), nn.Conv2d(4, 5, 3, padding=1)

    def forward(self, x):
        return self.conv2(torch.relu(self.inner(torch.relu(self.conv1(x)))))


def test_a_graph_module_keeps_its_graph_and_the_modules_it_cannot_look_into():
    """A GraphModule traced with a leaf the atlas cannot trace into: it builds, the leaf stays one
    operation (the pair through it is skipped, naming it), the rest composes."""
    model = Outer().eval()
    graph_module = torch.fx.GraphModule(model, Leaves().trace(model))
    with pytest.raises(AtlasError, match="could not be traced"):
        trace_layers(model, (3, 8, 8))  # the plain model: the branch stops tracing
    network, graph = trace_layers(graph_module, (3, 8, 8))
    assert [layer.name for layer in graph.layers] == ["conv1", "conv2"]
    composed = layer_weights(network, graph)
    [skipped] = composed.skipped
    assert skipped.source == "conv1" and skipped.target == "conv2" and "inner" in skipped.reason


@pytest.mark.parametrize("family", ["RegNet Y", "ShuffleNet v2", "ConvNeXt"])
def test_zoo_families_from_onnx_compose_every_pair(tmp_path, family):
    """RegNet Y (squeeze-and-excitation gates), ShuffleNet v2 (channel shuffle as Reshape and
    Transpose, channel split as Slice) and ConvNeXt (GELU as erf, linear layers as MatMul over
    channels-last maps, layer norm) through ONNX: no pair is skipped, a batch runs, and where
    the layers are the model's own, the expanded weights are the PyTorch model's."""
    from tests import zoo

    name, size = zoo.FAMILIES[family]
    model = getattr(zoo, name)().eval()
    _export(model, tmp_path / "model.onnx", size)
    config = load_config(write_config(tmp_path, model={"source": f"onnx:{tmp_path / 'model.onnx'}"},
                                      input={"size": size}, featurevis={"enabled": False}))
    converted = load_model(config)
    ours = layer_weights(*trace_layers(converted, (3, size, size)))
    theirs = layer_weights(*trace_layers(model, (3, size, size))).weights
    assert not ours.skipped, ours.skipped
    # a batch, as pictures are optimised, though the file was traced on one image (ShuffleNet's
    # channel shuffle reshapes to a constant shape that starts with that image's batch of 1)
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        together, apart = converted(images), torch.cat([converted(image[None]) for image in images])
    torch.testing.assert_close(together, apart, rtol=1e-4, atol=1e-5 * float(apart.abs().max()))
    if family != "ShuffleNet v2":  # its ONNX graph has no block modules: its layers are its convolutions
        assert [w.kernel.shape for w in ours.weights] == [w.kernel.shape for w in theirs]
        for a, b in zip(ours.weights, theirs):
            np.testing.assert_allclose(a.kernel, b.kernel, atol=1e-5 * np.abs(b.kernel).max())


def test_layers_are_named_by_the_module_path_the_exporter_scoped():
    import onnx

    from generator.onnx_models import readable_names

    graph = onnx.helper.make_graph([onnx.helper.make_node("Conv", ["x", "w"], ["y"], name=name) for name in (
        "/features/features.2/block/block.2/block.2.0/Conv", "/stem/Conv", "Conv_7")], "g", [], [])
    proto = onnx.helper.make_model(graph)
    readable_names(proto)
    assert [n.name for n in proto.graph.node] == ["features.2.block.2.0.Conv", "stem.Conv", "Conv_7"]
