"""Load the network an atlas config names, with its weights, in eval mode.

Sources:
- ``default``: the embedded narrow InceptionV1 and its committed weights;
- ``inceptionv1``: Lucid's InceptionV1, weights in the widely used conversion's format;
- ``torchvision:NAME``: a torchvision classification model (optional extra), with its
  published weights unless a checkpoint is given;
- ``onnx:path/to/model.onnx``: an ONNX file, converted with onnx2torch (optional extra;
  :mod:`generator.onnx_models`);
- ``package.module:factory``: any importable callable returning an ``nn.Module``.

Weights come from ``model.checkpoint``: safetensors, or a state dict read by
``torch.load(weights_only=True)``, never an arbitrary pickle. When the file is missing
and ``model.url`` (http or https) is set, it is downloaded into a temporary file, which
becomes the checkpoint only once it has loaded; ``model.sha256`` pins its content.

A factory runs inside a fence: it may not end the build (``sys.exit``), and whatever global
state of torch, NumPy and Python it changes (grad mode, default dtype, random number
generators, threads) is put back after it returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib
import json
import os
import pickle
import random
import re
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from . import default_model, inceptionv1
from .config import AtlasConfig, redacted
from .errors import AtlasError
from .onnx_models import load_onnx
from .torchvision_models import ensure_importable, import_torchvision


def read_checkpoint(path: str | Path, named: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors stored in a safetensors file or a PyTorch state dict; messages call the
    file ``named`` (default: its path)."""
    path = Path(path)
    shown = named or str(path)
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
                f"Checkpoint {shown} could not be read as safetensors ({str(error)[:200]}). The file is damaged "
                f"or not a safetensors file: download or export it again."
            ) from None
    try:
        state = _torch_load(path)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if found is None:  # not objects: damaged bytes (torch's advice to drop weights_only is left out)
            raise AtlasError(f"Checkpoint {shown} could not be read as a PyTorch state dict: the file is damaged or "
                             f"not a checkpoint. Save `model.state_dict()` with torch.save, or convert it to "
                             f"safetensors.") from None
        what = f" (such as {found.group(1)[:100]})"
        raise AtlasError(
            f"Checkpoint {shown} pickles Python objects{what}, not only tensors. Such objects can run code when "
            f"they are loaded, so Weight Atlas never loads them. Save the weights alone, "
            f"torch.save(model.state_dict(), path), or convert them to safetensors."
        ) from None
    except Exception as error:  # torch raises many types for damaged files
        raise AtlasError(
            f"Checkpoint {shown} could not be read as a PyTorch state dict ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200] if str(error) else 'no details'}). The file is damaged or not a "
            f"checkpoint: save `model.state_dict()` with torch.save, or convert it to safetensors."
        ) from None
    for key in ("state_dict", "model"):  # common wrappers written by training loops
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AtlasError(
            f"Checkpoint {shown} holds a {type(state).__name__}, not a state dict of tensors. "
            f"Save `model.state_dict()` instead."
        )
    return state


def _torch_load(path: Path):
    """A PyTorch checkpoint's tensors, mapped from the file rather than read into memory, so
    they are copied into the model once (a file in the old, pre-zip format is read)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as error:
        if "mmap" not in str(error):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


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


FINITE_BLOCK = 2**22  # weights checked at a time


def check_finite(model: nn.Module, source: str) -> None:
    """Refuse weights with NaN or infinite values, naming the first such tensor."""
    for name, tensor in model.state_dict().items():
        # a block at a time: the test's temporaries are several times the size of what it reads
        if tensor.is_floating_point() and not all(
                bool(torch.isfinite(block).all()) for block in tensor.detach().reshape(-1).split(FINITE_BLOCK)):
            raise AtlasError(
                f"The weights of {source} contain NaN or infinite values in `{name}`. They come from a "
                f"diverged or damaged training run: use an earlier checkpoint."
            )


@contextlib.contextmanager
def _global_state_kept() -> Iterator[None]:
    """Put back the global state of torch, NumPy and Python that code run inside may change."""
    grad, dtype, threads = torch.is_grad_enabled(), torch.get_default_dtype(), torch.get_num_threads()
    torch_rng, numpy_rng, python_rng = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_grad_enabled(grad)
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        torch.random.set_rng_state(torch_rng)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)


def build_factory(source: str) -> nn.Module:
    """Call ``package.module:factory`` and check that it gives a module."""
    module_name, _, attribute = source.partition(":")
    if not module_name or not attribute:
        raise AtlasError(
            f"`model.source: {source}` is not understood. Use `default`, `onnx:FILE` for an ONNX file, or "
            f"`package.module:factory` naming an importable function that returns an nn.Module."
        )
    if module_name.partition(".")[0] in sys.stdlib_module_names:
        raise AtlasError(f"`model.source: {source}` names a function of Python's standard library, not a model "
                         f"factory. Name a function of your own package that returns an nn.Module.")
    try:
        ensure_importable()  # many model packages import torchvision
        with _global_state_kept():
            module = importlib.import_module(module_name)
    except SystemExit as exit:
        raise AtlasError(f"`model.source: {source}`: importing {module_name} called sys.exit({exit.code!r}). "
                         f"A module the build imports must not end the program.") from None
    except Exception as error:  # ImportError, or any error raised while the module runs
        raise AtlasError(
            f"`model.source: {source}`: module {module_name} cannot be imported ({type(error).__name__}: "
            f"{str(error)[:300]}). Install it, or run from the folder that contains it."
        ) from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise AtlasError(f"`model.source: {source}`: {module_name} has no callable `{attribute}`.")
    try:
        with _global_state_kept():
            model = factory()
    except SystemExit as exit:
        raise AtlasError(f"`model.source: {source}`: {attribute}() called sys.exit({exit.code!r}) instead of "
                         f"returning the model. The factory must build the model and return it.") from None
    except Exception as error:
        raise AtlasError(
            f"`model.source: {source}`: calling {attribute}() failed ({type(error).__name__}: {str(error)[:300]}). "
            f"The factory must build the model with no arguments."
        ) from None
    if not isinstance(model, nn.Module):
        raise AtlasError(f"`model.source: {source}` returned a {type(model).__name__}, not an nn.Module.")
    return model


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def downloaded(path: Path, url: str) -> Iterator[Path]:
    """A temporary file beside ``path`` holding what ``url`` serves, removed on leaving unless
    the block has moved it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name[:60]}-",
                                          suffix=f".partial{path.suffix}",
                                          delete=False)
    try:
        try:
            with partial, urllib.request.urlopen(url, timeout=60) as response:
                shutil.copyfileobj(response, partial)
        except (OSError, ValueError, http.client.HTTPException) as error:
            detail = str(error)[:200]
            try:
                address = urllib.parse.urlsplit(url)
                secrets = [s for s in (address.username, address.password) if s]
            except ValueError:
                secrets = [url]
            for secret in secrets:
                detail = detail.replace(secret, "…")
            raise AtlasError(
                f"Checkpoint {path} does not exist, and downloading it from {redacted(url)} failed "
                f"({type(error).__name__}: {detail}). Check the address, or download the file on a machine with "
                f"internet access and put it at {path}."
            ) from None
        yield Path(partial.name)
    finally:
        Path(partial.name).unlink(missing_ok=True)


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
    elif source.startswith("onnx:"):
        model = load_onnx(Path(source.partition(":")[2]).expanduser(), config.input.shape)
    else:
        model = build_factory(source)
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file() and config.model.url:
            with downloaded(path, config.model.url) as partial:
                _load_checkpoint(model, partial, f"{path} (downloaded from {redacted(config.model.url)})", config)
                os.replace(partial, path)  # only a checkpoint that loaded takes its place
        else:
            _load_checkpoint(model, path, str(path), config)
    else:
        check_finite(model, f"`model.source: {source}`")
    if not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        raise AtlasError(
            f"`model.source: {source}` has no nn.Conv2d layer: Weight Atlas reads convolutional "
            f"networks. Point the config at a CNN."
        )
    return model.eval()


def _load_checkpoint(model: nn.Module, path: Path, named: str, config: AtlasConfig) -> None:
    """Check the checkpoint at ``path`` (called ``named`` in messages) against ``model.sha256``,
    and load it into ``model``."""
    expected = config.model.sha256
    if expected is not None and path.is_file() and sha256_of(path) != expected.lower():
        raise AtlasError(f"Checkpoint {named} does not have the SHA-256 that `model.sha256` pins ({expected[:12]}…): "
                         f"it is another file, or damaged. Download it again from its source, or, if the new file "
                         f"is the one you want, set `model.sha256` to its hash (sha256sum FILE).")
    state = read_checkpoint(path, named)
    if config.model.source == "inceptionv1":
        state = inceptionv1.from_conversion_keys(state)
    load_weights(model, state, named)
    del state  # copied into the model
    names = checkpoint_classes(path)
    if names is not None and not hasattr(model, "class_names"):
        model.class_names = names  # the class names the checkpoint carries label the classifier
    check_finite(model, named)


def weights_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: names, types, shapes and values."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        # reshape(-1): a 0-dim buffer (batch-norm's num_batches_tracked) cannot be viewed as bytes
        digest.update(value.reshape(-1).view(torch.uint8).numpy() if value.numel() else b"")  # read in place
    return digest.hexdigest()
