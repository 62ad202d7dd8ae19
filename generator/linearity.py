"""How far each expanded weight holds: the measured effect of one unit on another.

An expanded weight is the map between two layers of the *linearised* network (ReLU as the
identity, max-pooling as average pooling). The *measured effect* of a source unit on a
destination unit is what the real network does: the mean, over images, of the gradient of
the destination unit's input (its value before its own activation: the weights lead there)
with respect to the source unit's activations, through the real ReLUs, max-pools and norms
between them, over the same window of source positions as the expanded kernel. Two figures compare them, per connection:

- **cosine**: the cosine similarity of the two kernels. Near 1, the expanded weight shows
  the spatial pattern through which the source acts; below :data:`MARK` (0.5) the linear
  view misleads (a ReLU that never opens, a max-pool that picks one position, paths that
  cancel), and the connection's card is marked.
- **ratio**: the measured effect's L2 norm over the expanded weight's. A ReLU open half the
  time passes about half.

Each destination unit's gradient is taken at one position whose window lies inside the
source map. Units measured in one backward pass sit at positions whose windows do not
overlap, so each window holds one unit's gradient only; from one batch of images to the
next the units move to other positions, so each unit is averaged over images and places.
Between adjacent layers the other browsed layers are held at their values, as the expanded
weights hold them. Images are the dataset's first :data:`IMAGES` (or noise, without a
dataset). Effects are jobs of the build's engine and are kept in the cache under the key
of the weights, the images and :data:`ALGORITHM`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save

from .config import AtlasConfig
from .dataset_examples import first_images
from .engines import Engine, Work, Worker, opened
from .expanded import KeptKernels, LayerWeights
from .files import atomic_write
from .graph import LayerGraph
from .network import TracedNetwork, ancestors

log = logging.getLogger("weight_atlas")

ALGORITHM = 1  # raise when a change here changes the effects measured
IMAGES = 32  # dataset images the effects are averaged over
BATCH = 8  # images per forward pass on a CPU
MARK = 0.5  # a connection whose cosine is below this is marked: its expanded weight misleads
HOLDS = 0.8  # a cosine of at least this: the expanded weight holds (the share the layer pages count)


class Pair(NamedTuple):
    """What a job needs to know of one pair of layers: its names and its kernels' window
    (see :class:`generator.expanded.LayerWeights`)."""

    src: str
    dst: str
    hops: int
    shape: tuple[int, int, int, int]  # the kernel's: [dst units, src units, kh, kw]
    stride: tuple[int, int]
    offset: tuple[int, int]
    spatial: bool
    placed: bool

    @classmethod
    def of(cls, w: LayerWeights) -> Pair:
        return cls(w.src, w.dst, w.hops, tuple(w.kernel.shape), w.stride, w.offset, w.spatial, w.placed)

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}" + (f" ({self.hops} layers apart)" if self.hops > 1 else "")


@dataclass(frozen=True)
class Effects:
    """The measured effects between one pair of layers and how they compare with its expanded
    weights: ``effect`` is shaped like the kernel, ``cosine`` and ``ratio`` are ``[dst units, src units]``."""

    effect: np.ndarray
    cosine: np.ndarray
    ratio: np.ndarray


@dataclass(frozen=True)
class Linearity:
    """Every measured pair, by ``(src, dst, hops)``, and what the effects were averaged over."""

    pairs: dict[tuple[str, str, int], Effects]
    images: str  # such as "the first 32 dataset images"

    def of(self, w: LayerWeights) -> Effects | None:
        return self.pairs.get((w.src, w.dst, w.hops))


def compared(effect: np.ndarray, kernel: np.ndarray | KeptKernels) -> tuple[np.ndarray, np.ndarray]:
    """Per kernel, the cosine of ``effect`` and ``kernel`` and the ratio of their L2 norms; a
    kernel or effect of zero has cosine 0 (and ratio 0 over a zero kernel). Of kept kernels,
    only those are compared (the others' figures are 0). Sums run in the kernels' float32:
    each is over one kernel's positions only, and float64 made this 25x slower."""
    if isinstance(kernel, KeptKernels):
        cosine, ratio = (np.zeros(kernel.shape[:2], dtype=np.float32) for _ in range(2))
        kept = effect[kernel.rows, kernel.columns]
        cosine[kernel.rows, kernel.columns], ratio[kernel.rows, kernel.columns] = (
            figure[:, 0] for figure in compared(kept[:, None], kernel.kernels[:, None]))
        return cosine, ratio
    e, k = effect.reshape(*effect.shape[:2], -1), kernel.reshape(*kernel.shape[:2], -1)
    dot = np.einsum("oip,oip->oi", e, k)
    ne = np.sqrt(np.einsum("oip,oip->oi", e, e))
    nk = np.sqrt(np.einsum("oip,oip->oi", k, k))
    both = (ne > 0) & (nk > 0)
    cosine = np.where(both, dot / np.where(both, ne * nk, 1), 0.0)
    ratio = np.where(nk > 0, ne / np.where(nk > 0, nk, 1), 0.0)
    return cosine.astype(np.float32), ratio.astype(np.float32)


# -- measuring ---------------------------------------------------------------------------------
def _rows(size: int, stride: int, offset: int, extent: int, positions: int) -> list[int]:
    """Destination rows (or columns) whose windows lie inside a source map of ``size`` and do
    not overlap each other, the middle one first; the middle row alone when no window fits."""
    fits = [y for y in range(positions) if y * stride + offset >= 0 and y * stride + offset + extent <= size]
    middle = positions // 2
    if not fits:
        return [middle]
    centre = min(fits, key=lambda y: (abs(y - middle), y))
    step = -(-extent // stride)  # windows step*stride apart do not overlap
    return sorted((y for y in fits if (y - centre) % step == 0), key=lambda y: (abs(y - centre), y))


def _forward(network: TracedNetwork, source, target, held: frozenset, images: torch.Tensor):
    """The source layer's value on ``images`` as a leaf that takes gradients, and the target
    layer's value before its own activation, computed from the leaf through the real network
    (``held`` nodes keep their values): as ``(first unit, value)`` per part of it (a mixed
    layer's branches, before their activations), the value None where a part does not read the
    source. A unit's gradient is taken from its own part, so it passes through its branch only."""
    attributes = network.attributes()
    before = network.before_activation(target)
    parts, dim = before if isinstance(before, tuple) else ((before,), 1)
    needed = set(parts).union(*(ancestors(p, lambda n: n.all_input_nodes) for p in parts))
    live, computed = [source], {source}  # the nodes that depend on the source, in order: computed again, from the leaf
    for node in network.graph.nodes:
        if node in needed and node not in computed and node not in held and \
                any(p in computed for p in node.all_input_nodes):
            live.append(node)
            computed.add(node)
    values = network.evaluate(images, keep={source} | {p for n in live[1:] for p in n.all_input_nodes} - computed)
    leaf = values[source] = values[source].detach().requires_grad_(True)
    with torch.enable_grad():
        for node in live[1:]:
            values[node] = network.run(node, values, attributes)
    found, start = [], 0
    for part in parts:
        found.append((start, values[part] if part in computed else None))
        start += network.values[part].shape[dim]
    return leaf, found


def measured_effect(network: TracedNetwork, graph: LayerGraph, pair: Pair, images: torch.Tensor,
                    batch: int | None = None) -> np.ndarray:
    """The mean gradient of each unit of ``pair.dst`` with respect to ``pair.src``, over
    ``images`` (as the model reads them), on the window of the pair's kernels: shaped like them.
    ``batch``: images per forward pass (default :data:`BATCH` on a CPU, all of them on a GPU)."""
    batch = batch or (BATCH if images.device.type == "cpu" else len(images))
    source, target = network.node(graph.values[pair.src]), network.node(graph.values[pair.dst])
    held = frozenset(network.node(n) for n in graph.values.values()) - {source, target} if pair.hops == 1 \
        else frozenset()
    units, _, kh, kw = pair.shape
    effect = torch.zeros(pair.shape, dtype=torch.float64, device=images.device)
    for number, first in enumerate(range(0, len(images), batch)):
        leaf, parts = _forward(network, source, target, held, images[first : first + batch])
        for start, out in parts:
            if out is None or not out.requires_grad:
                continue  # the real network does not pass the source on to this part
            count = out.shape[1]
            if not pair.spatial:
                for unit in range(count):
                    grad = torch.autograd.grad(out[:, unit].sum(), leaf, retain_graph=True)[0].sum(0).double()
                    effect[start + unit] += grad.reshape(pair.shape[1:]) if pair.placed else \
                        grad.reshape(len(grad), -1).sum(dim=1)[:, None, None]  # every position of a source unit
                continue
            (sy, sx), (oy, ox) = pair.stride, pair.offset
            height, width = leaf.shape[2:]
            places = [(y, x) for y in _rows(height, sy, oy, kh, out.shape[2])
                      for x in _rows(width, sx, ox, kw, out.shape[3])]
            places.sort(key=lambda p: (abs(p[0] - out.shape[2] // 2) + abs(p[1] - out.shape[3] // 2), p))
            order = np.roll(np.arange(count), number)  # a unit's place moves from one batch to the next
            for step in range(0, count, len(places)):
                chosen = list(zip(order[step : step + len(places)].tolist(), places))
                total = sum(out[:, unit, y, x].sum() for unit, (y, x) in chosen)
                grad = torch.autograd.grad(total, leaf, retain_graph=True)[0].sum(0).double()
                grad = torch.nn.functional.pad(grad, (kw, kw, kh, kh))  # windows partly outside read zeros
                for unit, (y, x) in chosen:
                    top, left = y * sy + oy + kh, x * sx + ox + kw
                    effect[start + unit] += grad[:, top : top + kh, left : left + kw]
    return (effect / len(images)).float().cpu().numpy()


def effect_images(config: AtlasConfig, network: TracedNetwork, pixels: bool = True) -> tuple[torch.Tensor | None, str]:
    """The images effects are averaged over, as the model reads them, and their description:
    the dataset's first :data:`IMAGES`, or seeded noise without a dataset (``pixels``: see
    :func:`generator.dataset_examples.first_images`)."""
    return first_images(config, network.input_shape, IMAGES, pixels)


def _measure_on_worker(worker: Worker, item: tuple[AtlasConfig, Pair, torch.Tensor]) -> np.ndarray:
    """On a worker: the measured effect of one pair."""
    config, pair, images = item
    network, graph = worker.traced(config.input.shape)
    network.model.eval().requires_grad_(False).to(worker.device)
    return measured_effect(network, graph, pair, images.to(worker.device))


EFFECTS = Work("measured-effects", _measure_on_worker, lambda item: f"The measured effects of {item[1].name}",
               size=lambda item: item[1].shape[0], in_build=True)


# -- the cache ---------------------------------------------------------------------------------
class EffectCache:
    """One file per pair, under the key of the weights, the images and the algorithm."""

    def __init__(self, root: str | Path, key: dict[str, Any]):
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        self.folder = Path(root) / "effects" / key["weights"][:16] / digest[:16]
        self.key = digest

    def _path(self, pair: Pair) -> Path:
        name = hashlib.sha256(f"{pair.src}\n{pair.dst}\n{pair.hops}".encode()).hexdigest()[:16]
        return self.folder / f"{name}.safetensors"

    def get(self, pair: Pair) -> np.ndarray | None:
        """The pair's effect, when a whole and matching one is kept; a damaged file is removed."""
        path = self._path(pair)
        if not path.exists():
            return None
        read = read_effect(path)
        if not isinstance(read, str) and read[1] == self._record(pair) and read[0].shape == pair.shape:
            return read[0]
        log.warning("removed a damaged measured effect from the cache: %s", path)
        path.unlink(missing_ok=True)
        return None

    def put(self, pair: Pair, effect: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(self._path(pair), save({"effect": np.ascontiguousarray(effect, dtype=np.float32)},
                                            metadata={"record": self._record(pair)}))

    def _record(self, pair: Pair) -> str:
        """What a file says it holds: the key and the pair (one metadata entry, so the bytes do
        not depend on the order safetensors writes entries in)."""
        return json.dumps({"key": self.key, "pair": [pair.src, pair.dst, pair.hops]}, sort_keys=True)


def read_effect(path: Path) -> tuple[np.ndarray, str] | str:
    """A cached effect and the record it carries, or what is wrong with the file."""
    try:
        with safe_open(path, "numpy") as file:
            effect, record = file.get_tensor("effect"), (file.metadata() or {}).get("record")
        json.loads(record)
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as error:
        return f"not a whole measured effect ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    if effect.dtype != np.float32 or effect.ndim != 4 or not np.isfinite(effect).all():
        return "its numbers are not finite float32 kernels"
    return effect, record


def measure_linearity(config: AtlasConfig, network: TracedNetwork, graph: LayerGraph, weights: list[LayerWeights],
                      weights_key: str, engine: Engine | None = None) -> Linearity:
    """The measured effects of every pair between browsed layers (not from the image: a first
    layer's kernel is its effect), from the cache or made on ``engine``."""
    images, description = effect_images(config, network, pixels=False)
    key = {"algorithm": ALGORITHM, "weights": weights_key, "model": config.model.source,
           "input": dataclasses.asdict(config.input), "images": description,
           "dataset": dataclasses.asdict(config.dataset)}
    cache = EffectCache(config.cache, key)
    chosen = [w for w in weights if w.src is not None]
    effects = {Pair.of(w): cache.get(Pair.of(w)) for w in chosen}
    missing = [pair for pair, effect in effects.items() if effect is None]
    if missing:
        if images is None:
            images, _ = effect_images(config, network)
        with opened(config, network, graph, engine) as engine:
            log.info("measured effects: %d pairs of layers over %s on %s", len(missing), description,
                     engine.where(EFFECTS, len(missing)))
            with closing(engine.run(EFFECTS, [(config, pair, images) for pair in missing], lambda count: None)) as done:
                for (_, pair, _), effect in done:
                    cache.put(pair, effect)
                    effects[pair] = effect
    else:
        log.info("measured effects: all %d pairs from the cache %s", len(chosen), cache.folder)
    pairs = {}
    for w in chosen:
        effect = effects[Pair.of(w)]
        pairs[(w.src, w.dst, w.hops)] = Effects(effect, *compared(effect, w.kernel))
    return Linearity(pairs, description)


def by_layer(units: dict, layers: list[str], linearity: Linearity) -> list[dict[str, Any]]:
    """Per layer, over every unit's listed inputs: how many were measured, the share whose
    expanded weight holds (cosine at least :data:`HOLDS`), the share marked (below :data:`MARK`),
    and the median cosine and ratio."""
    rows = []
    for layer in layers:
        figures = [(e.cosine[k.row, k.column], e.ratio[k.row, k.column])
                   for (name, _), weights in units.items() if name == layer for k in weights.inputs
                   if (e := linearity.of(k.weights)) is not None]
        if figures:
            cosine, ratio = np.array(figures).T
            rows.append({"layer": layer, "count": len(figures), "holds": float((cosine >= HOLDS).mean()),
                         "marked": float((cosine < MARK).mean()), "cosine": float(np.median(cosine)),
                         "ratio": float(np.median(ratio))})
    return rows
