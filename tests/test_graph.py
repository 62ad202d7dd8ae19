import pytest
import torch
from torch import nn

from generator import AtlasError, trace_layers
from generator.default_model import NarrowInceptionV1
from generator.expanded import layer_weights
from tests.toy_models import EvilNames, ResidualNet, SmallCNN, DataDependent


def test_inception_layers_and_branches_are_found_by_tracing():
    _, graph = trace_layers(NarrowInceptionV1(), (3, 64, 64))
    assert [layer.name for layer in graph.layers] == ["conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "logits"]
    mixed3a = graph.layer("mixed3a")
    assert mixed3a.kind == "mixed" and mixed3a.shape == (128, 8, 8)
    assert [(b.name, b.start, b.stop) for b in mixed3a.branches] == [
        ("conv_1x1", 0, 32), ("conv_3x3", 32, 96), ("conv_5x5", 96, 112), ("conv_pool_reduce", 112, 128)]
    # bottlenecks are inside the block, not layers of their own
    assert "mixed3a.conv_3x3_bottleneck" in mixed3a.modules
    assert mixed3a.branch_of(40).name == "conv_3x3" and mixed3a.branch_of(128) is None


def test_direct_connections_skip_bottlenecks():
    _, graph = trace_layers(NarrowInceptionV1(), (3, 64, 64))
    direct = {(c.src, c.dst, c.start, c.stop, c.module) for c in graph.connections}
    assert direct == {
        (None, "conv2d0", 0, 48, "conv2d0"),
        ("conv2d0", "conv2d1", 0, 48, "conv2d1"),
        ("conv2d1", "conv2d2", 0, 96, "conv2d2"),
        ("conv2d2", "mixed3a", 0, 32, "mixed3a.conv_1x1"),
        ("conv2d2", "mixed3a", 112, 128, "mixed3a.conv_pool_reduce"),
        ("mixed3a", "mixed3b", 0, 48, "mixed3b.conv_1x1"),
        ("mixed3a", "mixed3b", 176, 208, "mixed3b.conv_pool_reduce"),
        ("mixed3b", "logits", 0, 32, "logits"),
    }
    pool_branch = next(c for c in graph.connections if c.module == "mixed3a.conv_pool_reduce")
    assert pool_branch.before == ("maxpool1", "mixed3a.pool") and pool_branch.after == ("relu",)


def test_residual_blocks_are_sum_layers_with_their_batch_norm():
    _, graph = trace_layers(ResidualNet(), (3, 16, 16))
    assert [(layer.name, layer.kind) for layer in graph.layers] == [
        ("stem", "conv"), ("block", "sum"), ("block2", "sum"), ("head", "linear")]
    assert graph.layer("block").shape == (16, 8, 8)
    assert "block.shortcut.0" in graph.layer("block").modules  # the strided shortcut is inside the block
    stem = next(c for c in graph.connections if c.dst == "stem")
    assert stem.after == ("stem_bn", "relu")
    head = next(c for c in graph.connections if c.dst == "head")
    assert head.src == "block2" and head.before == ("mean",)  # the relu after the sum belongs to the block
    assert not any(c.dst.startswith("block") for c in graph.connections)  # a sum has no single stored kernel
    assert graph.adjacent == ((None, "stem"), ("stem", "block"), ("block", "block2"), ("block2", "head"))


def test_plain_cnn_and_names_that_are_markup():
    _, graph = trace_layers(SmallCNN(), (3, 16, 16))
    assert [layer.name for layer in graph.layers] == ["conv1", "conv2", "conv3", "fc"]
    _, graph = trace_layers(EvilNames(), (3, 8, 8))
    assert [layer.name for layer in graph.layers] == ["stem", "<script>alert(1)</script>", "../../evil"]


def test_unknown_layer_and_untraceable_model_are_reported():
    _, graph = trace_layers(SmallCNN(), (3, 16, 16))
    with pytest.raises(AtlasError, match=r"Unknown layer `conv9`.*conv1, conv2, conv3, fc"):
        graph.layer("conv9")
    with pytest.raises(AtlasError, match="could not be traced with torch.fx"):
        trace_layers(DataDependent(), (3, 16, 16))
    with pytest.raises(AtlasError, match="failed on an input of shape"):
        trace_layers(SmallCNN(), (1, 16, 16))


def test_torchvision_blocks_are_the_layers_a_researcher_expects():
    from tests import zoo

    _, graph = trace_layers(zoo.densenet().eval(), (3, 64, 64))
    names = [layer.name for layer in graph.layers]
    assert names[:4] == ["features.conv0", "features.denseblock1.denselayer1", "features.denseblock1.denselayer2",
                         "features.transition1.conv"]
    assert "features.denseblock1" not in names  # its concatenation repeats units already browsed
    assert graph.layer("features.denseblock1.denselayer2").channels == 8  # the new channels only
    transition = [s for s, d in graph.adjacent if d == "features.transition1.conv"]
    assert transition == ["features.conv0", "features.denseblock1.denselayer1", "features.denseblock1.denselayer2"]

    _, graph = trace_layers(zoo.mobilenet_v2().eval(), (3, 64, 64))
    blocks = [layer for layer in graph.layers if layer.name.startswith("features.") and layer.name.count(".") == 1]
    assert [layer.name for layer in blocks][:3] == ["features.1", "features.2", "features.3"]  # shortcut or not
    assert (graph.layer("features.2").kind, graph.layer("features.3").kind) == ("block", "sum")  # strided, residual

    _, graph = trace_layers(zoo.shufflenet_v2().eval(), (3, 64, 64))
    assert graph.layer("stage2.1").kind == "block" and graph.layer("stage2.1").channels == 48  # after the shuffle

    _, graph = trace_layers(zoo.googlenet().eval(), (3, 64, 64))
    inception = graph.layer("inception3a")
    assert inception.kind == "mixed" and [b.name for b in inception.branches] == [
        "branch1", "branch2", "branch3", "branch4"]


class GatedHead(nn.Module):
    """A squeeze-and-excitation gate written in the model's own forward (no block module), and a
    head that ends in a sigmoid over pooled features (multi-label scores, not a gate)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.squeeze, self.excite = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = x * torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean(dim=(2, 3), keepdim=True)))))
        x = torch.relu(self.conv2(x))
        return torch.sigmoid(self.head(x.mean(dim=(2, 3), keepdim=True)))


def test_the_convolutions_of_a_gate_are_part_of_it_and_a_sigmoid_head_is_a_layer():
    network, graph = trace_layers(GatedHead().eval(), (3, 8, 8))
    assert [layer.name for layer in graph.layers] == ["conv1", "conv2", "head"]
    composed = layer_weights(network, graph)
    assert not composed.skipped and {(w.src, w.dst) for w in composed.weights} >= {("conv1", "conv2"), ("conv2", "head")}
