"""Benchmark: ``python -m generator.bench`` (``make bench``) prints a table and writes JSON.

Measured in one run on this machine:
- kernel tiles: ours (colormap lookup + one PNG per unit's sprite) against a
  matplotlib figure per tile, the obvious way to draw a heatmap; median time per tile and
  the ratio;
- expanded weights of InceptionV1 (random weights) for every adjacent pair of browsed
  layers: ours (composed kernels as the build holds them, a concatenation as its branches'
  parts, median of 3) against the gradient definition, one
  backward pass per output channel (generator.reference), with the largest difference;
- feature visualisation: seconds per channel of our renderer (units batched, the model cut
  after their layer, jobs in parallel processes) against a one-channel-at-a-time loop
  through the full model with the same parameterisation, steps, size and transforms, on
  the default model and on InceptionV1 (random weights, fewer steps);
- the default atlas with feature visualisations: a cold build (empty cache) and warm
  rebuilds (median), time per stage, pages, site size, peak memory (ru_maxrss);
- the full InceptionV1 weights-only atlas (site_config/inceptionv1.yml, random weights in
  the conversion's format), built in a child process: time per stage, pages, size, peak
  memory, and what each view (weight factors, families, statistics, plots) adds to the site;
- the full InceptionV1 atlas with pictures and dataset examples: size by kind of file (with
  copies of finished pictures, see bench_inceptionv1_pictures);
- page weights in Chromium (generator.page_weights): the heaviest unit page of each layer
  and the largest layer page, over the wire, on the default atlas and on InceptionV1 with
  pictures (``--pages`` runs only these);
- weights-only atlases of torchvision's ResNet-50 and DenseNet-121 at 224 px (random
  weights), the same way (``--zoo`` runs only these);
- where CUDA is present, the GPU rows of :mod:`generator.bench_gpu` (``--gpu`` runs only these).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from .build import build_atlas  # noqa: E402
from .config import load_config  # noqa: E402
from .expanded import linear_map  # noqa: E402
from .linear_maps import Placed, Stacked  # noqa: E402
from .featurevis.jobs import run_jobs  # noqa: E402
from .featurevis.optimise import Job, generator_for, redirected  # noqa: E402
from .featurevis.param import FourierImage, initial_spectra  # noqa: E402
from .featurevis.transforms import RandomViews  # noqa: E402
from .graph import trace_layers  # noqa: E402
from .images import Normalise  # noqa: E402
from .loading import load_model  # noqa: E402
from .inceptionv1 import InceptionV1, random_atlas_config, write_random_checkpoint  # noqa: E402
from .reference import gradient_weights, window_of  # noqa: E402
from .page_weights import measure_site, typical_pages  # noqa: E402
from .render import DIVERGING, tile_sprite  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def figure_tile(kernel: np.ndarray, scale: float) -> bytes:
    """The reference: one matplotlib figure per tile."""
    fig = plt.figure(figsize=(0.5, 0.5), dpi=10 * kernel.shape[0])
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(kernel, cmap=DIVERGING, vmin=-scale, vmax=scale, interpolation="nearest")
    ax.axis("off")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def bench_tiles(repeats: int = 50, per_sprite: int = 48) -> dict:
    """Seconds per 5x5 tile: ours draws a unit's 48 tiles as one sprite, the reference one figure each."""
    rng = np.random.default_rng(0)
    kernels = [rng.normal(size=(5, 5)).astype(np.float32) for _ in range(per_sprite)]
    scales = [float(np.abs(k).max()) for k in kernels]
    ours = _median_seconds(lambda: tile_sprite(kernels, scales), repeats) / per_sprite
    reference = _median_seconds(lambda: figure_tile(kernels[0], scales[0]), repeats)
    return {"tile_ours_ms": ours * 1e3, "tile_matplotlib_figure_ms": reference * 1e3, "tile_speedup": reference / ours}


def bench_default_atlas(runs: int = 3) -> dict:
    """A cold build (empty picture cache), then ``runs - 1`` warm rebuilds with everything cached."""
    reports = []
    with tempfile.TemporaryDirectory() as folder:
        config = dataclasses.replace(load_config(ROOT / "site_config" / "default.yml"), cache=f"{folder}/cache")
        for _ in range(runs):
            reports.append(build_atlas(config, Path(folder) / "site"))
        sizes = [p.stat().st_size for p in reports[-1].output.rglob("*") if p.is_file()]
        views = view_sizes(reports[-1].output)
        kinds = file_kinds(reports[-1].output)
        weights = measure_site(reports[-1].output, *typical_pages(reports[-1].output))
    cold, warm = reports[0], reports[1:]
    return {
        "atlas_cold_build_s": cold.seconds, "atlas_cold_stages_s": cold.stages,
        "atlas_cold_peak_mb": max(cold.peaks.values()),
        "atlas_cold_pictures_made": cold.pictures_made,
        "atlas_warm_build_s_median": statistics.median(r.seconds for r in warm),
        "atlas_warm_build_s_runs": [r.seconds for r in warm],
        "atlas_warm_stages_s_median": {name: statistics.median(r.stages[name] for r in warm) for name in cold.stages},
        "atlas_warm_pictures_made": sum(r.pictures_made for r in warm),
        "atlas_pages": cold.pages, "atlas_units": cold.units,
        "atlas_files": len(sizes), "atlas_size_mb": sum(sizes) / 2**20, "atlas_largest_file_kb": max(sizes) / 1024,
        "atlas_views_mb": views, "atlas_kinds_mb": kinds,
        "atlas_page_weights": weights,
    }


def one_channel_loop(model: torch.nn.Module, unit: int, settings, inp) -> float:
    """The reference: one unit at a time, the full model every step (Lucid's render_vis, in
    PyTorch, with its redirected ReLU): same parameterisation, steps, image size and
    transforms. Returns the objective."""
    size = settings.picture_shape(inp)  # (height, width)
    generator = [generator_for(settings.seed, "reference", unit, 1)]
    image = FourierImage(initial_spectra(generator, inp.channels, size), settings.decorrelate, width=size[1])
    views = RandomViews(settings.transforms, size, inp.size, generator)
    normalise = Normalise(inp)
    optimiser = torch.optim.Adam(image.parameters(), lr=settings.learning_rate)
    for _ in range(settings.steps):
        optimiser.zero_grad()
        target, _ = model(normalise(views(image())))  # the layer, and the rest of the network
        loss = -target[0, unit].mean()
        loss.backward()
        optimiser.step()
    return -loss.item()


def bench_featurevis_model(config, layer: str, ours_units: int, reference_units: int) -> dict:
    """Seconds per channel: our stage's job runner on ``ours_units`` units of ``layer`` against
    the one-channel loop on ``reference_units`` of them, with the config's settings."""
    model = load_model(config).eval().requires_grad_(False)
    network, graph = trace_layers(model, config.input.shape)
    settings = config.featurevis
    batch = -(-ours_units // (os.cpu_count() or 1))  # one job per core
    jobs = [Job(layer, units, 1)
            for units in (tuple(range(start, min(start + batch, ours_units))) for start in range(0, ours_units, batch))]
    start = time.perf_counter()
    made = [p for result in run_jobs(jobs, config, network, graph, torch.device("cpu"), len(jobs)) for p in result]
    ours = (time.perf_counter() - start) / len(made)
    deepest = graph.layers[-1].name
    full = redirected(network.truncated([graph.values[layer], graph.values[deepest]]))  # the same ReLUs as ours, as in Lucid
    times = []
    for unit in range(reference_units):
        times.append(_median_seconds(lambda: one_channel_loop(full, unit, settings, config.input), 1))  # noqa: B023
    reference = statistics.median(times)
    return {"layer": layer, "steps": settings.steps, "size": max(config.picture_shape),
            "ours_s_per_channel": ours, "ours_channels": len(made), "ours_processes": len(jobs),
            "reference_s_per_channel": reference, "reference_channels": reference_units, "speedup": reference / ours}


def bench_featurevis(folder: Path) -> dict:
    default = load_config(ROOT / "site_config" / "default.yml")
    write_random_checkpoint(str(folder / "inception5h.pth"))
    inception = load_config(ROOT / "site_config" / "inceptionv1.yml")
    inception = dataclasses.replace(
        inception, model=dataclasses.replace(inception.model, checkpoint=str(folder / "inception5h.pth"), url=None),
        featurevis=dataclasses.replace(inception.featurevis, steps=16))  # 512 would take an hour here
    # Ours on a whole layer, as a build runs it (worker start-up included); the reference on a few units.
    return {"featurevis": [bench_featurevis_model(default, "mixed3a", 128, 4),
                           bench_featurevis_model(inception, "mixed4a", 16, 2)]}


def bench_expanded() -> dict:
    torch.manual_seed(0)
    model = InceptionV1().eval()
    shape = (3, 224, 224)
    network, graph = trace_layers(model, shape)
    rows = []
    for src, dst in graph.adjacent:
        if src is None:
            continue
        with torch.no_grad():  # as the build composes it: a concatenation's branches as their parts
            ours = _median_seconds(lambda: linear_map(network, graph, src, dst, compact=True), 3)  # noqa: B023
            m = linear_map(network, graph, src, dst, compact=True)
            m = m.dense() if isinstance(m, (Stacked, Placed)) else m
        start = time.perf_counter()
        gradient = gradient_weights(model, src, dst, shape)
        reference = time.perf_counter() - start
        if m.spatial:
            size = network.values[network.node(graph.values[dst])].shape[2:]
            expected = window_of(gradient, tuple(m.kernel.shape), m.stride, m.offset, size)
        else:
            expected = gradient.sum(dim=(2, 3), keepdim=True)
        difference = float((expected - m.kernel).abs().max() / m.kernel.abs().max())
        rows.append({"pair": f"{src} -> {dst}", "kernel": list(m.kernel.shape), "ours_s": ours,
                     "gradient_s": reference, "speedup": reference / ours, "max_relative_difference": difference})
    total_ours, total_reference = sum(r["ours_s"] for r in rows), sum(r["gradient_s"] for r in rows)
    return {"expanded": rows, "expanded_total_ours_s": total_ours, "expanded_total_gradient_s": total_reference,
            "expanded_total_speedup": total_reference / total_ours}


# The build in a child process, which reports its stages' times and its own peak memory: the
# largest of the stages' peaks (VmHWM, which starts anew at exec and which the build resets at
# each stage; ru_maxrss would also count the parent's size at fork).
CHILD = ("import json, sys\nfrom generator.build import build_atlas\nfrom generator.config import load_config\n"
         "report = build_atlas(load_config(sys.argv[1]))\n"
         "print(json.dumps({'stages': report.stages, 'peak_mb': max(report.peaks.values())}))")


def atlas_in_child(config: Path, prefix: str) -> dict:
    """Build ``config`` in a child process (its site next to it): time, pages, size, peak memory."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(config)],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    report = json.loads(done.stdout.strip().splitlines()[-1])
    site = config.parent / "site"
    sizes = [p.stat().st_size for p in site.rglob("*") if p.is_file()]
    return {f"{prefix}_build_s": seconds, f"{prefix}_pages": sum(1 for _ in site.rglob("*.html")),
            f"{prefix}_files": len(sizes), f"{prefix}_size_mb": sum(sizes) / 2**20,
            f"{prefix}_largest_file_mb": max(sizes) / 2**20, f"{prefix}_peak_rss_mb": report["peak_mb"],
            f"{prefix}_stages_s": report["stages"], f"{prefix}_views_mb": view_sizes(site)}


def view_sizes(site: Path) -> dict[str, float]:
    """What each view of the atlas adds to the site, in MB."""
    def total(paths) -> float:
        return sum(p.stat().st_size for p in paths) / 2**20

    sections = 0
    for page in site.glob("units/*/*.html"):
        text = page.read_text(encoding="utf-8")
        start = text.find('<h2 id="factors">')
        if start >= 0:
            sections += len(text[start:text.find("<h2>Inputs", start)].encode())
    return {"factor pictures (one sprite per layer)": total(site.glob("units/*/factors.png")),
            "factor sections of unit pages": sections / 2**20,
            "layer pages (families, grid, statistics)": total(site.glob("layers/*.html")),
            "layer plots": total(site.glob("layers/*/*.svg")),
            "family factor pages": total(site.glob("families/*"))}


KINDS = {  # what a site is made of: the first pattern a file's path matches names its kind
    "unit pages (HTML)": r"^units/.*\.html$", "unit data files (JSON)": r"^units/.*\.json$",
    "feature visualisations": r"\.fv(-negative)?\.webp$", "thumbnails": r"\.thumb\.webp$",
    "dataset examples": r"\.examples\.webp$", "search index": r"^search/",
    "layer and other pages": r"\.html$", "theme and assets": r"^assets/"}


def file_kinds(site: Path) -> dict[str, float]:
    """The site's size by kind of file (:data:`KINDS`), in MB."""
    found = dict.fromkeys([*KINDS, "other"], 0.0)
    for path in site.rglob("*"):
        if path.is_file():
            name = path.relative_to(site).as_posix()
            kind = next((k for k, pattern in KINDS.items() if re.search(pattern, name)), "other")
            found[kind] += path.stat().st_size / 2**20
    return found


def bench_inceptionv1_atlas() -> dict:
    """InceptionV1 weights-only (pictures are GPU work): its 12 layers, and its first layer alone,
    whose peak memory is the build's floor (the 12-layer build should stay within 1.5 times it)."""
    results = {}
    for prefix, layers in (("inceptionv1", None), ("inceptionv1_one_layer", "[conv2d0]")):
        with tempfile.TemporaryDirectory() as folder:
            changes = [("enabled: true", "enabled: false"), *([("layers: .*", f"layers: {layers}")] if layers else [])]
            results.update(atlas_in_child(random_atlas_config(Path(folder), *changes), prefix))
    return results


def bench_inceptionv1_pictures(sample_steps: int = 64) -> dict:
    """The whole InceptionV1 atlas (random weights) with both pictures of every unit and dataset
    examples (1,024 procedural images, 224 px): its size by kind of file, and its pages' weights
    in Chromium.

    Optimising 11,608 pictures takes hours on a CPU, and pictures of one step, which would be
    quick, are smoother than finished ones and encode at a tenth of their size. So 8 units of
    mixed4a are optimised for ``sample_steps`` steps, and every unit's pictures in the cache are
    copies of those: the sizes are those of finished pictures; the time is not measured here
    (see the feature visualisation rows)."""
    from .featurevis.cache import PictureCache
    from .featurevis.jobs import run_jobs as jobs_run
    from .loading import weights_hash

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        path = random_atlas_config(folder, (r"steps: \d+", f"steps: {sample_steps}"),
                                  extra=f"dataset: {{source: procedural, images: 1024}}\ncache: {folder / 'cache'}\n")
        config = load_config(path)
        model = load_model(config)
        network, graph = trace_layers(model, config.input.shape)
        graph = graph.restricted(config.layers)
        samples = [p for r in jobs_run([Job("mixed4a", tuple(range(8)), 1)], config, network, graph,
                                       torch.device("cpu"), 1) for p in r]
        cache = PictureCache(config.cache, weights_hash(model), config)
        for layer in graph.layers:
            for unit in range(layer.channels):
                for direction in (1, -1):
                    sample = samples[(unit + (direction < 0)) % len(samples)]
                    cache.put(dataclasses.replace(sample, layer=layer.name, unit=unit, direction=direction), "cpu")
        results = atlas_in_child(path, "inceptionv1_pictures")
        site = folder / "site"
        kinds = file_kinds(site)
        units, _ = typical_pages(site)
        weights = measure_site(site, units, ["layers/mixed5b.html"])  # 1,024 units
    return {**results, "inceptionv1_pictures_kinds_mb": kinds, "inceptionv1_pictures_page_weights": weights,
            "inceptionv1_picture_sample_steps": sample_steps}


ZOO = {"resnet50": "ResNet-50", "densenet121": "DenseNet-121", "vgg16": "VGG-16"}


def bench_zoo_atlases() -> dict:
    """Weights-only atlases of torchvision's ResNet-50, DenseNet-121 and VGG-16 at 224 px,
    random weights saved as a checkpoint (the published ones need a download)."""
    from .torchvision_models import import_torchvision

    models = import_torchvision().models
    results = {}
    for name in ZOO:
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            torch.manual_seed(0)
            torch.save(models.get_model(name).state_dict(), folder / "weights.pt")
            (folder / "atlas.yml").write_text(
                f"title: {ZOO[name]}\nmodel: {{source: 'torchvision:{name}', checkpoint: {folder / 'weights.pt'}}}\n"
                f"input: {{size: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}}\n"
                f"featurevis: {{enabled: false}}\nsite: {{output: {folder / 'site'}}}\n")
            results.update(atlas_in_child(folder / "atlas.yml", name))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench.json")
    parser.add_argument("--runs", type=int, default=3, help="default atlas builds to take the median of")
    parser.add_argument("--zoo", action="store_true", help="only the ResNet-50, DenseNet-121 and VGG-16 atlases")
    parser.add_argument("--budgets", action="store_true",
                        help="only the rows with a budget (weights-only atlases, expanded weights, default rebuild)")
    parser.add_argument("--pages", action="store_true",
                        help="only the site sizes and page weights (default atlas; InceptionV1 with pictures)")
    parser.add_argument("--gpu", action="store_true", help="only the GPU rows (about ten minutes on an H100)")
    parser.add_argument("--try-gpu-rows-on-cpu", action="store_true",
                        help="the GPU rows' code on the CPU, with a few steps and units (a check, not a measure)")
    args = parser.parse_args(argv)
    if args.gpu or args.try_gpu_rows_on_cpu:
        from .bench_gpu import gpu_rows, run

        if args.gpu and not torch.cuda.is_available():
            parser.error("--gpu needs a CUDA GPU, and PyTorch sees none here")
        results = run(torch.device("cuda")) if args.gpu else \
            run(torch.device("cpu"), steps=2, units=4, layer_steps=1, effect_pairs=1)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        _print(gpu_rows(results))
        print(f"wrote {args.out}")
        return
    if args.pages:
        results = {**bench_default_atlas(2), **bench_inceptionv1_pictures()}
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        _print(_page_rows(results))
        print(f"wrote {args.out}")
        return
    if args.zoo or args.budgets:
        results = bench_zoo_atlases()
        if args.budgets:
            results.update({**bench_inceptionv1_atlas(), **bench_expanded(), **bench_default_atlas(args.runs)})
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        _print(_zoo_rows(results) + (_budget_rows(results) if args.budgets else []))
        print(f"wrote {args.out}")
        return
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": torch.get_num_threads(), "torch": torch.__version__},
        **bench_tiles(),
        **bench_default_atlas(args.runs),
        **bench_expanded(),
        **bench_inceptionv1_atlas(),
        **bench_inceptionv1_pictures(),
        **bench_zoo_atlases(),
    }
    with tempfile.TemporaryDirectory() as folder:
        results.update(bench_featurevis(Path(folder)))
    if torch.cuda.is_available():
        from .bench_gpu import run

        results.update(run(torch.device("cuda")))
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    rows = [
        ("kernel tile, ours (colormap + Pillow, 48 per sprite)", f"{results['tile_ours_ms']:.4f} ms"),
        ("kernel tile, matplotlib figure", f"{results['tile_matplotlib_figure_ms']:.2f} ms"),
        ("tile speed-up", f"{results['tile_speedup']:.0f}x"),
        ("default atlas, cold build (empty cache)", f"{results['atlas_cold_build_s']:.1f} s, "
                                                    f"{results['atlas_cold_pictures_made']} pictures made"),
        *[(f"  stage: {k}", f"{v:.2f} s") for k, v in results["atlas_cold_stages_s"].items()],
        ("default atlas, warm rebuild, median", f"{results['atlas_warm_build_s_median']:.1f} s, "
                                                f"{results['atlas_warm_pictures_made']} pictures made"),
        *[(f"  stage: {k}", f"{v:.2f} s") for k, v in results["atlas_warm_stages_s_median"].items()],
        ("pages / files", f"{results['atlas_pages']} / {results['atlas_files']}"),
        ("site size", f"{results['atlas_size_mb']:.1f} MB (largest file {results['atlas_largest_file_kb']:.0f} KB)"),
        ("peak memory (cold build)", f"{results['atlas_cold_peak_mb']:.0f} MB"),
        *[(f"  view: {k}", f"{v:.2f} MB") for k, v in results["atlas_views_mb"].items()],
        *[(f"expanded {r['pair']} {tuple(r['kernel'])}",
           f"ours {r['ours_s']:.3f} s, gradient {r['gradient_s']:.2f} s, {r['speedup']:.0f}x, "
           f"max rel. diff {r['max_relative_difference']:.1e}") for r in results["expanded"]],
        ("expanded, all adjacent pairs", f"ours {results['expanded_total_ours_s']:.2f} s, gradient "
                                         f"{results['expanded_total_gradient_s']:.1f} s, "
                                         f"{results['expanded_total_speedup']:.0f}x"),
        ("InceptionV1 atlas build (12 layers)", f"{results['inceptionv1_build_s']:.1f} s"),
        ("InceptionV1 pages / files", f"{results['inceptionv1_pages']} / {results['inceptionv1_files']}"),
        ("InceptionV1 site size", f"{results['inceptionv1_size_mb']:.0f} MB "
                                  f"(largest file {results['inceptionv1_largest_file_mb']:.1f} MB)"),
        ("InceptionV1 build peak memory", f"{results['inceptionv1_peak_rss_mb']:.0f} MB"),
        *[(f"  stage: {k}", f"{v:.1f} s") for k, v in results["inceptionv1_stages_s"].items()],
        *[(f"  view: {k}", f"{v:.2f} MB") for k, v in results["inceptionv1_views_mb"].items()],
        *_zoo_rows(results),
        *[(f"feature visualisation {r['layer']} ({r['steps']} steps, {r['size']} px)",
           f"ours {r['ours_s_per_channel']:.2f} s/channel ({r['ours_channels']} channels, {r['ours_processes']} "
           f"processes), one channel at a time {r['reference_s_per_channel']:.2f} s/channel, {r['speedup']:.1f}x")
          for r in results["featurevis"]],
    ]
    from .bench_gpu import gpu_rows

    _print(rows + _page_rows(results) + _budget_rows(results) + gpu_rows(results))
    print(f"wrote {args.out}")


def _page_rows(results: dict) -> list[tuple[str, str]]:
    """Rows of the site sizes and page weights (targets: unit page 100 KB own, 300 KB first visit;
    1,024-unit layer page usable in 1 s; InceptionV1 with pictures and examples 500 MB)."""
    rows = []
    for prefix, title in (("atlas", "default atlas"), ("inceptionv1_pictures", "InceptionV1 with pictures")):
        if f"{prefix}_page_weights" not in results:
            continue
        w = results[f"{prefix}_page_weights"]
        rows += [(f"{title}: unit page, own (max / median)",
                  f"{w['unit_own_kb_max']:.0f} / {w['unit_own_kb_median']:.0f} KB over the wire (gzip)"),
                 (f"{title}: unit page, first visit (max / median)",
                  f"{w['unit_first_visit_kb_max']:.0f} / {w['unit_first_visit_kb_median']:.0f} KB"),
                 *[(f"{title}: {p['path']} ({p['own_kb']:.0f} KB own)", f"usable in {p['ready_s']:.2f} s from file://")
                   for p in w["layer_pages"]],
                 *[(f"{title}: {kind}", f"{mb:.1f} MB") for kind, mb in results[f"{prefix}_kinds_mb"].items()]]
    if "inceptionv1_pictures_size_mb" in results:
        rows += [(f"InceptionV1 with pictures ({results['inceptionv1_picture_sample_steps']} steps) and examples",
                  f"{results['inceptionv1_pictures_size_mb']:.0f} MB, {results['inceptionv1_pictures_files']} files, "
                  f"built in {results['inceptionv1_pictures_build_s']:.0f} s with the pictures cached")]
    return rows


def _zoo_rows(results: dict) -> list[tuple[str, str]]:
    return [(f"{title} weights-only atlas, 224 px", f"{results[name + '_build_s']:.1f} s, peak "
             f"{results[name + '_peak_rss_mb']:.0f} MB, {results[name + '_pages']} pages, "
             f"{results[name + '_size_mb']:.0f} MB") for name, title in ZOO.items()]


def budgets(results: dict) -> list[tuple[str, str, bool]]:
    """Each budget the results cover: ``(what, measured against the limit, holds)``."""
    rows = []

    def most(what: str, measured: float, limit: float, unit: str) -> None:
        rows.append((what, f"{measured:,.1f} {unit} (at most {limit:,} {unit})", measured <= limit))

    for name, title, seconds, mb in (("inceptionv1", "InceptionV1 weights-only", 15, 1024),
                                     ("resnet50", "ResNet-50 weights-only", 30, 2048),
                                     ("densenet121", "DenseNet-121 weights-only", 20, 1024),
                                     ("vgg16", "VGG-16 weights-only", None, 2048)):
        if f"{name}_build_s" in results:
            if seconds:
                most(f"{title}, time", results[f"{name}_build_s"], seconds, "s")
            most(f"{title}, peak memory", results[f"{name}_peak_rss_mb"], mb, "MB")
    if "inceptionv1_one_layer_peak_rss_mb" in results:
        most("InceptionV1 peak memory, 12 layers over 1",
             results["inceptionv1_peak_rss_mb"] / results["inceptionv1_one_layer_peak_rss_mb"], 1.5, "x")
    if "expanded" in results:
        slowest = min(results["expanded"], key=lambda r: r["speedup"])
        rows.append((f"expanded weights against the gradient, slowest pair ({slowest['pair']})",
                     f"{slowest['speedup']:,.0f}x faster (at least 100x)", slowest["speedup"] >= 100))
    if "atlas_warm_build_s_median" in results:
        most("default atlas, warm rebuild (median)", results["atlas_warm_build_s_median"], 5, "s")
    return rows


def _budget_rows(results: dict) -> list[tuple[str, str]]:
    return [(f"budget: {what}", f"{'holds' if holds else 'MISSED'}: {measured}") for what, measured, holds in budgets(results)]


def _print(rows: list[tuple[str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
