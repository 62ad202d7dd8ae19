"""One small network of each torchvision classification family, with random weights.

Every factory builds torchvision's own class (importable as ``tests.zoo:NAME``), shrunk
through its constructor's arguments where they allow it, so that an atlas builds in
seconds: the build's time goes into unit pages, one per channel. Where a constructor fixes
widths the tests do not need (AlexNet's and VGG's 4096-wide classifiers, GoogLeNet's and
Inception v3's classifier inputs), the factory says what it replaced.

``FAMILIES`` maps each family to its factory and input size (px): the smallest that leaves
a map of at least 2x2 before the classifier's pooling, raised to 64 where it is smaller
(33 for most): at 64 every map is even-sized, as at 224, and smaller inputs build no faster.
"""

import functools
from functools import partial

import torch
from torch import nn

from generator.torchvision_models import ensure_importable, import_torchvision

models = import_torchvision().models  # torchvision.models, also beside a CPU-only torch
from torchvision.models.googlenet import BasicConv2d, Inception, InceptionAux  # noqa: E402 (after the line above)


def _seeded(factory):
    """``factory`` with its random weights drawn from seed 0."""
    @functools.wraps(factory)
    def seeded() -> nn.Module:
        torch.manual_seed(0)
        return factory()
    return seeded


def _narrow_classifier(model: nn.Module, width: int = 64) -> nn.Module:
    """``model.classifier`` with hidden layers ``width`` wide instead of the 4096 its constructor fixes."""
    layers = model.classifier
    linear = [i for i, m in enumerate(layers) if isinstance(m, nn.Linear)]
    for i in linear:
        layers[i] = nn.Linear(layers[i].in_features if i == linear[0] else width,
                              layers[i].out_features if i == linear[-1] else width)
    return model


def _eighth(block):
    """``block`` (an Inception conv or branch class) with every channel count but the image's divided by 8."""
    def narrow(c_in, c_out, **kwargs):
        return block(c_in if c_in == 3 else c_in // 8, c_out // 8, **kwargs)
    return narrow


@_seeded
def alexnet() -> nn.Module:
    """AlexNet, 10 classes; its hidden classifier layers, fixed at 4096, replaced by 64-wide ones."""
    return _narrow_classifier(models.AlexNet(num_classes=10))


@_seeded
def vgg11() -> nn.Module:
    """VGG-11 (configuration A, no batch-norm), 10 classes; hidden classifier layers 64 wide, as AlexNet's."""
    return _narrow_classifier(models.VGG(models.vgg.make_layers(models.vgg.cfgs["A"]), num_classes=10))


@_seeded
def resnet10() -> nn.Module:
    """ResNet with basic blocks, one block per stage (ResNet-18 has two), 10 classes."""
    return models.ResNet(models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)


@_seeded
def resnext() -> nn.Module:
    """ResNeXt 32x4d: bottlenecks of 32 groups, one block per stage (ResNeXt-50: 3, 4, 6, 3), 10 classes."""
    return models.ResNet(models.resnet.Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4, num_classes=10)


@_seeded
def wide_resnet() -> nn.Module:
    """Wide ResNet-50-2's bottlenecks (width_per_group 128), one block per stage, 10 classes."""
    return models.ResNet(models.resnet.Bottleneck, [1, 1, 1, 1], width_per_group=128, num_classes=10)


@_seeded
def densenet() -> nn.Module:
    """DenseNet: growth rate 8 (DenseNet-121: 32), two layers per dense block, 16 stem features, 10 classes."""
    return models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, num_classes=10)


@_seeded
def googlenet() -> nn.Module:
    """GoogLeNet (Inception v1) at 1/8 width through its ``blocks`` argument, no auxiliary classifiers,
    10 classes; its classifier, fixed at 1024 inputs, replaced by one reading the narrow 128."""
    conv = _eighth(BasicConv2d)
    model = models.GoogLeNet(num_classes=10, aux_logits=False, init_weights=True,
                             blocks=[conv, partial(Inception, conv_block=conv), InceptionAux])
    model.fc = nn.Linear(1024 // 8, 10)
    return model


@_seeded
def inception_v3() -> nn.Module:
    """Inception v3 at 1/8 width through its ``inception_blocks`` argument, no auxiliary classifier,
    10 classes; its classifier, fixed at 2048 inputs, replaced by one reading the narrow 256."""
    v3 = models.inception
    conv = _eighth(v3.BasicConv2d)
    blocks = [partial(block, conv_block=conv)
              for block in (v3.InceptionA, v3.InceptionB, v3.InceptionC, v3.InceptionD, v3.InceptionE)]
    model = models.Inception3(num_classes=10, aux_logits=False, init_weights=True,
                              inception_blocks=[conv, *blocks, v3.InceptionAux])
    model.fc = nn.Linear(2048 // 8, 10)
    return model


@_seeded
def mobilenet_v2() -> nn.Module:
    """MobileNet v2 at width 0.25, 10 classes (the last convolution keeps its 1280 channels)."""
    return models.MobileNetV2(num_classes=10, width_mult=0.25)


@_seeded
def mobilenet_v3() -> nn.Module:
    """MobileNet v3 small at width 0.25, 10 classes."""
    setting, last_channel = models.mobilenetv3._mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    return models.MobileNetV3(setting, last_channel, num_classes=10)


@_seeded
def efficientnet_b0() -> nn.Module:
    """EfficientNet-B0's seven stages at width 0.25 and depth 0.25 (one block each), 10 classes."""
    setting, last = models.efficientnet._efficientnet_conf("efficientnet_b0", width_mult=0.25, depth_mult=0.25)
    return models.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=last)


@_seeded
def efficientnet_v2() -> nn.Module:
    """EfficientNet v2-S's six stages (three fused-MBConv, three MBConv) at about 1/3 width, one block each
    (published: 2 to 15), last convolution 256 (1280), 10 classes."""
    fused, mb = models.efficientnet.FusedMBConvConfig, models.efficientnet.MBConvConfig
    setting = [fused(1, 3, 1, 8, 8, 1), fused(4, 3, 2, 8, 16, 1), fused(4, 3, 2, 16, 24, 1),
               mb(4, 3, 2, 24, 40, 1), mb(6, 3, 1, 40, 56, 1), mb(6, 3, 2, 56, 88, 1)]
    return models.EfficientNet(setting, dropout=0.2, num_classes=10, last_channel=256)


def _regnet(se_ratio: float | None) -> nn.Module:
    params = models.regnet.BlockParams.from_init_params(depth=5, w_0=8, w_a=10, w_m=2, group_width=8,
                                                        se_ratio=se_ratio)
    return models.RegNet(params, num_classes=10, stem_width=16)


@_seeded
def regnet_x() -> nn.Module:
    """RegNet X: four stages (depths 1, 1, 2, 1; widths 8 to 64; group width 8), stem 16, 10 classes."""
    return _regnet(None)


@_seeded
def regnet_y() -> nn.Module:
    """RegNet Y: RegNet X's small stages with squeeze-and-excitation (ratio 0.25), 10 classes."""
    return _regnet(0.25)


@_seeded
def shufflenet_v2() -> nn.Module:
    """ShuffleNet v2 x0.5's stage widths, two blocks per stage (published: 4, 8, 4), last convolution 256
    (1024), 10 classes."""
    return models.ShuffleNetV2([2, 2, 2], [24, 48, 96, 192, 256], num_classes=10)


@_seeded
def squeezenet() -> nn.Module:
    """SqueezeNet 1.1, 10 classes; its widths are fixed."""
    return models.SqueezeNet("1_1", num_classes=10)


@_seeded
def mnasnet() -> nn.Module:
    """MNASNet 0.5, 10 classes (the last convolution keeps its 1280 channels)."""
    return models.MNASNet(0.5, num_classes=10)


@_seeded
def convnext() -> nn.Module:
    """ConvNeXt-T's four stages at 1/6 width (16 to 128 channels), one block each (published: 3, 3, 9, 3),
    10 classes."""
    stage = models.convnext.CNBlockConfig
    return models.ConvNeXt([stage(16, 32, 1), stage(32, 64, 1), stage(64, 128, 1), stage(128, None, 1)],
                           num_classes=10)


def onet() -> nn.Module:
    """MTCNN's ONet with its trained weights, which facenet-pytorch ships inside the package."""
    ensure_importable()  # facenet_pytorch imports torchvision
    import facenet_pytorch

    return facenet_pytorch.ONet()


FAMILIES: dict[str, tuple[str, int]] = {
    "AlexNet": ("alexnet", 95),
    "VGG": ("vgg11", 64),
    "ResNet": ("resnet10", 64),
    "ResNeXt": ("resnext", 64),
    "Wide ResNet": ("wide_resnet", 64),
    "DenseNet": ("densenet", 64),
    "GoogLeNet": ("googlenet", 64),
    "Inception v3": ("inception_v3", 107),
    "MobileNet v2": ("mobilenet_v2", 64),
    "MobileNet v3": ("mobilenet_v3", 64),
    "EfficientNet": ("efficientnet_b0", 64),
    "EfficientNet v2": ("efficientnet_v2", 64),
    "RegNet X": ("regnet_x", 64),
    "RegNet Y": ("regnet_y", 64),
    "ShuffleNet v2": ("shufflenet_v2", 64),
    "SqueezeNet": ("squeezenet", 64),
    "MNASNet": ("mnasnet", 64),
    "ConvNeXt": ("convnext", 64),
}
