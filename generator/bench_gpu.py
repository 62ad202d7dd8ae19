"""GPU rows of the benchmark: ``python -m generator.bench --gpu`` (and ``make bench`` where CUDA is).

On InceptionV1 (random weights) at Lucid's settings (224 px), on one GPU:
- seconds per channel of three renders of one job of up to 256 units of mixed4a and of
  mixed5b, each ``STEPS`` steps (time per step is constant, so 512 steps take 512 / STEPS
  times as long; the rows give that): the *plain* path (autograd through PyTorch's local
  response norm; the redirected ReLU asks the device whether every image has a gradient,
  one host wait per ReLU per step), ours in float32 (fused response norm, no waits), and
  ours in bfloat16;
- picture quality: per unit, ours in float32 and in bfloat16 against the plain path (the
  same seeds): the relative difference of the final objective (measured in float32) and
  the share of units whose picture beats noise;
- one whole layer made as a build makes it (mixed4a, 508 units x 2 directions, 512
  steps, ``featurevis.batch: 0``, so as many units per job as fit);
- the whole atlas (11,608 pictures): each layer's time per picture from a short probe,
  scaled by the whole-layer build's measured time;
- the measured effects of every adjacent pair (:mod:`generator.linearity`, 32 noise
  images), against that whole atlas's pictures (target: at most a tenth).

About ten minutes on one H100.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import load_config
from .featurevis import layers, optimise
from .featurevis.jobs import CPU_BATCH, visualise_units
from .featurevis.optimise import Job, fitting_batch, model_for, render
from .expanded import layer_weights
from .graph import trace_layers
from .linearity import IMAGES, Pair, measured_effect
from .inceptionv1 import random_atlas_config
from .loading import load_model, weights_hash

STEPS = 128
UNITS = 256


class _Plain:
    """The optimised model as it was before fusing: PyTorch's response norm, a ReLU that waits."""

    def __enter__(self):
        self.saved = optimise.fused_local_response_norm, layers.RedirectedReLU.backward
        optimise.fused_local_response_norm = F.local_response_norm

        def waiting(ctx, grad):
            x, y = ctx.saved_tensors
            return layers.redirected_gradient(grad, x, y, shortcut=True)
        layers.RedirectedReLU.backward = staticmethod(waiting)
        return self

    def __exit__(self, *exc):
        optimise.fused_local_response_norm, backward = self.saved
        layers.RedirectedReLU.backward = staticmethod(backward)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(model, job, settings, inp, device):
    _synchronize(device)
    start = time.perf_counter()
    pictures = render(model, job, settings, inp, device)
    _synchronize(device)
    return (time.perf_counter() - start) / len(job.units), pictures


def _compare(pictures, reference) -> dict:
    live = [(p.objective, r.objective) for p, r in zip(pictures, reference) if abs(r.objective) > 1e-6]
    differences = [abs(p - r) / abs(r) for p, r in live]
    return {"objective_difference_median": statistics.median(differences) if differences else 0.0,
            "objective_difference_max": max(differences, default=0.0),
            "beats_noise": sum(p.objective > p.noise for p in pictures) / len(pictures),
            "beats_noise_plain": sum(r.objective > r.noise for r in reference) / len(reference)}


def bench_gpu(folder: Path, device: torch.device, steps: int = STEPS, units: int = UNITS,
              layer_steps: int = 512, effect_pairs: int | None = None) -> dict:
    """The GPU rows (``device`` may be the CPU, with few ``steps`` and ``units``, to try the code)."""

    config = load_config(random_atlas_config(folder, extra=f"cache: {folder / 'cache'}\n"))
    model = load_model(config).eval().requires_grad_(False)
    network, graph = trace_layers(model, config.input.shape)
    graph = graph.restricted(config.layers)
    pairs = [Pair.of(w) for w in layer_weights(network, graph).weights if w.src is not None][:effect_pairs]
    model.to(device)
    short = dataclasses.replace(config.featurevis, steps=steps)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    results: dict = {"gpu": name, "gpu_torch": torch.__version__, "gpu_steps": steps, "gpu_renders": []}
    for layer in ("mixed4a", "mixed5b"):
        channels = graph.layer(layer).channels
        batch = min(units, fitting_batch(model_for(network, graph, layer, 1), layer, channels, short, config.input,
                                         device) if device.type == "cuda" else CPU_BATCH)
        job = Job(layer, tuple(range(batch)), 1)
        with _Plain():
            plain_model = model_for(network, graph, layer, 1)
            render(plain_model, Job(layer, (0,), 1), dataclasses.replace(short, steps=2), config.input, device)  # warm
            plain, reference = _timed(plain_model, job, short, config.input, device)
        ours_model = model_for(network, graph, layer, 1)
        ours, pictures = _timed(ours_model, job, short, config.input, device)
        bf16 = dataclasses.replace(short, precision="bfloat16")
        ours_bf16, pictures_bf16 = _timed(ours_model, job, bf16, config.input, device)
        scale = 512 / steps
        results["gpu_renders"].append({
            "layer": layer, "batch": batch, "plain_s_per_channel_512": plain * scale,
            "ours_s_per_channel_512": ours * scale, "ours_bf16_s_per_channel_512": ours_bf16 * scale,
            "ours_quality": _compare(pictures, reference), "ours_bf16_quality": _compare(pictures_bf16, reference)})
    # One whole layer as a build makes it, then every layer's share from a short probe.
    whole = dataclasses.replace(config, layers=("mixed4a",), featurevis=dataclasses.replace(
        config.featurevis, batch=0, device=device.type, steps=layer_steps, jobs="1"))
    start = time.perf_counter()
    made = visualise_units(whole, network, graph.restricted(("mixed4a",)), weights_hash(model)).made
    layer_s = time.perf_counter() - start
    probe = dataclasses.replace(config.featurevis, steps=min(16, layer_steps))
    per_picture = {}
    for layer in graph.layers:
        fits = fitting_batch(model_for(network, graph, layer.name, 1), layer.name, layer.channels, probe,
                             config.input, device) if device.type == "cuda" else units
        some = tuple(range(min(units, layer.channels, fits)))
        seconds, _ = _timed(model_for(network, graph, layer.name, 1), Job(layer.name, some, 1), probe,
                            config.input, device)
        per_picture[layer.name] = seconds
    scale = layer_s / made / per_picture["mixed4a"]
    total = sum(2 * layer.channels * per_picture[layer.name] * scale for layer in graph.layers)
    results.update({"gpu_whole_layer": "mixed4a", "gpu_whole_layer_pictures": made, "gpu_whole_layer_s": layer_s,
                    "gpu_whole_layer_steps": layer_steps,
                    "gpu_full_atlas_pictures": sum(2 * layer.channels for layer in graph.layers),
                    "gpu_full_atlas_estimate_s": total})
    results.update(_effects(network, graph, device, pairs))
    return results


def _effects(network, graph, device: torch.device, pairs: list[Pair]) -> dict:
    """Seconds to measure the effects of ``pairs`` (every adjacent pair, or the first, to try)."""
    images = torch.rand(IMAGES, *network.input_shape, device=device)
    _synchronize(device)
    start = time.perf_counter()
    for pair in pairs:
        measured_effect(network, graph, pair, images)
    _synchronize(device)
    return {"gpu_effects_pairs": len(pairs), "gpu_effects_units": sum(pair.shape[0] for pair in pairs),
            "gpu_effects_s": time.perf_counter() - start}


def gpu_rows(results: dict) -> list[tuple[str, str]]:
    if "gpu" not in results:
        return []
    rows = [("GPU", f"{results['gpu']}, torch {results['gpu_torch']}")]
    for r in results["gpu_renders"]:
        rows.append((f"render {r['layer']}, batch {r['batch']}, s/channel at 512 steps",
                     f"plain {r['plain_s_per_channel_512']:.3f}, ours {r['ours_s_per_channel_512']:.3f}, "
                     f"ours bf16 {r['ours_bf16_s_per_channel_512']:.3f}"))
        for name in ("ours", "ours_bf16"):
            q = r[f"{name}_quality"]
            rows.append((f"  {name.replace('_', ' ')} objective vs plain ({results['gpu_steps']} steps)",
                         f"median {100 * q['objective_difference_median']:.2f}%, max "
                         f"{100 * q['objective_difference_max']:.2f}%, beat noise {100 * q['beats_noise']:.0f}% "
                         f"(plain {100 * q['beats_noise_plain']:.0f}%)"))
    rows.append((f"whole layer {results['gpu_whole_layer']} ({results['gpu_whole_layer_steps']} steps, batch 0)",
                 f"{results['gpu_whole_layer_pictures']} pictures in {results['gpu_whole_layer_s']:.0f} s"))
    rows.append((f"full InceptionV1 atlas, {results['gpu_full_atlas_pictures']:,} pictures (estimate)",
                 f"{results['gpu_full_atlas_estimate_s'] / 60:.1f} min"))
    rows.append((f"measured effects, {results['gpu_effects_pairs']} pairs, {results['gpu_effects_units']:,} units "
                 f"(target: 10% of the pictures)",
                 f"{results['gpu_effects_s']:.1f} s, "
                 f"{100 * results['gpu_effects_s'] / results['gpu_full_atlas_estimate_s']:.1f}% of the pictures"))
    return rows


def run(device: torch.device, **sizes) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        return bench_gpu(Path(folder), device, **sizes)
