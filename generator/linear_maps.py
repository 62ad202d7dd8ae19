"""Linear maps from one layer's units to a later node, and how operations compose them.

A map from the source layer to a node is held as :class:`LinearMap`::

    value[c, y, x] = sum over c', i, j of  kernel[c, c', i, j] * src[c', y*sy + oy + i, x*sx + ox + j]

for units away from the border (stride ``(sy, sx)``, offset ``(oy, ox)``): translation
equivariant, so a convolution kernel. While a map is composed, its kernel may hold taps
further apart than one source pixel (a convolution after a strided one) and average pools
not yet applied; :func:`settled` makes it the kernel above. After global pooling a map is no longer spatial:
``kernel[c, c', 0, 0]`` is then the response to a unit increase of source channel ``c'``
at every position. A dense unit that reads positions (a linear layer after a flatten) has a
*placed* map: ``kernel[c, c', Y, X]`` weighs source position ``(Y, X)`` itself.

Between a spatial map and the operation that reads it, the node may hold the map's values
rearranged (permuted to channels-last, flattened, resampled by an adaptive pool): a
:class:`Rearranged` map keeps the spatial map and where each element of the node comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LinearMap:
    """The linear map from the source layer to one node; see the module docstring."""

    kernel: torch.Tensor  # [channels, source channels, h, w]
    stride: tuple[int, int] = (1, 1)
    offset: tuple[int, int] = (0, 0)
    spatial: bool = True
    placed: bool = False  # not spatial, and kernel[c, c'] is a map over the source's positions
    # Source pixels between the kernel's taps, not yet spread out: a convolution after a strided
    # one (a map through InceptionV1's stride-2 pool) keeps its 3x3 taps, not a 5x5 of zeros.
    dilation: tuple[int, int] = (1, 1)
    # Average pools not yet applied: ((kh, kw), (step_y, step_x)) box filters in source pixels.
    # A box acts on every channel alike, so it commutes with everything up to the next
    # concatenation or sum; applying it there, after the channel-mixing convolutions have
    # shrunk the kernel, saves most of the work.
    boxes: tuple[tuple[tuple[int, int], tuple[int, int]], ...] = ()

    @cached_property
    def picked(self) -> torch.Tensor | None:
        """Where the kernel is the identity's columns: the input channel of each source channel
        (:func:`_picked_inputs`). Found once per map: every branch after a layer reads its map."""
        return _picked_inputs(self.kernel)


def settled(m: LinearMap) -> LinearMap:
    """``m`` on source pixels: its taps spread ``dilation`` apart and its pending average pools
    applied (see :func:`spread`)."""
    if not m.boxes and m.dilation == (1, 1):
        return m
    return replace(m, kernel=spread(m.kernel, m.dilation, m.boxes), dilation=(1, 1), boxes=())


KRON_TAPS = 100  # kernels of at most this many taps are spread by one matrix, larger ones axis by axis


def spread(kernel: torch.Tensor, dilation: tuple[int, int], boxes=()) -> torch.Tensor:
    """``kernel [..., h, w]``'s taps placed ``dilation`` source pixels apart and filtered by the
    ``boxes`` (``((kh, kw), (step_y, step_x))`` each).

    Both are linear along each axis: every tap lands on the axis's *profile* (the boxes
    convolved), shifted by its place. So the spread kernel is one matrix product per axis,
    ``M[i, x] = profile[x - dilation * i]``, and a small kernel's is one product by the two
    axes' Kronecker product: each output weight is written once, where adding shifted copies
    box by box wrote the whole kernel twice per box tap."""
    h, w = kernel.shape[-2:]
    rows = _axis_spread(h, dilation[0], [(size[0], step[0]) for size, step in boxes], kernel.dtype)
    columns = _axis_spread(w, dilation[1], [(size[1], step[1]) for size, step in boxes], kernel.dtype)
    height, width = rows.shape[1], columns.shape[1]
    lead = kernel.shape[:-2]
    if h * w <= KRON_TAPS:  # the kernel as it lies (a product's view with the taps outermost, too)
        return torch.matmul(kernel.flatten(-2), torch.kron(rows, columns)).reshape(*lead, height, width)
    across = (kernel.reshape(-1, w) @ columns).reshape(-1, h, width)
    return torch.matmul(rows.T, across).reshape(*lead, height, width)


def _axis_spread(taps: int, dilation: int, boxes: list[tuple[int, int]], dtype: torch.dtype) -> torch.Tensor:
    """``M [taps, length]`` with ``M[i, x] = profile[x - dilation * i]``, the profile being the
    boxes (``(size, step)`` each: ``size`` taps ``step`` apart, weighing ``1 / size``) convolved."""
    profile = np.ones(1)
    for size, step in boxes:
        box = np.zeros((size - 1) * step + 1)
        box[::step] = 1 / size
        profile = np.convolve(profile, box)
    matrix = np.zeros((taps, (taps - 1) * dilation + len(profile)))
    for i in range(taps):
        matrix[i, dilation * i : dilation * i + len(profile)] = profile
    return torch.from_numpy(matrix).to(dtype)


def pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def conv(m: LinearMap, weight: torch.Tensor, stride, padding, dilation, groups: int) -> LinearMap:
    """Compose ``m`` with a convolution: its taps land ``dilation * m.stride`` source pixels apart."""
    if not m.spatial:
        if weight.shape[2:] != (1, 1) or groups != 1:
            raise ValueError("a spatial convolution after global pooling")
        return mixed(m, weight[:, :, 0, 0])
    stride, padding, dilation = pair(stride), pair(padding), pair(dilation)
    step = (dilation[0] * m.stride[0], dilation[1] * m.stride[1])
    # kernel'[o, c'] = sum_i,a W[o, i, a] K[i, c', u - a*step]: a transposed convolution of K by W,
    # with the source channel c' as the batch.
    if m.kernel.shape[2:] == (1, 1) and groups == 1:  # the common case, a plain matrix product
        kernel = _matrix_times(weight, m.kernel, m.picked)  # its taps land ``step`` source pixels apart
        taps = step if kernel.shape[2:] != (1, 1) else (1, 1)
    elif weight.shape[2:] == (1, 1) and groups == 1:  # a matrix over channels, position by position
        kernel, taps = _matrix_times(weight[:, :, 0, 0], m.kernel, m.picked), m.dilation
    else:
        out_channels, in_per_group = weight.shape[:2]
        transposed = (weight.reshape(groups, out_channels // groups, in_per_group, *weight.shape[2:])
                      .transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, *weight.shape[2:]))
        pixels = spread(m.kernel, m.dilation) if m.dilation != (1, 1) else m.kernel
        kernel = F.conv_transpose2d(pixels.transpose(0, 1), transposed, groups=groups, dilation=step).transpose(0, 1)
        taps = (1, 1)
    return LinearMap(
        kernel if taps != (1, 1) else kernel.contiguous(),  # taps apart are written out once, spread
        (stride[0] * m.stride[0], stride[1] * m.stride[1]),
        (m.offset[0] - padding[0] * m.stride[0], m.offset[1] - padding[1] * m.stride[1]),
        dilation=taps,
        boxes=m.boxes,
    )


def pool(m: LinearMap, kernel_size, stride, padding, dilation=1) -> LinearMap:
    """Average pooling (the linear twin of max-pooling): a box filter, applied later."""
    if not m.spatial:
        raise ValueError("pooling after global pooling")
    size, dilation, padding = pair(kernel_size), pair(dilation), pair(padding)
    stride = pair(stride) if stride not in (None, ()) else size
    step = (dilation[0] * m.stride[0], dilation[1] * m.stride[1])
    return LinearMap(
        m.kernel,
        (stride[0] * m.stride[0], stride[1] * m.stride[1]),
        (m.offset[0] - padding[0] * m.stride[0], m.offset[1] - padding[1] * m.stride[1]),
        dilation=m.dilation,
        boxes=m.boxes + ((size, step),),
    )


def scale(m: LinearMap | Placed, factors: torch.Tensor | float) -> LinearMap | Placed:
    """Each row of ``m`` times its factor (a number: all rows)."""
    rows = m.image if isinstance(m, Placed) else m.kernel
    if isinstance(factors, torch.Tensor):
        factors = factors.reshape(-1, 1, 1, 1).to(rows.dtype)
    return replace(m, image=rows * factors) if isinstance(m, Placed) else replace(m, kernel=rows * factors)


def pooled_globally(m: LinearMap) -> LinearMap:
    """After global average pooling: a box sums to one, so pending boxes drop out."""
    return m if not m.spatial else LinearMap(m.kernel.sum(dim=(2, 3), keepdim=True), spatial=False)


def combined(maps: list[LinearMap | None], channels: list[int], stack: bool) -> LinearMap | Stacked:
    """Parts on one window of source positions: stacked along channels (a concatenation,
    held as its parts: :class:`Stacked`) or added (a sum). A part that does not reach a
    position is zero there; None is a part that does not depend on the source (zero,
    ``channels`` wide when stacked)."""
    if any(isinstance(m, Rearranged) for m in maps):
        raise ValueError("parts whose positions are rearranged (such as channels-last)")
    present = [settled(m) for m in maps if m is not None]
    if all(not m.spatial for m in present):
        if len({(m.placed, m.kernel.shape[2:]) for m in present}) > 1:
            raise ValueError("parts that read positions differently")
        window, spatial, stride, top, left = tuple(present[0].kernel.shape[2:]), False, (1, 1), 0, 0
    elif any(not m.spatial for m in present) or len({m.stride for m in present}) > 1:
        raise ValueError("parts at different resolutions")
    else:
        spatial, stride = True, present[0].stride
        top, left = min(m.offset[0] for m in present), min(m.offset[1] for m in present)
        window = (max(m.offset[0] + m.kernel.shape[2] for m in present) - top,
                  max(m.offset[1] + m.kernel.shape[3] for m in present) - left)
    parts, start, found = [], 0, iter(present)
    for m, width in zip(maps, channels):
        if m is not None:
            m = next(found)
            y, x = (m.offset[0] - top, m.offset[1] - left) if spatial else (0, 0)
            parts.append(Part(start if stack else 0, y, x, m.kernel))
        start += width if stack else 0
    rows = start if stack else present[0].kernel.shape[0]
    result = Stacked(tuple(parts), (rows, present[0].kernel.shape[1], *window), stride, (top, left), spatial,
                     present[0].placed)
    return result if stack else result.dense()


@dataclass(frozen=True)
class Part:
    """Rows ``row, row + len(kernel)`` of a stacked map, whose kernel lies at ``(y, x)`` of its window."""

    row: int
    y: int
    x: int
    kernel: torch.Tensor


@dataclass(frozen=True)
class Stacked:
    """A map whose rows are parts on one window (a concatenation of branches): each part's
    kernel only as large as its branch reaches, the rest of the window zero, and rows no part
    covers (a branch that does not depend on the source) zero. :meth:`dense` makes it one
    :class:`LinearMap`; the layer pass reads the parts as they are."""

    parts: tuple[Part, ...]
    shape: tuple[int, int, int, int]  # the dense kernel's
    stride: tuple[int, int] = (1, 1)
    offset: tuple[int, int] = (0, 0)
    spatial: bool = True
    placed: bool = False

    def dense(self) -> LinearMap:
        kernel = self.parts[0].kernel.new_zeros(self.shape)
        for p in self.parts:
            h, w = p.kernel.shape[2:]
            kernel[p.row : p.row + len(p.kernel), :, p.y : p.y + h, p.x : p.x + w] += p.kernel
        return LinearMap(kernel, self.stride, self.offset, self.spatial, self.placed)


def mixed(m: LinearMap | Placed, weight: torch.Tensor) -> LinearMap | Placed:
    """A matrix ``weight [out, in]`` applied to the channels of a non-spatial map."""
    if isinstance(m, Placed):
        return replace(m, image=_matrix_times(weight, m.image))
    return replace(m, kernel=_matrix_times(weight, m.kernel, m.picked))


def _matrix_times(weight: torch.Tensor, kernel: torch.Tensor, picked: torch.Tensor | None = None) -> torch.Tensor:
    """``weight [out, in, ...]`` times ``kernel [in, sources, 1, 1]`` or ``[in, ...]`` (then
    ``weight`` is ``[out, in]``), summed over ``in``: ``[out, sources, ...]`` or ``[out, ...]``.

    The first operation after the source layer reads the identity map (or a slice of it): each
    source channel one input channel (``picked``, see :attr:`LinearMap.picked`). Its product is
    then the weight's columns, picked."""
    weight = weight.to(kernel.dtype)
    if picked is not None:
        taken = weight[:, picked]
        return (taken if weight.dim() > 2 else taken[:, :, None, None]).contiguous()
    if weight.dim() > 2:  # [out, in, y, x] times [in, sources, 1, 1]
        return torch.einsum("oi...,is->os...", weight, kernel[:, :, 0, 0])
    return (weight @ kernel.reshape(len(kernel), -1)).reshape(len(weight), *kernel.shape[1:])


def _picked_inputs(kernel: torch.Tensor) -> torch.Tensor | None:
    """Where ``kernel [in, sources, 1, 1]`` is the identity's columns (each source channel one
    input channel, with weight 1): the input channel of each source channel."""
    if kernel.dim() != 4 or kernel.shape[2:] != (1, 1) or kernel.shape[0] < kernel.shape[1]:
        return None
    columns = kernel[:, :, 0, 0]
    if int(torch.count_nonzero(columns)) != columns.shape[1]:
        return None
    inputs, sources = columns.nonzero(as_tuple=True)  # as many as columns: one each, if none is bare
    if not torch.equal(sources.sort().values, torch.arange(len(sources))) or not bool((columns[inputs, sources] == 1).all()):
        return None
    picked = torch.empty_like(inputs)
    picked[sources] = inputs
    return picked


def identity(channels: int, columns: slice | None = None) -> LinearMap:
    """The map from a layer to itself (only the source channels ``columns``, when given)."""
    eye = torch.eye(channels)
    return LinearMap((eye if columns is None else eye[:, columns])[:, :, None, None].contiguous())


@dataclass(frozen=True)
class Rearranged:
    """A node whose elements are those of a spatial map's node, moved (and resampled).

    ``base`` is the map to a node of shape ``grid`` (channels, height, width). The node
    holds ``resampled.flatten()[elements]``, where ``resampled`` is that node with each
    channel's positions mapped by ``positions`` (``[h * w, height * width]``, or None: as
    they are; ``shape`` is then ``grid``). ``axes`` says when ``elements`` is the grid with
    its axes permuted (channels last, for instance).
    """

    base: LinearMap
    grid: tuple[int, int, int]
    shape: tuple[int, int, int]
    elements: torch.Tensor  # long, the node's shape without the batch
    positions: torch.Tensor | None = None
    axes: tuple[int, ...] | None = None


def canonical(shape: tuple[int, ...]) -> torch.Tensor:
    """Element numbers of a ``(channels, height, width)`` node, in its own order."""
    return torch.arange(int(torch.tensor(shape).prod())).reshape(shape)


def rearranged(base: LinearMap | Rearranged, grid: tuple[int, int, int], elements: torch.Tensor
               ) -> LinearMap | Rearranged:
    """The map after a rearrangement that turned ``canonical(grid)`` into ``elements``
    (``base`` may already be rearranged; then ``elements`` index its ``shape``)."""
    elements = elements.contiguous()
    if isinstance(base, Rearranged):
        return normalised(replace(base, elements=elements, axes=None))
    return normalised(Rearranged(base, grid, grid, elements))


def normalised(r: Rearranged) -> LinearMap | Rearranged:
    """A plain map again where the rearrangement only selects channels; axes recognised."""
    shape, e = r.shape, r.elements
    if r.positions is None:
        c, h, w = shape
        if not r.base.spatial and h * w == 1 and e.numel() == c:  # channels, flattened or not
            return replace(r.base, kernel=r.base.kernel[e.reshape(-1)])
        if e.dim() == 3 and tuple(e.shape[1:]) == (h, w):  # channels selected, reordered or repeated
            rows = e[:, 0, 0] // (h * w)
            if torch.equal(e, rows[:, None, None] * (h * w) + canonical((1, h, w))):
                return replace(r.base, kernel=r.base.kernel[rows])
    for axes in ((0, 1, 2), (1, 2, 0), (0, 2, 1), (2, 1, 0), (1, 0, 2), (2, 0, 1)):
        if e.dim() == 3 and torch.equal(e, canonical(shape).permute(axes)):
            return replace(r, axes=axes)
    return r


def resampled(m: LinearMap, grid: tuple[int, int, int], positions: torch.Tensor, size: tuple[int, int]
              ) -> Rearranged:
    """A per-channel linear resampling of a spatial map's positions (adaptive pooling to a
    size that does not divide the map, interpolation): ``positions [h * w, height * width]``."""
    shape = (grid[0], *size)
    return Rearranged(m, grid, shape, canonical(shape), positions)


def channels_last_mix(r: Rearranged, weight: torch.Tensor) -> Rearranged:
    """A matrix over the channel axis of a channels-last node (a linear layer there is a 1x1
    convolution); the node stays channels-last."""
    base = conv(r.base, weight[:, :, None, None], 1, 0, 1, 1)
    grid = (weight.shape[0], *r.grid[1:])
    return Rearranged(base, grid, grid, canonical(grid).permute(r.axes), axes=r.axes)


PLACED_BLOCK = 2**23  # weights of a dense layer spread back to positions at a time (32 MB)


@dataclass(frozen=True)
class Placed:
    """A dense layer's placed map held unspread: ``image [out, channels, h, w]``, the layer's
    weight at the positions of the node it flattened, and ``base``, the map from the source
    layer to that node (its boxes applied). Row ``o`` of the placed kernel is ``image[o]``
    spread back through ``base`` to the source's ``size`` (:meth:`rows`).

    VGG-16's fc6 reads conv5_3 through a 2x2 pool: its placed kernel takes 1.6 GB, its weight
    411 MB, and the weight is the model's own tensor. Every row is spread alike, so a later
    operation that scales or mixes rows applies to ``image`` (:func:`scale`, :func:`mixed`);
    any other reads :meth:`dense`."""

    image: torch.Tensor
    base: LinearMap
    size: tuple[int, int]
    spatial = False
    placed = True
    stride = (1, 1)
    offset = (0, 0)
    dilation = (1, 1)
    boxes = ()

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.image), self.base.kernel.shape[1], *self.size)

    def rows(self, first: int, stop: int) -> torch.Tensor:
        """Rows ``first`` to ``stop`` of the placed kernel: ``[rows, source channels, *size]``."""
        base, image = self.base, self.image[first:stop]
        kernel = base.kernel
        # value[c, y, x] reads src[y*s + o + i]: the transpose spreads each output's weights back
        (oy, ox), (sy, sx) = base.offset, base.stride
        h, w = (image.shape[2] - 1) * sy + kernel.shape[2], (image.shape[3] - 1) * sx + kernel.shape[3]
        y0, x0 = max(0, oy), max(0, ox)
        y1, x1 = min(self.size[0], oy + h), min(self.size[1], ox + w)
        covered = (y0, x0, y1, x1) == (0, 0, *self.size)
        result = (kernel.new_empty if covered else kernel.new_zeros)(len(image), kernel.shape[1], *self.size)
        if y1 <= y0 or x1 <= x0:
            return result
        picked, taps = self._channel_taps
        block = max(1, PLACED_BLOCK // (kernel.shape[1] * image[0, 0].numel() if picked is not None
                                        else image[0].numel()))
        for start in range(0, len(image), block):
            rows = image[start : start + block]
            if picked is not None:  # spread channel by channel, not through a matrix over channels
                spread = F.conv_transpose2d(rows[:, picked], taps, stride=base.stride, groups=len(picked))
            else:
                spread = F.conv_transpose2d(rows, kernel, stride=base.stride)
            result[start : start + len(rows), :, y0:y1, x0:x1] = spread[:, :, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        return result

    def dense(self) -> LinearMap:
        return LinearMap(self.rows(0, len(self.image)), spatial=False, placed=True)

    @cached_property
    def _channel_taps(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Where every source channel of the base map is read by one channel of the node only (the
        map of a pool or a per-channel scale): that channel per source channel, and its taps
        ``[source channels, 1, kh, kw]``; (None, None) otherwise."""
        kernel = self.base.kernel
        reached = kernel.abs().sum(dim=(2, 3)) > 0
        if not bool((reached.sum(dim=0) == 1).all()):
            return None, None
        picked = reached.to(torch.int8).argmax(dim=0)
        return picked, kernel[picked, torch.arange(len(picked))][:, None]


def placed(r: Rearranged, weight: torch.Tensor, source: tuple[int, int]) -> LinearMap | Placed:
    """A linear layer ``weight [out, features]`` reading a flattened node: per output, a map
    over the source layer's positions (``source``: its height and width), held unspread."""
    out = weight.shape[0]
    if r.positions is None and torch.equal(r.elements.reshape(-1), torch.arange(r.elements.numel())):
        image = weight.reshape(out, *r.grid)  # flattened in order: the weight itself, no copy
    else:
        per_position = weight.new_zeros(out, r.shape[0] * r.shape[1] * r.shape[2])
        per_position.index_add_(1, r.elements.reshape(-1), weight.to(per_position.dtype))
        per_position = per_position.reshape(out, r.shape[0], r.shape[1] * r.shape[2])
        if r.positions is not None:
            per_position = per_position @ r.positions.to(per_position.dtype)
        image = per_position.reshape(out, *r.grid)
    base = settled(r.base)
    if not base.spatial:
        return mixed(base, image.sum(dim=(2, 3)))
    return Placed(image.to(base.kernel.dtype), base, tuple(source))
