"""Labels and families of the default model's units, found by probes and dataset examples.

``python -m generator.default_model.labels [CHECKPOINT] --out FILE`` writes a labels file
(the format of ``site_config/default.labels.yml``). No unit is picked by hand: a unit
joins a family when a test below says so, tried in this order, the first that holds:

- **curves**: selective on arcs over 360 degrees, and driven by them: the best arc reaches
  :data:`.measure.STRONG` of the unit's largest activation on the dataset images
  (:func:`.measure.curve_units`);
- **lines**: selective on straight lines over 180 degrees and driven by them, lines at
  least as strong as arcs (:func:`.measure.line_units`);
- a family of **dataset examples**: every one of the unit's 8 strongest dataset images
  shares one value of an attribute: ``shapes`` (a shape), ``colours`` (a hue),
  ``gratings`` (a grating orientation) or ``curves`` (a curve facing one way, where the
  arc probe did not single the unit out);
- a family of **probes**: the probe whose best image excites the unit most, relative to
  the unit's largest activation on the dataset images, if at least :data:`STRONG` of it:
  ``colours`` (uniform fields), ``colour contrast`` (two hues meeting at an edge),
  ``high-low frequency`` (a grating beside a flat region) or ``gratings``.

Every entry's note says which test found it. Units that pass none stay unlabelled (the
atlas clusters them). The classifier's units get their head as family.

The file also names How to read's worked example (:func:`worked_example`): a unit of
mixed3b built, through its three strongest inputs, from units of its own orientation.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch
import yaml

from generator.dataset_examples import ProceduralImages
from generator.graph import trace_layers
from generator.images import Normalise

from . import INPUT_SIZE, WEIGHTS
from . import probes as P
from .measure import INPUT, STRONG, curve_units, line_units, load, pair_weights, probe_tuning
from .procedural import ATTRIBUTES

LABELLED = ("conv2d2", "mixed3a", "mixed3b")
TOP = 8  # dataset examples a unit is judged by
PROBE_FAMILIES = {"colour": "colours", "colour contrast": "colour contrast",
                  "high-low frequency": "high-low frequency", "grating": "gratings"}
EXAMPLE_FAMILIES = {"shape": "shapes", "hue": "colours", "orientation": "gratings", "curve": "curves"}
HUE_NAMES = ("red", "orange", "yellow", "chartreuse", "green", "spring green", "cyan", "azure", "blue",
             "violet", "magenta", "rose")  # the probe hues, every 30 degrees


def dataset_examples(network, graph, layers: tuple[str, ...], images: int = 4096, seed: int = 0):
    """Per layer, each unit's ``TOP`` strongest dataset images (largest activation over
    positions) as indices ``[C, TOP]`` and their largest activation ``[C]``; and the labels
    of all images, per attribute ``[images]``. The images are the atlas's procedural ones."""
    model = network.truncated([graph.values[name] for name in layers]).eval()
    normalise = Normalise(INPUT)
    source = ProceduralImages(images, seed, INPUT_SIZE)
    peaks = {name: [] for name in layers}
    labels = {name: [] for name in ATTRIBUTES}
    with torch.no_grad():
        for number in range((images + 255) // 256):
            batch = source.batch(number)
            for name in ATTRIBUTES:
                labels[name].append(batch.labels[name])
            for name, value in zip(layers, model(normalise(batch.images))):
                peaks[name].append(value.flatten(2).amax(2))
    top, peak = {}, {}
    for name in layers:
        every = torch.cat(peaks[name])  # [images, C]
        top[name] = every.topk(TOP, dim=0).indices.T
        peak[name] = every.amax(0)
    return top, peak, {name: torch.cat(v) for name, v in labels.items()}


def _shared(indices: torch.Tensor, labels: torch.Tensor) -> int | None:
    """The label all of ``indices`` share, or None."""
    values = labels[indices]
    return int(values[0]) if bool((values == values[0]).all()) else None


def probe_label(probe: str, tuning: torch.Tensor) -> str:
    """A label for a unit from its tuning curve on ``probe``: its best value, in words."""
    best = int(tuning.argmax())
    if probe == "colour":
        return HUE_NAMES[best * len(HUE_NAMES) // P.PROBE_HUES]
    if probe == "colour contrast":
        first, second = P.colour_edges().values[best].split("|")
        name = {f"{round(360 * k / P.PROBE_HUES)}deg": HUE_NAMES[k] for k in range(P.PROBE_HUES)}
        return f"{name[first]} / {name[second]} edge"
    if probe == "high-low frequency":
        return f"high-low frequency, texture at {P.frequency_edges().values[best]}"
    return f"{P.gratings().values[best]} grating"


def find_labels(checkpoint: str | Path = WEIGHTS) -> dict:
    """The labels file's content for the model in ``checkpoint``."""
    network, graph = trace_layers(load(checkpoint), (3, INPUT_SIZE, INPUT_SIZE))
    tuning = probe_tuning(network, graph, LABELLED)
    top, peak, labels = dataset_examples(network, graph, LABELLED)
    curves = curve_units(tuning, peak, LABELLED)
    lines = line_units(tuning, peak, LABELLED, curves)
    units: dict[str, dict[int, dict[str, str]]] = {name: {} for name in LABELLED}
    for family, probe, found, width in (("curves", "curve", curves, 45), ("lines", "line", lines, 22.5)):
        for u in found:
            drive = float(tuning[u.layer][probe][u.unit].max() / peak[u.layer][u.unit])
            label = f"curve facing {u.angle:g}deg" if probe == "curve" else f"line at {u.angle:g}deg"
            units[u.layer][u.unit] = {"label": label, "family": family,
                                      "note": f"{'arc' if probe == 'curve' else 'line'} probe: above half its peak "
                                              f"only within {width:g} degrees of it, at {drive:.0%} of its largest "
                                              "activation on dataset images"}
    for name in LABELLED:
        for unit in range(graph.layer(name).channels):
            if unit in units[name] or peak[name][unit] <= 0:
                continue
            for attribute, family in EXAMPLE_FAMILIES.items():
                value = _shared(top[name][unit], labels[attribute])
                if value is not None:
                    text = ATTRIBUTES[attribute][value]
                    label = {"orientation": f"{text} grating", "curve": f"curve facing {text}"}.get(attribute, text)
                    units[name][unit] = {"label": label, "family": family,
                                         "note": f"dataset examples: all {TOP} strongest share {attribute} {text}"}
                    break
            if unit in units[name]:
                continue
            strength = {probe: float(tuning[name][probe][unit].max() / peak[name][unit]) for probe in PROBE_FAMILIES}
            probe = max(strength, key=strength.get)
            if strength[probe] >= STRONG:
                units[name][unit] = {"label": probe_label(probe, tuning[name][probe][unit]),
                                     "family": PROBE_FAMILIES[probe],
                                     "note": f"{probe} probe: {strength[probe]:.0%} of its largest activation on "
                                             f"dataset images"}
    heads = [f"{name} head" for name, values in ATTRIBUTES.items() for _ in values]
    result = {"units": {name: dict(sorted(found.items())) for name, found in units.items()}}
    result["units"]["logits"] = {i: {"family": head} for i, head in enumerate(heads)}
    chosen = worked_example(network, graph, units)
    if chosen is not None:
        result["example"] = {"layer": LABELLED[-1], "unit": chosen}
    return result


def _orientation(label: str) -> tuple[float, bool] | None:
    """The orientation a label names, and whether it is a curve's: ``curve facing 90deg`` is
    (90, True), over 360 degrees; ``line at 135deg`` and ``45deg grating`` are (135, False)
    and (45, False), over 180. None for a label without one."""
    found = re.search(r"(\d+(?:\.\d+)?)deg", label)
    if found is None:
        return None
    curve = label.startswith("curve")
    return float(found.group(1)) % (360.0 if curve else 180.0), curve


def worked_example(network, graph, units: dict[str, dict[int, dict[str, str]]]) -> int | None:
    """How to read's worked example: a unit of the last labelled layer whose 3 strongest
    inputs from the layer before (expanded weights, by L2 norm) all excite it and all carry a
    label naming its own orientation, within 22.5 degrees (:func:`.probes.orientation_distance`). Curve units come
    first, as in the Curve Detectors article; of several, the one whose 3 inputs are
    strongest together. None when no unit qualifies."""
    src, dst = LABELLED[-2], LABELLED[-1]
    weights, norms = pair_weights(network, graph, src, dst)
    kernels = weights.kernel
    best, rank = None, (False, 0.0)
    for unit, entry in units[dst].items():
        own = _orientation(entry["label"])
        if own is None:
            continue
        top = norms[unit].argsort()[::-1][:3]
        sources = [_orientation(units[src].get(int(t), {}).get("label", "")) for t in top]
        qualifies = all(s is not None and P.orientation_distance(*own, *s) <= 22.5 and kernels[unit, t].sum() > 0
                        for s, t in zip(sources, top))
        if qualifies and (own[1], float(norms[unit, top].sum())) > rank:
            best, rank = unit, (own[1], float(norms[unit, top].sum()))
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?", type=Path, default=WEIGHTS)
    parser.add_argument("--out", type=Path, required=True, help="the labels file to write")
    args = parser.parse_args(argv)
    found = find_labels(args.checkpoint)
    header = ("# Labels and families of the default model's units, found by probes (synthetic stimuli) and\n"
              "# dataset examples by `python -m generator.default_model.labels`, not picked by hand.\n")
    args.out.write_text(header + yaml.safe_dump(found, sort_keys=False, width=120))
    for name, found_units in found["units"].items():
        families: dict[str, list[str]] = {}
        for unit, entry in found_units.items():
            families.setdefault(entry["family"], []).append(f"{unit}" + (f" ({entry['label']})" if "label" in entry
                                                                         else ""))
        for family, members in families.items():
            print(f"{name} {family} ({len(members)}): {', '.join(members)}")


if __name__ == "__main__":
    main()
