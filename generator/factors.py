"""Factorised views of weights: non-negative matrix factorisation (NMF).

*One-sided NMF of a unit* (the article's picture of a neuron's weights): the unit's input
weights ``W[inputs, kh, kw]`` are read as a ``[kh*kw, inputs]`` matrix, their signs are
split into ``[relu(W), relu(-W)]`` (``2 * inputs`` non-negative features), and three
factors are fitted. Each factor is a spatial map (where in the kernel) times a
direction over inputs (which units, excited or inhibited); the three maps become the red,
green and blue of one small picture.

An atlas has thousands of units, each a small matrix: scikit-learn's NMF takes about 0.1 s
for one InceptionV1 unit (25 x 1,664), 20 minutes for the model. So :func:`unit_factors`
fits all of a layer's units at once with batched hierarchical alternating least squares
(HALS, the coordinate-descent updates scikit-learn's NMF also uses) in torch, first on
each unit's strongest inputs, then on all of them. The tests hold it to scikit-learn's NMF
on the same matrices.

*Factors of a group* (:func:`group_factors`): the expanded weights of a family of units,
stacked with samples = unit x sign x position and features = input units, factorised with
scikit-learn's NMF. Each factor is a direction over input units; each member gets a signed
map per factor.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch

from .expanded import LayerWeights, per_kernel
from .ranking import kernel_peak, strongest

COMPONENTS = 3  # a unit's factors: red, green, blue
ITERATIONS = 60  # at most; fits stop once the mean explained share gains less than TOLERANCE a step
MIN_ITERATIONS = 8
TOLERANCE = 2e-4
LEADING = 96  # a unit's strongest columns (input units and signs) its spatial factors are first fitted on
REFINING = 1  # rounds over all columns after that
CHUNK_BYTES = 16 * 2**20  # the largest batch of units' matrices fitted at once (per thread)
EPS = 1e-12
FACTOR_INPUTS = 6  # a factor's strongest inputs kept, and listed on its unit's page
SHOWN_INPUTS = 3  # of those, the ones a unit page can show as cards beside the unit's listed inputs


@dataclass(frozen=True)
class Source:
    """The columns of one input layer in a unit's factor directions."""

    layer: str
    start: int  # first column among the excitatory half; inhibitory ones are ``inputs`` later
    stop: int


@dataclass(frozen=True)
class LayerFactors:
    """The three factors of every unit of one layer, reading ``sources``.

    ``spatial[u, c]`` is factor ``c``'s map over the kernel window, ``channels[u, c]`` its
    direction over inputs: the first ``inputs`` columns are excitation (``relu(W)``), the next
    ``inputs`` inhibition (``relu(-W)``). ``spatial[u, c] (x) channels[u, c]`` summed over
    ``c`` approximates the unit's split weights. ``explained[u]`` is the share of their
    squared L2 norm that approximation reproduces, ``shares[u, c]`` factor ``c``'s share of
    the approximation's total weight (they sum to one).

    Pages read only a summary of the directions, made with them (:meth:`of`): each one's
    length, its :data:`FACTOR_INPUTS` strongest columns, and per input the factor it
    contributes most to. The directions themselves (as large as the layer's weights over its
    kernel's size) can then be let go: :meth:`without_channels`.
    """

    layer: str
    sources: tuple[Source, ...]
    spatial: np.ndarray  # [units, 3, kh, kw], each map's largest value is 1
    explained: np.ndarray  # [units]
    shares: np.ndarray  # [units, 3]
    strength: np.ndarray  # [units, 3]: the L2 norm of each direction
    strongest: np.ndarray  # [units, 3, FACTOR_INPUTS]: each direction's strongest columns, strongest first
    coefficients: np.ndarray  # [units, 3, FACTOR_INPUTS]: their values
    dominant_factor: np.ndarray  # int8 [units, inputs]: the factor each input contributes most to
    channels: np.ndarray | None = None  # [units, 3, 2 * inputs]; None once let go

    @classmethod
    def of(cls, layer: str, sources: tuple[Source, ...], spatial: np.ndarray, channels: np.ndarray,
           explained: np.ndarray, shares: np.ndarray) -> LayerFactors:
        units, factors, columns = channels.shape
        strongest_columns = strongest(channels.reshape(-1, columns), FACTOR_INPUTS).reshape(units, factors, -1)
        inputs = columns // 2
        both = channels[:, :, :inputs] + channels[:, :, inputs:]  # each input's excitation and inhibition
        both *= spatial.reshape(units, factors, -1).sum(axis=2)[:, :, None]  # times each map's total weight
        strength = np.sqrt(np.einsum("ucn,ucn->uc", channels, channels))
        return cls(layer, sources, spatial, explained, shares, strength, strongest_columns,
                   np.take_along_axis(channels, strongest_columns, axis=2), _first_largest(both), channels)

    def without_channels(self) -> LayerFactors:
        return replace(self, channels=None)

    @property
    def inputs(self) -> int:
        return self.sources[-1].stop if self.sources else 0

    def source_of(self, column: int) -> tuple[str, int, int]:
        """``(layer, unit, sign)`` of a column of ``channels``."""
        sign = 1 if column < self.inputs else -1
        column %= self.inputs
        source = next(s for s in self.sources if s.start <= column < s.stop)
        return source.layer, column - source.start, sign

    def picture(self, unit: int) -> np.ndarray:
        """``[kh, kw, 3]`` in [0, 1]: each factor's map, weighted by its strength, as red, green, blue."""
        loadings = self.spatial[unit] * self.strength[unit][:, None, None]
        top = loadings.max()
        return np.moveaxis(loadings / top if top > 0 else loadings, 0, -1)

    def top_inputs(self, unit: int, factor: int, count: int) -> list[tuple[str, int, int, float]]:
        """The ``count`` (at most :data:`FACTOR_INPUTS`) strongest inputs of a factor: ``(layer,
        unit, sign, coefficient)``, the coefficient relative to the factor's strongest."""
        if count > self.strongest.shape[2]:
            raise ValueError(f"{count} inputs asked of a factor; {self.strongest.shape[2]} are kept (FACTOR_INPUTS)")
        order, values = self.strongest[unit, factor, :count], self.coefficients[unit, factor, :count]
        order, values = order[values > 0], values[values > 0]
        if not len(order):
            return []
        return [(*self.source_of(j), value) for j, value in zip(order.tolist(), (values / values[0]).tolist())]

    def shown_inputs(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Per source layer, ``(units, source units)``: the :data:`SHOWN_INPUTS` strongest inputs
        of every unit's every factor, as :meth:`top_inputs` picks them."""
        units, factors, _ = self.strongest.shape
        rows = np.repeat(np.arange(units), factors * SHOWN_INPUTS)
        picked = self.strongest[:, :, :SHOWN_INPUTS].reshape(-1) % self.inputs
        return {s.layer: (rows[inside], picked[inside] - s.start)
                for s in self.sources if (inside := (picked >= s.start) & (picked < s.stop)).any()}

    def dominant(self, unit: int) -> np.ndarray:
        """Per input (over all sources), the factor it contributes most to: ``[inputs]``."""
        return self.dominant_factor[unit]


def _strongest(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the ``count`` largest ``values``, largest first (ties: lower index first)."""
    return strongest(values[None], count)[0]


def _centred(kernel: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``kernel [o, i, h, w]`` zero-padded to ``size``, centred (kernels are centred windows)."""
    h, w = kernel.shape[2:]
    top, left = (size[0] - h) // 2, (size[1] - w) // 2
    return np.pad(kernel, ((0, 0), (0, 0), (top, size[0] - h - top), (left, size[1] - w - left)))


def unit_factors(weights: list[LayerWeights]) -> dict[str, LayerFactors]:
    """Per layer with inputs from other browsed layers, every unit's three factors
    (:func:`layer_factors`)."""
    readers: dict[str, list[LayerWeights]] = {}
    for w in weights:
        readers.setdefault(w.dst, []).append(w)
    found = {dst: layer_factors(parts) for dst, parts in readers.items()}
    return {dst: factors for dst, factors in found.items() if factors is not None}


def layer_factors(weights: list[LayerWeights], unit_scale: np.ndarray | None = None) -> LayerFactors | None:
    """Every unit's three factors in the layer ``weights`` lead into, from all the browsed
    layers it reads (``weights`` may hold others, such as further hops, which are passed over).
    ``unit_scale``: each unit's largest absolute weight over those inputs, when known
    (:class:`generator.ranking.KernelStatistics`), else read here.

    A unit reading several layers is factorised over all of them together, their kernels
    padded to the largest window. Units reading only the image, or with one-pixel kernels
    (nothing spatial to show), get none (None).
    """
    parts = [w for w in weights if w.hops == 1 and w.src is not None]
    if not parts:
        return None
    size = (max(p.kernel.shape[2] for p in parts), max(p.kernel.shape[3] for p in parts))
    if size == (1, 1):
        return None
    sources, start = [], 0
    for p in parts:
        sources.append(Source(p.src, start, start + p.kernel.shape[1]))
        start += p.kernel.shape[1]
    # Each unit's kernels scaled to a largest weight of 1: NMF does not care, and float32
    # squares of weights as large as 1e20 would overflow. Scaled a batch at a time, as fitted.
    if unit_scale is None:
        unit_scale = np.max([per_kernel(p.kernel, kernel_peak, np.float32).max(axis=1) for p in parts], axis=0)
    unit_scale = unit_scale.astype(np.float64)
    unit_scale = np.where(unit_scale > 0, unit_scale, 1)

    def rows(start: int, stop: int) -> np.ndarray:
        block = np.concatenate([_centred(p.kernel[start:stop], size) for p in parts], axis=1) \
            if len(parts) > 1 else parts[0].kernel[start:stop]
        return block / unit_scale[start:stop, None, None, None].astype(np.float32)

    spatial, channels, explained = fit_units(rows, len(unit_scale), sources[-1].stop, size)
    # A layer's directions are as large as its weights over positions, which may be near float32's
    # largest: scaled in float64 (the summary the pages read is made of them, then they go).
    channels = channels.astype(np.float64)
    channels *= unit_scale[:, None, None]
    total = spatial.sum(axis=1)[:, :, None] * channels.sum(axis=2, keepdims=True)  # each factor's total weight
    total = total[:, :, 0]
    shares = total / np.where(total.sum(axis=1, keepdims=True) > 0, total.sum(axis=1, keepdims=True), 1)
    peak = spatial.max(axis=1, keepdims=True)  # each map scaled to a largest value of 1, its direction up
    peak = np.where(peak > 0, peak, 1)
    channels *= peak.transpose(0, 2, 1)
    return LayerFactors.of(parts[0].dst, tuple(sources),
                           np.ascontiguousarray((spatial / peak).transpose(0, 2, 1)).reshape(
                               len(unit_scale), COMPONENTS, *size),
                           channels, explained, shares)


def _first_largest(values: np.ndarray) -> np.ndarray:
    """int8 ``[a, c]``: along the middle axis of ``values [a, factors, c]``, where the largest is
    (the first of equals), as ``np.argmax(values, axis=1)``, which over a short middle axis took
    1.7 times as long as these comparisons."""
    found = np.zeros((values.shape[0], values.shape[2]), dtype=np.int8)
    best = values[:, 0].copy()
    for factor in range(1, values.shape[1]):
        found[values[:, factor] > best] = factor
        np.maximum(best, values[:, factor], out=best)
    return found


def fit_units(rows, units: int, inputs: int, size: tuple[int, int],
              iterations: int = ITERATIONS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NMF with three factors of each of ``units`` units' kernels, ``rows(start, stop)`` giving
    those of units ``start`` to ``stop`` (``[units, inputs, *size]``, float32), signs split
    (excitation, then inhibition): ``P = kh*kw`` positions by ``N = 2 * inputs`` features. The
    units are fitted a batch at a time, so only a batch's matrices are ever held.

    Returns ``spatial [U, P, 3]``, ``channels [U, 3, N]`` and the explained share ``[U]``.
    """
    positions = size[0] * size[1]
    chunk = max(1, min(CHUNK_BYTES // max(1, positions * inputs * 8), -(-units // torch.get_num_threads())))

    spatial = np.empty((units, positions, COMPONENTS), dtype=np.float32)
    channels = np.empty((units, COMPONENTS, 2 * inputs), dtype=np.float32)
    explained = np.empty(units, dtype=np.float32)

    def fit(start: int) -> None:
        part = torch.from_numpy(rows(start, start + chunk)).reshape(-1, inputs, positions)
        part = part.transpose(1, 2).contiguous()  # [units, positions, inputs]
        x = part.new_empty(*part.shape[:2], 2 * inputs)
        torch.clamp(part, min=0, out=x[:, :, :inputs])
        torch.clamp(part.neg_(), min=0, out=x[:, :, inputs:])
        del part
        stop = start + len(x)
        spatial[start:stop], channels[start:stop], explained[start:stop] = _hals(x, iterations)

    # torch runs one batched product on one core; chunks on threads use them all
    with ThreadPoolExecutor(torch.get_num_threads()) as pool:
        list(pool.map(fit, range(0, units, chunk)))
    return spatial, channels, explained


@torch.no_grad()
def _hals(x: torch.Tensor, iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batched HALS of ``x [U, P, N]``.

    The spatial factors are fitted first on each unit's ``LEADING`` strongest columns (most of
    the weight of a trained unit, and a small fraction of the work), then refined on all
    columns for ``REFINING`` rounds; every round reads ``x`` twice. The explained share is
    exact for the whole of ``x``.
    """
    columns = min(LEADING, x.shape[2])
    # columns by squared L2 norm over positions (torch's vector_norm over a middle axis is 15x slower)
    leading = torch.topk(x.square().sum(dim=1), columns, dim=1, sorted=False).indices  # [U, columns]
    spatial, _ = _fit(x.gather(2, leading[:, None, :].expand(-1, x.shape[1], -1)), iterations)
    norm = torch.linalg.vector_norm(x, dim=(1, 2)).double() ** 2
    channels = x.new_zeros(x.shape[0], COMPONENTS, x.shape[2])
    for _ in range(REFINING):
        channels = _update_channels(spatial, spatial.transpose(1, 2) @ x, channels)
        a, b = x @ channels.transpose(1, 2), channels @ channels.transpose(1, 2)
        spatial = _update_spatial(spatial, a, b)
    channels = _update_channels(spatial, spatial.transpose(1, 2) @ x, channels)
    a, b = x @ channels.transpose(1, 2), channels @ channels.transpose(1, 2)
    explained = torch.where(norm > 0, 1 - _error(spatial, a, b, norm) / norm.clamp(min=EPS), torch.zeros_like(norm))
    return spatial.numpy(), channels.numpy(), explained.float().numpy()


def _fit(x: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HALS from a deterministic start (the spatial maps of all of a unit's weight, of its
    excitation and of its inhibition) until the mean explained share gains less than
    ``TOLERANCE`` a step."""
    half = x.shape[2] // 2
    probes = x.new_zeros(x.shape[2], COMPONENTS)
    probes[:, 0], probes[:half, 1], probes[half:, 2] = 1, 1, 1
    spatial = x @ probes / x.shape[2] + EPS  # [U, P, 3]
    channels = x.new_zeros(x.shape[0], COMPONENTS, x.shape[2])
    norm = (x**2).sum(dim=(1, 2)).double()
    previous = 0.0
    for step in range(iterations):
        channels = _update_channels(spatial, spatial.transpose(1, 2) @ x, channels)
        a, b = x @ channels.transpose(1, 2), channels @ channels.transpose(1, 2)
        spatial = _update_spatial(spatial, a, b)
        now = float((1 - _error(spatial, a, b, norm) / norm.clamp(min=EPS)).mean())
        if step + 1 >= MIN_ITERATIONS and now - previous < TOLERANCE:
            break
        previous = now
    return spatial, channels


def _update_channels(spatial: torch.Tensor, a: torch.Tensor, channels: torch.Tensor, sweeps: int = 2) -> torch.Tensor:
    """HALS sweeps over the channel factors, given ``a = S^T x``: no pass over ``x`` itself."""
    b = spatial.transpose(1, 2) @ spatial  # [U, k, k]
    channels = channels.clone()
    for _ in range(sweeps):
        for c in range(COMPONENTS):
            step = (a[:, c] - (b[:, c:c + 1] @ channels)[:, 0]) / b[:, c, c, None].clamp(min=EPS)
            channels[:, c] = (channels[:, c] + step).clamp(min=0)
    return channels


def _update_spatial(spatial: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One HALS sweep over the spatial factors, given ``a = x F^T`` and ``b = F F^T``."""
    spatial = spatial.clone()
    for c in range(COMPONENTS):
        step = (a[:, :, c] - (spatial @ b[:, :, c:c + 1])[:, :, 0]) / b[:, c, c, None].clamp(min=EPS)
        spatial[:, :, c] = (spatial[:, :, c] + step).clamp(min=0)
    return spatial


def _error(spatial: torch.Tensor, a: torch.Tensor, b: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """``|x - S F|^2 = |x|^2 - 2 <S, x F^T> + <S^T S, F F^T>``, from ``a = x F^T``, ``b = F F^T``."""
    s, a, b = spatial.double(), a.double(), b.double()
    return (norm - 2 * (s * a).sum(dim=(1, 2)) + ((s.transpose(1, 2) @ s) * b).sum(dim=(1, 2))).clamp(min=0)


@dataclass(frozen=True)
class GroupFactors:
    """The factors of a group of units of one layer, over the input units of ``sources``.

    ``directions[c]`` is factor ``c`` over input columns; ``maps[m, c]`` is member ``m``'s
    signed map for factor ``c`` (excitation minus inhibition). ``explained``: the share of the
    stacked weights' squared norm the factors reproduce.
    """

    layer: str
    family: str
    members: tuple[int, ...]
    sources: tuple[Source, ...]
    directions: np.ndarray  # [factors, inputs], non-negative
    maps: np.ndarray  # [members, factors, kh, kw]
    explained: float

    def top_inputs(self, factor: int, count: int) -> list[tuple[str, int, float]]:
        """A factor's strongest input units: ``(layer, unit, coefficient)``, relative to the strongest."""
        direction = self.directions[factor]
        order = _strongest(direction, count)
        peak = direction[order[0]]
        chosen = []
        for j in order:
            if direction[j] <= 0:
                break
            source = next(s for s in self.sources if s.start <= j < s.stop)
            chosen.append((source.layer, int(j) - source.start, float(direction[j] / peak)))
        return chosen


def group_factors(weights: list[LayerWeights], layer: str, family: str, members: list[int],
                  factors: int = 4) -> GroupFactors:
    """NMF (scikit-learn) of the stacked weights of the ``members`` of ``family`` in ``layer``
    from the layers it reads."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits

    parts = [w for w in weights if w.dst == layer and w.hops == 1 and w.src is not None]
    if not parts:
        raise ValueError(f"{layer} reads no other browsed layer")
    size = (max(p.kernel.shape[2] for p in parts), max(p.kernel.shape[3] for p in parts))
    sources, start = [], 0
    for p in parts:
        sources.append(Source(p.src, start, start + p.kernel.shape[1]))
        start += p.kernel.shape[1]
    kernels = np.concatenate([_centred(p.kernel[members], size) for p in parts], axis=1)  # [m, I, kh, kw]
    samples = kernels.reshape(len(members), start, -1).transpose(0, 2, 1)  # [m, P, I]
    stacked = np.stack([np.maximum(samples, 0), np.maximum(-samples, 0)], axis=1)  # [m, 2, P, I]
    x = stacked.reshape(-1, start).astype(np.float64)
    factors = max(1, min(factors, *x.shape))
    # Small matrices: BLAS threads cost more than they give (9x slower on 2 busy cores).
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NMF(factors, init="nndsvda", max_iter=400, random_state=0)
        loadings = model.fit_transform(x)
    directions = model.components_
    norm = float((x**2).sum())
    explained = 1 - float(((x - loadings @ directions) ** 2).sum()) / norm if norm > 0 else 0.0
    loadings = loadings.reshape(len(members), 2, size[0] * size[1], factors)
    maps = (loadings[:, 0] - loadings[:, 1]).transpose(0, 2, 1).reshape(len(members), factors, *size)
    return GroupFactors(layer, family, tuple(members), tuple(sources), directions, maps, explained)
