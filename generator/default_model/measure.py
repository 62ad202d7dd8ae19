"""How legible the default model is, in numbers: ``python -m generator.default_model.measure``.

Five measurements, printed together by :func:`main` (``--json`` writes them to a file):

- **texture**: the median share of spectral power above half the Nyquist frequency in the
  units' positive feature visualisations, against the same median over training images
  (:func:`high_frequency_share`); a saturated high-frequency picture scores high;
- **firing**: the share of units whose largest activation on the procedural dataset
  images is above zero;
- **reach**: the share of firing units whose picture reaches at least their best dataset
  image on the picture's own objective (mean activation over positions);
- **curve units**: units whose response to arcs at 16 orientations peaks at one and stays
  above half the peak only within 45 degrees of it (the Curve Detectors article's probe,
  :mod:`.probes`), and which arcs drive: the best arc reaches at least :data:`STRONG` of
  the unit's largest activation on the dataset images; and the orientations they cover;
- **circuit**: for each curve unit of mixed3b, its 3 strongest inputs (by L2 norm of the
  expanded weights) among mixed3a's curve and line units, and whether they lie within 45
  degrees of its own orientation (a line's orientation read as the tangent at the middle
  of an arc: a line running at ``a`` matches curves facing ``a + 90`` and ``a - 90``).

Pictures are made by the atlas's own feature visualisation (:mod:`generator.featurevis`)
with the settings of an atlas config, so they are the pictures that atlas shows, and
dataset images are the atlas's procedural ones (:class:`generator.dataset_examples.ProceduralImages`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from generator.config import AtlasConfig, InputConfig, load_config
from generator.dataset_examples import ProceduralImages
from generator.expanded import layer_weights
from generator.featurevis.optimise import Job, model_for, render
from generator.featurevis.transforms import resized
from generator.graph import LayerGraph, trace_layers
from generator.images import Normalise
from generator.loading import load_weights, read_checkpoint
from generator.network import TracedNetwork
from generator.ranking import kernel_norms

from . import INPUT_SIZE, MEAN, STD, WEIGHTS, NarrowInceptionV1
from . import probes as P
from .procedural import draw

CONV_LAYERS = ("conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b")
CURVE_LAYERS = ("mixed3a", "mixed3b")
INPUT = InputConfig(channels=3, size=INPUT_SIZE, mean=MEAN, std=STD)
DEFAULT_CONFIG = Path(__file__).parents[2] / "site_config" / "default.yml"
# A probe drives a unit when its best image reaches this share of the unit's largest
# activation on the dataset images. A unit that answers arcs at a hundredth of what it gives
# the dataset is tuned to something else, however selective that faint answer is.
STRONG = 0.5


def high_frequency_share(images: torch.Tensor) -> torch.Tensor:
    """Per image ``[N, C, H, W]``: the share of its spectral power (each channel's mean
    removed, channels summed) at radial frequencies above half the Nyquist frequency, that
    is above 1/4 cycle per pixel."""
    h, w = images.shape[-2:]
    centred = images - images.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.rfft2(centred).abs().pow(2).sum(1)  # [N, H, W // 2 + 1]
    fy, fx = torch.fft.fftfreq(h)[:, None], torch.fft.rfftfreq(w)[None, :]
    weight = torch.full((h, w // 2 + 1), 2.0)  # an rfft column stands for two frequencies...
    weight[:, 0] = 1.0  # ...except the zero column,
    if w % 2 == 0:
        weight[:, -1] = 1.0  # and the Nyquist column of an even width
    high = (fx * fx + fy * fy).sqrt() > 0.25
    return (power * weight * high).sum((1, 2)) / (power * weight).sum((1, 2)).clamp_min(1e-12)


def load(checkpoint: str | Path = WEIGHTS) -> NarrowInceptionV1:
    """The default network with the weights of ``checkpoint``, its class count read from
    the checkpoint's ``classes`` metadata."""
    with safe_open(str(checkpoint), "pt") as stored:
        classes = json.loads((stored.metadata() or {}).get("classes", "[]"))
    model = NarrowInceptionV1(classes=len(classes)) if classes else NarrowInceptionV1()
    load_weights(model, read_checkpoint(checkpoint), str(checkpoint))
    return model.eval()


@dataclass
class DatasetResponses:
    """Per layer and unit, over the dataset images: the largest activation anywhere, and
    the largest mean activation over positions (the pictures' objective)."""

    peak: dict[str, torch.Tensor]
    best_mean: dict[str, torch.Tensor]


def dataset_responses(network: TracedNetwork, graph: LayerGraph, images: int = 4096,
                      seed: int = 0) -> DatasetResponses:
    """Responses of every unit of ``CONV_LAYERS`` to the atlas's procedural dataset images."""
    model = network.truncated([graph.values[name] for name in CONV_LAYERS]).eval()
    normalise = Normalise(INPUT)
    peak = {name: torch.full((graph.layer(name).channels,), -torch.inf) for name in CONV_LAYERS}
    best = {name: torch.full((graph.layer(name).channels,), -torch.inf) for name in CONV_LAYERS}
    with torch.no_grad():
        for _, batch in ProceduralImages(images, seed, INPUT_SIZE).batches(256):
            for name, value in zip(CONV_LAYERS, model(normalise(batch))):
                flat = value.flatten(2)
                peak[name] = torch.maximum(peak[name], flat.amax(2).amax(0))
                best[name] = torch.maximum(best[name], flat.mean(2).amax(0))
    return DatasetResponses(peak, best)


def pictures(network: TracedNetwork, graph: LayerGraph, config: AtlasConfig,
             layers: tuple[str, ...] = CONV_LAYERS, batch: int = 32) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: the positive feature visualisations of its units, ``[C, 3, S, S]`` in [0, 1] at
    the model's input size, and the objective each achieves ``[C]``, made as the atlas makes them."""
    found = {}
    for name in layers:
        model = model_for(network, graph, name, 1)
        images, objectives = [], []
        for start in range(0, graph.layer(name).channels, batch):
            units = tuple(range(start, min(start + batch, graph.layer(name).channels)))
            made = render(model, Job(name, units, 1), config.featurevis, config.input, torch.device("cpu"))
            images += [torch.from_numpy(p.image).permute(2, 0, 1).float() / 255 for p in made]
            objectives += [p.objective for p in made]
        found[name] = (resized(torch.stack(images), config.input.size), torch.tensor(objectives))
    return found


def probe_tuning(network: TracedNetwork, graph: LayerGraph,
                 layers: tuple[str, ...] = CONV_LAYERS) -> dict[str, dict[str, torch.Tensor]]:
    """Per layer and probe (:data:`.probes.PROBES`), each unit's tuning curve ``[C, values]``:
    its best response (largest activation over positions) to each of the probe's values."""
    model = network.truncated([graph.values[name] for name in layers]).eval()
    normalise = Normalise(INPUT)
    found: dict[str, dict[str, torch.Tensor]] = {name: {} for name in layers}
    with torch.no_grad():
        for probe_name, make in P.PROBES.items():
            probe = make(INPUT_SIZE)
            for name, value in zip(layers, model(normalise(probe.images))):
                found[name][probe_name] = P.tuning(value.flatten(2).amax(2).T, probe)
    return found


@dataclass
class Oriented:
    """Units selective for one orientation: their layer, index and preferred angle."""

    layer: str
    unit: int
    angle: float  # degrees: over 360 for a curve, 180 for a line


def selective_units(tuning: dict[str, dict[str, torch.Tensor]], probe: str, period: float,
                    peak: dict[str, torch.Tensor], layers: tuple[str, ...]) -> list[Oriented]:
    """Units of ``layers`` selective on ``probe`` (:func:`.probes.selective`, within an eighth
    of the ``period``: 45 degrees for arcs, 22.5 for lines) and driven by it: its best image
    reaches :data:`STRONG` of the unit's largest activation on the dataset images, ``peak``
    (per layer ``[C]``, :func:`dataset_responses`), which is above zero. By layer and unit."""
    found = []
    for name in layers:
        preferred, chosen = P.selective(tuning[name][probe], period, period / 8)
        chosen &= (peak[name] > 0) & (tuning[name][probe].amax(1) >= STRONG * peak[name])
        found += [Oriented(name, int(u), float(preferred[u])) for u in torch.nonzero(chosen).flatten()]
    return found


def curve_units(tuning, peak, layers: tuple[str, ...] = CURVE_LAYERS) -> list[Oriented]:
    """Curve units: selective on arcs over 360 degrees (response above half the peak only
    within 45 degrees of it, so never to the arc facing the other way), and driven by them."""
    return selective_units(tuning, "curve", 360.0, peak, layers)


def line_units(tuning, peak, layers: tuple[str, ...] = CURVE_LAYERS, curves: list[Oriented] = ()) -> list[Oriented]:
    """Line units: selective on straight lines over 180 degrees (above half the peak only
    within 22.5 degrees of it) and driven by them, responding to lines at least as much as
    to arcs, and not curve units."""
    taken = {(c.layer, c.unit) for c in curves}
    found = []
    for unit in selective_units(tuning, "line", 180.0, peak, layers):
        lines, arcs = tuning[unit.layer]["line"][unit.unit].max(), tuning[unit.layer]["curve"][unit.unit].max()
        if (unit.layer, unit.unit) not in taken and lines >= arcs:
            found.append(unit)
    return found


def mismatch(unit: Oriented, source: Oriented, source_is_line: bool) -> float:
    """Degrees between a curve unit's orientation and an input's (:func:`.probes.orientation_distance`)."""
    return P.orientation_distance(unit.angle, True, source.angle, not source_is_line)


def pair_weights(network: TracedNetwork, graph: LayerGraph, src: str, dst: str):
    """The expanded weights from ``src`` into the next layer ``dst``, and the L2 norm of each
    kernel ``[dst units, src units]``."""
    composed = layer_weights(network, graph, hops=1)
    index = next(i for i, w in enumerate(composed.weights) if (w.src, w.dst) == (src, dst))
    return composed.weights[index], kernel_norms(composed.weights)[index]


def circuit(network: TracedNetwork, graph: LayerGraph, curves: list[Oriented], lines: list[Oriented],
            src: str = "mixed3a", dst: str = "mixed3b", top: int = 3) -> list[dict]:
    """For every curve unit of ``dst``: its ``top`` strongest inputs (expanded-weight L2 norm)
    among the curve and line units of ``src``, with their orientation mismatch and net sign."""
    weights, norms = pair_weights(network, graph, src, dst)
    inputs = {u.unit: (u, False) for u in curves if u.layer == src}
    inputs.update({u.unit: (u, True) for u in lines if u.layer == src})
    candidates = torch.tensor(sorted(inputs))
    found = []
    for unit in (u for u in curves if u.layer == dst):
        if not len(candidates):
            break
        strength = torch.from_numpy(norms[unit.unit]).float()[candidates]
        chosen = candidates[strength.argsort(descending=True)[:top]].tolist()
        rows = []
        for c in chosen:
            source, is_line = inputs[c]
            rows.append({"unit": c, "kind": "line" if is_line else "curve", "angle": source.angle,
                         "l2": float(norms[unit.unit, c]), "sign": int(torch.sign(torch.tensor(
                             float(weights.kernel[unit.unit, c].sum())))),
                         "mismatch": mismatch(unit, source, is_line)})
        found.append({"unit": unit.unit, "angle": unit.angle, "inputs": rows,
                      "aligned": all(r["mismatch"] <= 45.0 for r in rows)})
    return found


def training_share(images: int = 1024, seed: int = 0) -> torch.Tensor:
    """:func:`high_frequency_share` of procedural training images."""
    return high_frequency_share(draw(images, INPUT_SIZE, torch.Generator().manual_seed(seed)).images)


def measure(checkpoint: str | Path, config: AtlasConfig) -> dict:
    """All five measurements of the model in ``checkpoint``, pictures made with ``config``'s settings."""
    start = time.time()
    network, graph = trace_layers(load(checkpoint), (3, INPUT_SIZE, INPUT_SIZE))
    data = dataset_responses(network, graph)
    made = pictures(network, graph, config)
    tuning = probe_tuning(network, graph)
    result: dict = {"checkpoint": str(checkpoint), "featurevis": {
        "steps": config.featurevis.steps, "learning_rate": config.featurevis.learning_rate,
        "size": config.featurevis.size, "transforms": vars(config.featurevis.transforms)}}

    train = training_share()
    shares = torch.cat([high_frequency_share(made[name][0]) for name in CONV_LAYERS])
    result["texture"] = {
        "pictures_median": float(shares.median()), "training_median": float(train.median()),
        "ratio": float(shares.median() / train.median()),
        "per_layer": {name: float(high_frequency_share(made[name][0]).median()) for name in CONV_LAYERS}}

    fired = {name: data.peak[name] > 0 for name in CONV_LAYERS}
    total = sum(len(f) for f in fired.values())
    result["firing"] = {"share": sum(int(f.sum()) for f in fired.values()) / total,
                        "per_layer": {name: float(f.float().mean()) for name, f in fired.items()}}

    reached = {name: (made[name][1] >= data.best_mean[name])[fired[name]] for name in CONV_LAYERS}
    result["reach"] = {"share": sum(int(r.sum()) for r in reached.values()) / max(1, sum(len(r) for r in reached.values())),
                       "per_layer": {name: float(r.float().mean()) for name, r in reached.items()}}

    curves = curve_units(tuning, data.peak, ("conv2d2", *CURVE_LAYERS))
    lines = line_units(tuning, data.peak, ("conv2d2", *CURVE_LAYERS), curves)
    deep = [c for c in curves if c.layer in CURVE_LAYERS]
    sectors = sorted({int(c.angle // 45) for c in deep})
    result["curves"] = {"count": len(deep), "sectors_of_45deg": sectors, "covers_all": len(sectors) == 8,
                        "units": [vars(c) for c in curves]}
    result["lines"] = {"count": len([u for u in lines if u.layer in CURVE_LAYERS]), "units": [vars(u) for u in lines]}

    rows = circuit(network, graph, curves, lines)
    aligned_inputs = [r["mismatch"] <= 45.0 for row in rows for r in row["inputs"]]
    excitatory = [r["mismatch"] <= 45.0 for row in rows for r in row["inputs"] if r["sign"] > 0]
    result["circuit"] = {"units": len(rows), "aligned_share": sum(r["aligned"] for r in rows) / max(1, len(rows)),
                         "aligned_input_share": sum(aligned_inputs) / max(1, len(aligned_inputs)),
                         "excitatory_input_aligned_share": sum(excitatory) / max(1, len(excitatory)),
                         "rows": rows}
    result["seconds"] = round(time.time() - start)
    return result


def report(result: dict) -> str:
    """The measurements as a few lines of text."""
    t, f, r, c, k = (result[key] for key in ("texture", "firing", "reach", "curves", "circuit"))
    lines = [
        f"texture: median high-frequency share of pictures {t['pictures_median']:.2%}, of training images "
        f"{t['training_median']:.2%}: {t['ratio']:.2f}x (target <= 1.5x); per layer "
        + ", ".join(f"{n} {v:.1%}" for n, v in t["per_layer"].items()),
        f"firing: {f['share']:.1%} of units fire on the dataset images (target >= 90%); per layer "
        + ", ".join(f"{n} {v:.0%}" for n, v in f["per_layer"].items()),
        f"reach: {r['share']:.1%} of firing units' pictures reach their best dataset image (target >= 95%); "
        "per layer " + ", ".join(f"{n} {v:.0%}" for n, v in r["per_layer"].items()),
        f"curve units in mixed3a/mixed3b: {c['count']} (target >= 8), 45-degree sectors covered "
        f"{c['sectors_of_45deg']}; " + ", ".join(f"{u['layer']} {u['unit']} ({u['angle']:g}deg)" for u in c["units"]),
        f"line units: {result['lines']['count']}; " + ", ".join(
            f"{u['layer']} {u['unit']} ({u['angle']:g}deg)" for u in result["lines"]["units"]),
        f"circuit: {k['aligned_share']:.0%} of {k['units']} mixed3b curve units have their top 3 mixed3a curve/line "
        f"inputs within 45 degrees (target >= 75%); {k['aligned_input_share']:.0%} of those inputs, "
        f"{k['excitatory_input_aligned_share']:.0%} of the excitatory ones",
    ]
    for row in k["rows"]:
        lines.append(f"  mixed3b {row['unit']} ({row['angle']:g}deg): " + ", ".join(
            f"{i['kind']} {i['unit']} {i['angle']:g}deg {'+' if i['sign'] > 0 else '-'} off {i['mismatch']:g}"
            for i in row["inputs"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=WEIGHTS)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="atlas config whose featurevis settings make the pictures")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)
    result = measure(args.checkpoint, load_config(args.config))
    print(report(result))
    print(f"({result['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
