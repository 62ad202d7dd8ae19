"""Benchmark: ``python -m generator.bench`` (``make bench``) prints a table and writes JSON.

Measured in one run on this machine:
- kernel tiles: ours (colormap lookup + one Pillow PNG per unit's sprite) against a
  matplotlib figure per tile, the obvious way to draw a heatmap; median time per tile and
  the ratio;
- the default atlas: build time per stage, pages, site size, peak memory (ru_maxrss).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import resource
import statistics
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
    config = load_config(ROOT / "site_config" / "default.yml")
    reports = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(runs):
            reports.append(build_atlas(config, Path(folder) / "site"))
        sizes = [p.stat().st_size for p in reports[-1].output.rglob("*") if p.is_file()]
    seconds = [r.seconds for r in reports]
    stages = {name: statistics.median(r.stages[name] for r in reports) for name in reports[0].stages}
    return {
        "atlas_build_s_median": statistics.median(seconds), "atlas_build_s_runs": seconds,
        "atlas_stages_s_median": stages, "atlas_pages": reports[-1].pages, "atlas_units": reports[-1].units,
        "atlas_files": len(sizes), "atlas_size_mb": sum(sizes) / 2**20, "atlas_largest_file_kb": max(sizes) / 1024,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench.json")
    parser.add_argument("--runs", type=int, default=3, help="default atlas builds to take the median of")
    args = parser.parse_args(argv)
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": torch.get_num_threads(), "torch": torch.__version__},
        **bench_tiles(),
        **bench_default_atlas(args.runs),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    rows = [
        ("kernel tile, ours (colormap + Pillow, 48 per sprite)", f"{results['tile_ours_ms']:.4f} ms"),
        ("kernel tile, matplotlib figure", f"{results['tile_matplotlib_figure_ms']:.2f} ms"),
        ("tile speed-up", f"{results['tile_speedup']:.0f}x"),
        ("default atlas build, median", f"{results['atlas_build_s_median']:.1f} s"),
        *[(f"  stage: {k}", f"{v:.2f} s") for k, v in results["atlas_stages_s_median"].items()],
        ("pages / files", f"{results['atlas_pages']} / {results['atlas_files']}"),
        ("site size", f"{results['atlas_size_mb']:.1f} MB (largest file {results['atlas_largest_file_kb']:.0f} KB)"),
        ("peak memory", f"{results['peak_rss_mb']:.0f} MB"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
