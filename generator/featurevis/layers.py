"""Operations as feature visualisation runs them: a redirected ReLU and a fused local response norm.

Both keep the forward value of the operation they replace and change only how its
gradient is found: the ReLU so that a unit off for a whole image can still be turned
on; the response norm so that its gradient is a few element-wise passes over saved
values instead of autograd's chain through padding, pooling and powers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def redirected_gradient(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, shortcut: bool) -> torch.Tensor:
    """The redirected ReLU's gradient (see :class:`RedirectedReLU`). ``shortcut`` first asks
    whether every image has some gradient, which makes the host wait for the device: worth it
    on the CPU only. The result is the same either way."""
    ordinary = torch.ops.aten.threshold_backward(grad, y, 0)
    alive = ordinary.abs().amax(dim=tuple(range(1, x.dim()))) > 0  # per image
    if shortcut and bool(alive.all()):
        return ordinary
    # Gradient descent moves x along -grad: grad > 0 on a negative input only lowers it further.
    redirected = grad.masked_fill((x <= 0) & (grad > 0), 0)
    return torch.where(alive.reshape(-1, *[1] * (x.dim() - 1)), ordinary, redirected)


class RedirectedReLU(torch.autograd.Function):
    """ReLU whose gradient is not lost on units that are off for the whole image.

    Where the ordinary gradient through this ReLU is zero for an entire image (for the
    last ReLU before a unit: the unit is off at every position), the gradient is passed on
    where it would raise a negative input, so an image that starts with the unit off can
    still find how to turn it on (Lucid's "redirected ReLU"). Forward, it is ReLU.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clamp_min(0)
        ctx.save_for_backward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        x, y = ctx.saved_tensors
        return redirected_gradient(grad, x, y, shortcut=x.device.type == "cpu")


def redirected_relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    return RedirectedReLU.apply(x)


def _window_mean(values: torch.Tensor, size: int, before: int) -> torch.Tensor:
    """Per channel ``c`` of ``[B, C, ...]``, the mean of channels ``c - before`` to
    ``c - before + size - 1`` (missing channels count as zeros), as PyTorch's LRN takes it."""
    after = size - 1 - before
    stacked = values.unsqueeze(1)
    if values.dim() == 3:
        return F.avg_pool2d(F.pad(stacked, (0, 0, before, after)), (size, 1), stride=1).squeeze(1)
    shape = stacked.shape
    flat = stacked.reshape(shape[0], 1, shape[2], shape[3], -1)
    return F.avg_pool3d(F.pad(flat, (0, 0, 0, 0, before, after)), (size, 1, 1), stride=1).reshape(values.shape)


class FusedLRN(torch.autograd.Function):
    """``torch.nn.functional.local_response_norm`` with a closed-form gradient.

    With ``s_c = k + alpha * mean_{j in W(c)} x_j**2`` (``W(c)``: the ``size`` channels from
    ``c - size // 2``) and ``y_c = x_c * s_c**-beta``, the gradient is
    ``g_j * s_j**-beta - 2 * alpha * beta * x_j * mean_{c : j in W(c)} g_c * y_c / s_c``.
    Forward, it is PyTorch's own arithmetic, so values are the same to the bit.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        s = _window_mean(x * x, size, size // 2).mul(alpha).add(k)
        scale = s.pow(beta)
        y = x / scale
        ctx.save_for_backward(x, s, scale)
        ctx.settings = (size, alpha, beta)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, s, scale = ctx.saved_tensors
        size, alpha, beta = ctx.settings
        spread = _window_mean(grad * x / (scale * s), size, (size - 1) // 2)  # the windows that hold j
        return grad / scale - (2 * alpha * beta) * x * spread, None, None, None, None


def fused_local_response_norm(x: torch.Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75,
                              k: float = 1.0) -> torch.Tensor:
    if x.dim() not in (3, 4):  # the closed form is written for [B, C, L] and [B, C, H, W]
        return F.local_response_norm(x, size, alpha, beta, k)
    if torch.is_autocast_enabled(x.device.type):  # k + a tiny sum is lost in bfloat16: normalise in float32
        with torch.autocast(x.device.type, enabled=False):
            return FusedLRN.apply(x.float(), size, alpha, beta, k)
    return FusedLRN.apply(x, size, alpha, beta, k)
