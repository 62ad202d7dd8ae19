"""Static layer plots: files, skipping rules, branch shares and byte-for-byte rebuilds."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from generator.plots import LayerPlot, branch_shares, layer_plots

BRANCHES = [("a", 0, 4), ("b", 4, 10), ("c", 10, 12)]
SOURCE_BRANCHES = [("x", 0, 3), ("y", 3, 8)]


def _layer(seed: int = 0) -> dict:
    """A 12-unit layer with 3 branches reading an 8-unit source with 2 branches and a 5-unit plain one.

    Branch "c" draws only on source branch "x" of "src" (all its other weights are zero).
    """
    rng = np.random.default_rng(seed)
    src = rng.uniform(0.5, 2.0, (12, 8))
    plain = rng.uniform(0.5, 2.0, (12, 5))
    src[10:12, 3:] = 0
    plain[10:12] = 0
    input_l2 = np.sqrt((src ** 2).sum(1) + (plain ** 2).sum(1))
    excitatory = rng.integers(0, 14, 12)
    return dict(branches=BRANCHES, input_l2=input_l2, excitatory=excitatory, inhibitory=13 - excitatory,
                sources={"src": (src, SOURCE_BRANCHES), "plain": (plain, [])})


def test_writes_valid_svgs_matching_the_returned_plots(tmp_path: Path):
    plots = layer_plots(tmp_path / "layer", **_layer())
    assert [p.file for p in plots] == ["kernel-norms.svg", "balance.svg", "branches.svg"]
    assert [p.title for p in plots] == ["Kernel norms", "Excitation and inhibition", "Branch to branch"]
    assert all(isinstance(p, LayerPlot) and p.caption.endswith(".") for p in plots)
    assert sorted(f.name for f in (tmp_path / "layer").iterdir()) == sorted(p.file for p in plots)
    for plot in plots:
        root = ET.parse(tmp_path / "layer" / plot.file).getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


def test_branch_shares_are_exact():
    layer = _layer()
    shares, rows, columns = branch_shares(layer["branches"], layer["sources"])
    assert rows == ["a", "b", "c"]
    assert columns == ["src/x", "src/y", "plain"]
    src, plain = layer["sources"]["src"][0], layer["sources"]["plain"][0]
    for r, (_, start, stop) in enumerate(BRANCHES):
        total = (src[start:stop] ** 2).sum() + (plain[start:stop] ** 2).sum()
        rows_src = src[start:stop] ** 2
        expected = [rows_src[:, 0:3].sum(), rows_src[:, 3:8].sum(), (plain[start:stop] ** 2).sum()]
        np.testing.assert_allclose(shares[r], np.array(expected) / total, rtol=1e-12)
    np.testing.assert_allclose(shares[2], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(shares.sum(1), 1.0)


def test_branch_shares_without_branches_on_this_side():
    l2 = np.array([[1.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    shares, rows, columns = branch_shares([], {"s": (l2, [("p", 0, 1), ("q", 1, 3)])})
    assert rows == ["all units"] and columns == ["s/p", "s/q"]
    np.testing.assert_allclose(shares, [[1 / 6, 5 / 6]])


def test_one_plain_source_means_no_branch_plot(tmp_path: Path):
    """Reading one source without branches, every branch draws 100% on it: nothing to plot."""
    for branches in ([], BRANCHES):
        layer = _layer()
        layer["branches"] = branches
        layer["sources"] = {"plain": layer["sources"]["plain"]}
        plots = layer_plots(tmp_path / str(len(branches)), **layer)
        assert [p.file for p in plots] == ["kernel-norms.svg", "balance.svg"]
        assert not (tmp_path / str(len(branches)) / "branches.svg").exists()


def test_two_plain_sources_give_a_branch_plot(tmp_path: Path):
    layer = _layer()
    layer["branches"] = []
    layer["sources"] = {name: (l2, []) for name, (l2, _) in layer["sources"].items()}
    assert [p.file for p in layer_plots(tmp_path, **layer)][-1] == "branches.svg"


def test_source_branches_alone_give_a_branch_plot(tmp_path: Path):
    layer = _layer()
    layer["branches"] = []
    assert [p.file for p in layer_plots(tmp_path, **layer)][-1] == "branches.svg"


def test_all_zero_inputs_skip_norms_and_balance(tmp_path: Path):
    zeros = np.zeros(12)
    plots = layer_plots(tmp_path, BRANCHES, zeros, zeros.astype(int), zeros.astype(int), {})
    assert plots == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("branches", [BRANCHES, []])
def test_rebuilds_are_byte_identical(tmp_path: Path, branches):
    layer = _layer()
    layer["branches"] = branches
    first = layer_plots(tmp_path / "one", **layer)
    second = layer_plots(tmp_path / "two", **layer)
    assert first == second
    for plot in first:
        assert (tmp_path / "one" / plot.file).read_bytes() == (tmp_path / "two" / plot.file).read_bytes()


def test_units_with_equal_kernel_norms_get_a_histogram(tmp_path):
    """A layer whose units all have the same input norm (to float precision) still plots."""
    norms = np.full(12, 0.7310586)
    norms[::2] = np.nextafter(norms[0], 1)  # one step of float precision apart
    plots = layer_plots(tmp_path, [], norms, np.ones(12, int), np.ones(12, int), {})
    assert [p.file for p in plots] == ["kernel-norms.svg", "balance.svg"]
