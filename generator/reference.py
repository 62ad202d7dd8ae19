"""The gradient definition of expanded weights: slow, independent, for checking.

As the Distill article "Visualizing Weights" defines it: run the linearised network, take one
output unit near the centre of the map, and take the gradient of that unit with respect to the
whole source layer; the non-zero window is the expanded kernel. Here the linearisation is done
by swapping PyTorch's own functions while the model's ordinary forward pass runs (as each
operation's entry in :mod:`generator.operations` says: ReLU-like activations, dropout and local
response norm become the identity, squashing activations their slope at zero, max-pooling
average pooling), and the gradient is taken by autograd, one backward pass per output channel.
Gates (a squashing module, a converter's included, with one value per channel), layer norms
and group norms are frozen at their mean over reference images, measured here with forward
hooks. Nothing is shared with :mod:`generator.expanded`, which composes kernels instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from . import operations as ops
from .images import reference_images


def _identity(x, *args, **kwargs):
    return x


def _average_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    if dilation not in (1, (1, 1)):
        raise NotImplementedError("the reference has no dilated average pooling")
    return F.avg_pool2d(x, kernel_size, stride, padding, ceil_mode, count_include_pad=True)


def _adaptive_average_pool(x, output_size, return_indices=False):
    return F.adaptive_avg_pool2d(x, output_size)


_ORIGINAL_PAD = F.pad


def _zero_pad(x, pad, mode="constant", value=None):
    return _ORIGINAL_PAD(x, pad, mode)  # constants (such as -inf before a max-pool) carry no weight


def _slope(factor: float):
    return lambda x, *args, **kwargs: x * factor


@contextlib.contextmanager
def swapped(swaps) -> Iterator[None]:
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in swaps]
    try:
        for owner, name, replacement in swaps:
            setattr(owner, name, replacement)
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def _replacement(op: ops.Operation, statistics: dict[int, torch.Tensor]):
    """What the functions of entry ``op`` become in the linearised forward pass, by its ``reference``."""
    if op.reference == "frozen":
        if not statistics:
            return None
        return lambda x, second, weight=None, bias=None, eps=1e-5: op.frozen(x, second, weight, statistics[id(weight)])
    return {"identity": _identity, "slope": _slope(op.slope or 0.0), "average pool": _average_pool,
            "adaptive average pool": _adaptive_average_pool, "zero pad": _zero_pad}[op.reference]


@contextlib.contextmanager
def linearised(deviations: dict[int, torch.Tensor] | None = None) -> Iterator[None]:
    """Within the block, PyTorch's functions of every operation the registry gives a reference
    replacement are replaced (:attr:`generator.operations.Operation.reference`). Norms use the
    frozen ``deviations`` (keyed by the id of the norm's weight)."""
    swaps = []
    for op in ops.OPERATIONS:
        if op.reference is None or (replacement := _replacement(op, deviations or {})) is None:
            continue
        swaps += [(owner, name, replacement) for name in op.functions for owner in (F, torch)
                  if hasattr(owner, name) and callable(getattr(owner, name))]
    with swapped(swaps):
        yield


def reference_statistics(model: nn.Module, images: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[int, torch.Tensor]]:
    """Gates (outputs of squashing modules with one value per channel) and the deviations of
    layer norms (one) and group norms (one per group), averaged over ``images``: ``(gate per
    module name, deviation per norm weight id)``."""
    gates: dict[str, torch.Tensor] = {}
    deviations: dict[int, torch.Tensor] = {}

    def measuring(op: ops.Operation, original):
        """``original`` (a norm's function: input, normalised shape or groups, weight, bias, eps),
        recording its entry's statistic under the id of its weight."""
        def norm(x, second, weight=None, bias=None, eps=1e-5):
            deviations[id(weight)] = op.statistic(x, second, eps)
            return original(x, second, weight, bias, eps)
        return norm

    def take_gate(name):
        def hook(module, args, output):
            if output.dim() == 4 and output.shape[2:] == (1, 1):
                gates[name] = output.mean(dim=0, keepdim=True)
        return hook

    hooks = [m.register_forward_hook(take_gate(name)) for name, m in model.named_modules() if ops.squashing_module(m)]
    measured = [(F, name, measuring(op, getattr(F, name))) for op in ops.OPERATIONS if op.statistic
                for name in op.functions if hasattr(F, name)]
    try:
        with torch.no_grad(), swapped(measured):
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
    return gates, deviations


def gradient_weights(model: nn.Module, src: str, dst: str, input_shape: tuple[int, int, int],
                     channels: list[int] | None = None, reference: torch.Tensor | None = None,
                     held: tuple[str, ...] = ()) -> torch.Tensor:
    """d dst[o, centre] / d src, for each dst channel ``o``: ``[len(channels), C_src, H_src, W_src]``.

    ``src`` and ``dst`` are module names; the gradient is taken with respect to ``src``'s
    output and from ``dst``'s output at the centre of its map (its only position when
    ``dst`` is not spatial). Gates and norms are frozen at their mean over the ``reference``
    images (default: :func:`generator.images.reference_images`). The outputs of the modules
    ``held`` are detached: no gradient flows through them.
    """
    model.eval()
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    if reference is None:
        reference = reference_images(input_shape)
    gates, deviations = reference_statistics(model, reference)

    def frozen_gate(name):
        return lambda module, args, output: gates[name].expand_as(output).detach()

    def take_source(module, args, output):
        leaf = output.detach().clone().requires_grad_(True)
        captured["src"] = leaf
        return leaf

    def take_destination(module, args, output):
        captured["dst"] = output

    hooks = [modules[name].register_forward_hook(frozen_gate(name)) for name in gates]
    hooks += [modules[name].register_forward_hook(lambda module, args, output: output.detach()) for name in held]
    hooks += [modules[src].register_forward_hook(take_source), modules[dst].register_forward_hook(take_destination)]
    try:
        with linearised(deviations), torch.enable_grad():
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
