"""Small static plots for a layer page: kernel norms, excitation/inhibition, branch to branch.

Figures are made with ``matplotlib.figure.Figure`` (no pyplot, no backend switch) and saved
as SVG with fixed metadata and hash salt, so rebuilding writes identical bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

EXCITATORY, INHIBITORY, NEUTRAL = "#ca0020", "#0571b0", "#555"
SIZE = (4.5, 2.6)
ANNOTATED = 48  # a branch heatmap with more cells than this has no numbers on them (colour only: quicker to read and draw)
Branch = tuple[str, int, int]
_RC = {"svg.fonttype": "none", "svg.hashsalt": "weight-atlas", "font.size": 8,
       "axes.spines.top": False, "axes.spines.right": False}


@dataclass(frozen=True)
class LayerPlot:
    """One plot written for a layer page."""

    file: str  # file name written in the layer's folder, e.g. "kernel-norms.svg"
    title: str  # short heading, e.g. "Kernel norms"
    caption: str  # one or two sentences saying how to read it


def _groups(branches: list[Branch], units: int) -> list[tuple[str, np.ndarray]]:
    """Unit groups to plot: (label, unit indices) per branch, plus "other" for uncovered units."""
    if not branches:
        return [("all units", np.arange(units))]
    groups = [(name, np.arange(start, stop)) for name, start, stop in branches]
    covered = np.zeros(units, bool)
    for _, idx in groups:
        covered[idx] = True
    return groups + ([("other", np.flatnonzero(~covered))] if not covered.all() else [])


def _colours(count: int) -> list:
    """Grey for a single group, else one qualitative colour per branch."""
    return [NEUTRAL] if count == 1 else [matplotlib.colormaps["tab10"](i % 10) for i in range(count)]


def _hist(ax: Axes, groups: list[tuple[str, np.ndarray]], bins: np.ndarray) -> None:
    """Stacked histogram of each group's values, with a legend when there are several groups."""
    ax.hist([values for _, values in groups], bins=bins, stacked=True, histtype="stepfilled",
            color=_colours(len(groups)), label=[name for name, _ in groups])
    ax.set_ylabel("number of units")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if len(groups) > 1:
        ax.legend(frameon=False, fontsize=7, title="branch", title_fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))


def _write(path: Path, draw: Callable[[Figure, Axes], None], size: tuple[float, float] = SIZE,
           margins: tuple[float, float, float, float] = (0.6, 0.45, 0.15, 0.3)) -> None:
    """Draw one figure with ``draw(fig, ax)`` and save it as SVG at ``path``; ``margins`` are
    (left, bottom, right, top) in inches (fixed margins draw in half the time of a layout engine)."""
    fig = Figure(figsize=size)
    left, bottom, right, top = margins
    fig.subplots_adjust(left=left / size[0], bottom=bottom / size[1], right=1 - right / size[0], top=1 - top / size[1])
    draw(fig, fig.add_subplot())
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})


def branch_shares(branches: list[Branch], sources: dict[str, tuple[np.ndarray, list[Branch]]]
                  ) -> tuple[np.ndarray, list[str], list[str]]:
    """Share of each of this layer's branches' squared input weights that comes from each source branch.

    Returns (shares [rows, columns], row labels, column labels). Cell (r, c) is the sum of
    ``l2**2`` over row branch r's units and column c's source units, divided by the sum of
    ``l2**2`` over row branch r's units and all units of all sources (0 when that is 0).
    Rows are this layer's branches ("all units" without branches); columns are
    "source/branch" per source branch, or the source name when it has no branches.
    """
    units = next(iter(sources.values()))[0].shape[0] if sources else 0
    rows = [(name, slice(start, stop)) for name, start, stop in branches] or [("all units", slice(0, units))]
    columns: list[tuple[str, np.ndarray, slice]] = []
    totals = np.zeros(len(rows))
    for source, (l2, source_branches) in sources.items():
        squared = np.asarray(l2, np.float64) ** 2
        totals += [squared[r].sum() for _, r in rows]
        columns += [(f"{source}/{name}", squared, slice(start, stop)) for name, start, stop in source_branches] \
            or [(source, squared, slice(None))]
    sums = np.array([[squared[r, c].sum() for _, squared, c in columns] for _, r in rows]).reshape(len(rows), -1)
    shares = np.divide(sums, totals[:, None], out=np.zeros_like(sums), where=totals[:, None] > 0)
    return shares, [name for name, _ in rows], [name for name, _, _ in columns]


def _draw_norms(ax: Axes, groups: list[tuple[str, np.ndarray]], input_l2: np.ndarray) -> None:
    """Histogram of units' input L2 norms."""
    low, high = float(input_l2.min()), float(input_l2.max())
    spread = max(high - low, 1e-3 * max(abs(high), 1e-12))  # nearly equal norms still get 30 distinct bins
    centre = (low + high) / 2
    _hist(ax, [(name, input_l2[idx]) for name, idx in groups],
          np.linspace(centre - spread / 2, centre + spread / 2, 31))
    ax.set_xlabel("L2 norm of all of a unit's incoming weights")


def _draw_balance(ax: Axes, groups: list[tuple[str, np.ndarray]], excitatory: np.ndarray,
                  inhibitory: np.ndarray) -> None:
    """Histogram of excitatory / (excitatory + inhibitory) over units with any such kernels."""
    counted = excitatory + inhibitory
    share = np.divide(excitatory, counted, out=np.zeros(len(counted)), where=counted > 0)
    centred = np.linspace(-0.025, 1.025, 22)  # bins centred on 0, 0.05, ..., 1: balanced units sit on 0.5
    _hist(ax, [(name, share[idx[counted[idx] > 0]]) for name, idx in groups], centred)
    ax.axvline(0.5, color=NEUTRAL, linestyle="--", linewidth=0.8)
    ax.text(0.0, 1.02, "\u2190 more inhibitory", color=INHIBITORY, transform=ax.transAxes, va="bottom")
    ax.text(1.0, 1.02, "more excitatory \u2192", color=EXCITATORY, transform=ax.transAxes, va="bottom", ha="right")
    ax.set_xlim(centred[0], centred[-1])
    ax.set_xlabel("share of a unit's input kernels that are excitatory")


def _draw_shares(fig: Figure, ax: Axes, shares: np.ndarray, rows: list[str], columns: list[str]) -> None:
    """Heatmap of branch_shares, each cell annotated with its percentage."""
    image = ax.imshow(shares * 100, cmap="Blues", vmin=0, vmax=100, aspect="auto")
    for (r, c), value in np.ndenumerate(shares if shares.size <= ANNOTATED else np.empty((0, 0))):
        ax.text(c, r, "<1%" if 0 < value < 0.005 else f"{value:.0%}", ha="center", va="center", fontsize=7,
                color="white" if value > 0.6 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set(xlabel="source branch", ylabel="branch of this layer")
    ax.spines[:].set_visible(False)
    fig.colorbar(image, ax=ax, label="% of squared weights", shrink=0.9)


def layer_plots(folder: Path, branches: list[Branch], input_l2: np.ndarray, excitatory: np.ndarray,
                inhibitory: np.ndarray, sources: dict[str, tuple[np.ndarray, list[Branch]]]) -> list[LayerPlot]:
    """Write a layer's plots into ``folder`` and return those written, in page order.

    ``input_l2[u]`` is unit u's L2 norm of all its incoming weights; ``excitatory[u]`` and
    ``inhibitory[u]`` count its input kernels summing to more / less than zero; ``sources``
    maps each source layer's name to (kernel L2 norms [units, source units], its branches).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    input_l2 = np.asarray(input_l2, np.float64)
    excitatory, inhibitory = np.asarray(excitatory), np.asarray(inhibitory)
    groups = _groups(branches, len(input_l2))
    plots: list[LayerPlot] = []
    with matplotlib.rc_context(_RC):
        legend = max((len(name) for name, _ in groups), default=0) * 0.06 + 0.3 if len(groups) > 1 else 0.15
        if input_l2.size and input_l2.max() > 0:
            _write(folder / "kernel-norms.svg", lambda fig, ax: _draw_norms(ax, groups, input_l2),
                   margins=(0.6, 0.45, legend, 0.3))
            plots.append(LayerPlot("kernel-norms.svg", "Kernel norms", (
                "How many units (height) have each L2 norm of all their incoming weights (position)"
                + (", stacked by branch" if branches else "") + "; units further right have stronger inputs.")))
        if (excitatory + inhibitory).any():
            _write(folder / "balance.svg", lambda fig, ax: _draw_balance(ax, groups, excitatory, inhibitory),
                   margins=(0.6, 0.45, legend, 0.3))
            plots.append(LayerPlot("balance.svg", "Excitation and inhibition", (
                "How many units (height) have each share of excitatory input kernels (summing to more than zero) "
                "among their kernels summing to more or less than zero" + (", stacked by branch" if branches else "")
                + ". Right of the dashed line at 0.5 a unit has more excitatory than inhibitory inputs.")))
        shares, rows, columns = branch_shares(branches, sources) if sources else (None, [], [])
        if len(columns) > 1:  # one source column says only "100%"
            left = 0.45 + 0.065 * max(len(r) for r in rows)
            bottom = 0.45 + 0.045 * max(len(c) for c in columns)  # column labels turned by 30 degrees
            size = (left + max(3.0, 0.5 * len(columns)) + 1.2, bottom + max(1.2, 0.3 * len(rows)) + 0.2)
            _write(folder / "branches.svg", lambda fig, ax: _draw_shares(fig, ax, shares, rows, columns), size,
                   margins=(left, bottom, 1.2, 0.2))
            plots.append(LayerPlot("branches.svg", "Branch to branch", (
                "Each cell is the share of a row branch's squared input weights (squared kernel L2 norms, summed) "
                "that comes from the column's source branch, out of all units of all sources"
                + ("." if shares.size <= ANNOTATED else "; the colour scale gives the percentage."))))
    return plots
