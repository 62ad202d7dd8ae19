"""Load the network an atlas config names, with its weights, in eval mode.

Sources:
- ``default``: the embedded narrow InceptionV1 and its committed weights;
- ``inceptionv1``: Lucid's InceptionV1, weights in the widely used conversion's format;
- ``torchvision:NAME``: a torchvision classification model (optional extra), with its
  published weights unless a checkpoint is given;
- ``package.module:factory``: any importable callable returning an ``nn.Module``.

Weights come from ``model.checkpoint``: safetensors, or a state dict read by
``torch.load(weights_only=True)``, never an arbitrary pickle. When the file is missing
and ``model.url`` is set, it is downloaded there first.
"""

from __future__ import annotations

import hashlib
import json
import importlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from . import default_model, inceptionv1
from .config import AtlasConfig
from .errors import AtlasError
from .torchvision_models import ensure_importable, import_torchvision


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors stored in a safetensors file or a PyTorch state dict."""
    path = Path(path)
    if not path.is_file():
        raise AtlasError(
            f"Checkpoint {path} does not exist. Set `model.checkpoint` in the atlas config to the "
            f"path of a .safetensors file or a PyTorch state dict (.pt / .pth)."
        )
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise AtlasError(
                f"Checkpoint {path} could not be read as safetensors ({error}). The file is damaged "
                f"or not a safetensors file: download or export it again."
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged or unsafe files
        raise AtlasError(
            f"Checkpoint {path} could not be read as a PyTorch state dict ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no details'}). The file is damaged, or it "
            f"pickles whole objects, which are not loaded for safety: save `model.state_dict()` with "
            f"torch.save, or convert it to safetensors."
        ) from None
    for key in ("state_dict", "model"):  # common wrappers written by training loops
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AtlasError(
            f"Checkpoint {path} holds a {type(state).__name__}, not a state dict of tensors. "
            f"Save `model.state_dict()` instead."
        )
    return state


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``model``, naming every missing, unexpected or misshapen key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshapen = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", misshapen)):
        if keys:
            shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
            problems.append(f"{len(keys)} key(s) {label}: {shown}")
    if problems:
        raise AtlasError(
            f"The checkpoint {source} does not fit the model: {'; '.join(problems)}. Check that "
            f"`model.source` builds the architecture the checkpoint was saved from (same widths and "
            f"module names)."
        )
    model.load_state_dict(state)


def check_finite(model: nn.Module, source: str) -> None:
    """Refuse weights with NaN or infinite values, naming the first such tensor."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise AtlasError(
                f"The weights of {source} contain NaN or infinite values in `{name}`. They come from a "
                f"diverged or damaged training run: use an earlier checkpoint."
            )


def build_factory(source: str) -> nn.Module:
    """Call ``package.module:factory`` and check that it gives a module."""
    module_name, _, attribute = source.partition(":")
    if not module_name or not attribute:
        raise AtlasError(
            f"`model.source: {source}` is not understood. Use `default`, or `package.module:factory` "
            f"naming an importable function that returns an nn.Module."
        )
    try:
        ensure_importable()  # many model packages import torchvision
        module = importlib.import_module(module_name)
    except Exception as error:  # ImportError, or any error raised while the module runs
        raise AtlasError(
            f"`model.source: {source}`: module {module_name} cannot be imported ({type(error).__name__}: "
            f"{error}). Install it, or run from the folder that contains it."
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise AtlasError(f"`model.source: {source}`: {module_name} has no callable `{attribute}`.")
    try:
        model = factory()
    except Exception as error:
        raise AtlasError(
            f"`model.source: {source}`: calling {attribute}() failed ({type(error).__name__}: {error}). The "
            f"factory must build the model with no arguments."
        ) from None
    if not isinstance(model, nn.Module):
        raise AtlasError(f"`model.source: {source}` returned a {type(model).__name__}, not an nn.Module.")
    return model


def fetch(path: str | Path, url: str | None) -> Path:
    """``path``, downloaded from ``url`` first if it is missing."""
    path = Path(path).expanduser()
    if path.is_file() or not url:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}-", delete=False)
    try:
        with partial, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, partial)
        os.replace(partial.name, path)
    except (OSError, ValueError) as error:
        raise AtlasError(
            f"Checkpoint {path} does not exist, and downloading it from {url} failed ({error}). Download "
            f"that file on a machine with internet access and put it at {path}."
        ) from None
    finally:
        Path(partial.name).unlink(missing_ok=True)
    return path


def torchvision_model(name: str, pretrained: bool) -> nn.Module:
    """torchvision's model ``name``, with its published weights when ``pretrained`` (whose class
    names then label its classifier)."""
    torchvision = import_torchvision()
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
        model = torchvision.models.get_model(name, weights=weights)
    except (ValueError, KeyError) as error:
        raise AtlasError(f"torchvision has no model `{name}` ({error}). See torchvision.models.list_models().") from None
    if weights is not None and weights.meta.get("categories"):
        model.class_names = list(weights.meta["categories"])
    return model


def checkpoint_classes(path: str | Path) -> list[str] | None:
    """Class names stored in a safetensors checkpoint's metadata (key ``classes``: a JSON list of
    text), or None."""
    if Path(path).suffix != ".safetensors":
        return None
    try:
        with safe_open(str(path), "pt") as stored:
            names = json.loads((stored.metadata() or {}).get("classes", "null"))
    except (SafetensorError, OSError, ValueError):
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None


def load_model(config: AtlasConfig) -> nn.Module:
    """The network of ``config``, weights loaded and checked, in eval mode on the CPU."""
    source, checkpoint = config.model.source, config.model.checkpoint
    if checkpoint is not None:
        checkpoint = fetch(checkpoint, config.model.url)
    if source == "default":
        model: nn.Module = default_model.NarrowInceptionV1()
        checkpoint = checkpoint or default_model.WEIGHTS
    elif source == "inceptionv1":
        model = inceptionv1.InceptionV1()
        if checkpoint is None:
            raise AtlasError(
                "`model.source: inceptionv1` needs `model.checkpoint`: the path of inception5h.pth (and "
                f"`model.url: {inceptionv1.CONVERSION_URL}` to download it there when missing)."
            )
    elif source.startswith("torchvision:"):
        model = torchvision_model(source.partition(":")[2], pretrained=checkpoint is None)
    else:
        model = build_factory(source)
    if checkpoint is not None:
        state = read_checkpoint(checkpoint)
        if source == "inceptionv1":
            state = inceptionv1.from_conversion_keys(state)
        load_weights(model, state, str(checkpoint))
        names = checkpoint_classes(checkpoint)
        if names is not None and not hasattr(model, "class_names"):
            model.class_names = names  # the class names the checkpoint carries label the classifier
    check_finite(model, str(checkpoint) if checkpoint is not None else f"`model.source: {source}`")
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise AtlasError(
            f"`model.source: {source}` has no nn.Conv2d layer: Weight Atlas reads convolutional "
            f"networks. Point the config at a CNN."
        )
    return model.eval()


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: names, types, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        # reshape(-1): a 0-dim buffer (batch-norm's num_batches_tracked) cannot be viewed as bytes
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()
