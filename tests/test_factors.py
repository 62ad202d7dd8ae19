"""Weight factors: each unit's one-sided NMF, and the factors of a group of units."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.decomposition import NMF
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from generator.expanded import LayerWeights, layer_weights
from generator.factors import group_factors, unit_factors
from generator.graph import trace_layers


def split_signs(kernels: np.ndarray) -> np.ndarray:
    """The matrices the article factorises: ``[units, inputs, kh, kw]`` -> ``[units, kh*kw, 2*inputs]``,
    each kernel position a row, each input's excitation (relu(W)) then inhibition (relu(-W)) a column."""
    units, inputs = kernels.shape[:2]
    positions = kernels.reshape(units, inputs, -1).transpose(0, 2, 1)
    return np.concatenate([np.maximum(positions, 0), np.maximum(-positions, 0)], axis=2)


def _weights(kernel: np.ndarray, src: str = "a", dst: str = "b") -> LayerWeights:
    return LayerWeights(src, dst, 1, kernel.astype(np.float32), np.ones(len(kernel), bool))


def _sklearn_explained(matrix: np.ndarray) -> float:
    """The share of ``matrix``'s squared norm that scikit-learn's NMF with three factors reproduces."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = NMF(3, init="nndsvda", max_iter=2000, tol=1e-7, random_state=0)
        loadings = model.fit_transform(matrix.astype(np.float64))
    return 1 - np.linalg.norm(matrix - loadings @ model.components_) ** 2 / np.linalg.norm(matrix) ** 2


def test_unit_factors_reproduce_the_weights_to_the_share_they_claim():
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((12, 20, 5, 5))
    kernel[:4, :, 0, :] *= 4  # some units listen mostly along one row
    found = unit_factors([_weights(kernel)])["b"]
    split = split_signs(kernel.astype(np.float32))  # [units, positions, 2 * inputs]
    reference = [_sklearn_explained(split[u]) for u in range(len(kernel))]
    assert found.explained.mean() >= np.mean(reference) - 0.01  # as good as scikit-learn's NMF on average
    for u in range(len(kernel)):
        spatial = found.spatial[u].reshape(3, -1)  # [3, positions]
        rebuilt = spatial.T @ found.channels[u]
        claimed = found.explained[u]
        assert claimed == pytest.approx(1 - np.sum((split[u] - rebuilt) ** 2) / np.sum(split[u] ** 2), abs=1e-5)
        # about as good as scikit-learn's own NMF on the same matrix (a local optimum may differ)
        assert claimed >= reference[u] - 0.03
        assert found.shares[u].sum() == pytest.approx(1, abs=1e-5) and (found.shares[u] >= 0).all()
        assert found.spatial[u].max() == pytest.approx(1) and (found.channels[u] >= 0).all()
        picture = found.picture(u)
        assert picture.shape == (5, 5, 3) and picture.min() >= 0 and picture.max() == pytest.approx(1)


def test_a_unit_made_of_three_spatial_parts_is_explained_and_drawn_in_three_colours():
    """Rows 0, 2 and 4 of a 5x5 kernel read three disjoint sets of inputs: three factors
    explain everything, and each colour of the picture lies on one row (weight banding)."""
    kernel = np.zeros((1, 9, 5, 5))
    for band, inputs in zip((0, 2, 4), (range(0, 3), range(3, 6), range(6, 9))):
        for i in inputs:
            kernel[0, i, band, :] = 1.0 + i / 10
    found = unit_factors([_weights(kernel)])["b"]
    assert found.explained[0] > 0.999
    picture = found.picture(0)
    rows_of_colour = {int(np.argmax(picture[:, :, c].sum(axis=1))) for c in range(3)}
    assert rows_of_colour == {0, 2, 4}
    dominant = found.dominant(0)
    assert len({int(dominant[i]) for i in range(3)}) == 1 and dominant[0] != dominant[3] != dominant[6]


def test_layers_with_one_pixel_kernels_or_reading_the_image_have_no_factors():
    one_pixel = _weights(np.ones((4, 3, 1, 1)))
    image = LayerWeights(None, "a", 1, np.ones((4, 3, 3, 3), np.float32), np.ones(4, bool))
    assert unit_factors([one_pixel, image]) == {}


class Planted(nn.Module):
    """conv1 makes 8 channels; conv2's 10 units each read inputs 0-3 through one spatial
    pattern and inputs 4-7 through another, with random non-negative strengths."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 10, 3, padding=1, bias=False)
        generator = torch.Generator().manual_seed(0)
        vertical = torch.tensor([[0.0, 1, 0], [0, 1, 0], [0, 1, 0]])
        horizontal = vertical.T
        weight = torch.zeros(10, 8, 3, 3)
        for o in range(10):
            a, b = torch.rand(2, generator=generator) + 0.2
            weight[o, :4] = a * vertical * torch.linspace(1, 2, 4)[:, None, None]
            weight[o, 4:] = -b * horizontal * torch.linspace(1, 2, 4)[:, None, None]  # inhibitory
        with torch.no_grad():
            self.conv2.weight.copy_(weight)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x)))


def test_group_factorisation_recovers_planted_input_groups():
    network, graph = trace_layers(Planted().eval(), (3, 12, 12))
    weights = layer_weights(network, graph, 1).weights
    found = group_factors(weights, "conv2", "planted", list(range(10)), factors=2)
    assert found.explained > 0.999
    groups = [{unit for _, unit, _ in found.top_inputs(f, 8)} for f in range(2)]
    assert sorted(map(sorted, groups)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    for f, members in enumerate(groups):
        maps = found.maps[:, f]  # [units, 3, 3]: signed maps of every unit for this factor
        if members == {0, 1, 2, 3}:  # excitatory, along the middle column
            assert (maps[:, :, 1] > 0).all() and np.allclose(maps[:, :, [0, 2]], 0, atol=1e-6)
        else:  # inhibitory, along the middle row
            assert (maps[:, 1, :] < 0).all() and np.allclose(maps[:, [0, 2], :], 0, atol=1e-6)


def test_the_summary_pages_read_is_what_the_directions_give():
    """Top inputs, dominant factors and pictures, kept as a summary when the directions are let
    go, equal what the directions themselves give (computed here from them)."""
    from generator.factors import FACTOR_INPUTS

    rng = np.random.default_rng(3)
    kernel = rng.integers(-2, 3, size=(10, 16, 3, 3)).astype(np.float32)  # few values: ties in the directions
    found = unit_factors([_weights(kernel)])["b"]
    light = found.without_channels()
    assert light.channels is None
    inputs = kernel.shape[1]
    for u in range(len(kernel)):
        size = found.spatial[u].reshape(3, -1).sum(axis=1)
        both = found.channels[u, :, :inputs] + found.channels[u, :, inputs:]
        np.testing.assert_array_equal(light.dominant(u), np.argmax(both * size[:, None], axis=0))
        strength = np.linalg.norm(found.channels[u], axis=1)
        expected_picture = found.spatial[u] * strength[:, None, None]
        np.testing.assert_allclose(light.picture(u), np.moveaxis(expected_picture / expected_picture.max(), 0, -1),
                                   rtol=1e-6)
        for c in range(3):
            direction = found.channels[u, c]
            order = np.argsort(-direction, kind="stable")[:FACTOR_INPUTS]
            order = order[direction[order] > 0]
            expected = [("a", int(j) % inputs, 1 if j < inputs else -1, pytest.approx(direction[j] / direction[order[0]]))
                        for j in order]
            assert light.top_inputs(u, c, FACTOR_INPUTS) == expected
    with pytest.raises(ValueError):
        light.top_inputs(0, 0, FACTOR_INPUTS + 1)
