"""The gradient definition of expanded weights: slow, independent, for checking.

METHOD.md: run the linearised network, take one output unit near the centre of the map,
and take the gradient of that unit with respect to the whole source layer; the non-zero
window is the expanded kernel. Here the linearisation is done by swapping PyTorch's own
functions while the model's ordinary forward pass runs (ReLU-like activations, dropout
and local response norm become the identity, max-pooling becomes average pooling), and
the gradient is taken by autograd, one backward pass per output channel. Nothing is
shared with :mod:`generator.expanded`, which composes kernels instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

IDENTITIES = ("relu", "relu6", "leaky_relu", "gelu", "silu", "elu", "hardswish", "mish", "dropout",
              "local_response_norm")


def _identity(x, *args, **kwargs):
    return x


def _average_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if dilation not in (1, (1, 1)):
        raise NotImplementedError("the reference has no dilated average pooling")
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=True)


def _zero_pad(x, pad, mode="constant", value=None):
    return _ORIGINAL_PAD(x, pad, mode)  # constants (such as -inf before a max-pool) carry no weight


_ORIGINAL_PAD = F.pad


@contextlib.contextmanager
def linearised() -> Iterator[None]:
    """Within the block, PyTorch's non-linear functions are their linear twins."""
    swaps = [(F, name, _identity) for name in IDENTITIES]
    swaps += [(torch, "relu", _identity), (F, "max_pool2d", _average_pool), (F, "pad", _zero_pad)]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
    try:
        for owner, name, replacement in swaps:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def gradient_weights(model: nn.Module, src: str, dst: str, input_shape: tuple[int, int, int],
                     channels: list[int] | None = None) -> torch.Tensor:
    """d dst[o, centre] / d src, for each dst channel ``o``: ``[len(channels), C_src, H_src, W_src]``.

    ``src`` and ``dst`` are module names; the gradient is taken with respect to ``src``'s
    output and from ``dst``'s output at the centre of its map (its only position when
    ``dst`` is not spatial).
    """
    model.eval()
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}

    def take_source(module, args, output):
        leaf = output.detach().clone().requires_grad_(True)
        captured["src"] = leaf
        return leaf

    def take_destination(module, args, output):
        captured["dst"] = output

    hooks = [modules[src].register_forward_hook(take_source), modules[dst].register_forward_hook(take_destination)]
    try:
        with linearised(), torch.enable_grad():
            model(torch.zeros(1, *input_shape))
            out, leaf = captured["dst"], captured["src"]
            picked = out[0, :, out.shape[2] // 2, out.shape[3] // 2] if out.dim() == 4 else out[0]
            rows = []
            for o in channels if channels is not None else range(len(picked)):
                (grad,) = torch.autograd.grad(picked[o], leaf, retain_graph=True)
                rows.append(grad[0])
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack(rows)


def window_of(gradient: torch.Tensor, kernel_shape: tuple[int, ...], stride, offset, dst_size) -> torch.Tensor:
    """The part of a gradient map that an expanded kernel covers (see expanded_weights)."""
    top = dst_size[0] // 2 * stride[0] + offset[0]
    left = dst_size[1] // 2 * stride[1] + offset[1]
    return gradient[:, :, top : top + kernel_shape[2], left : left + kernel_shape[3]]
