"""The benchmark's budget table: each budget compared with its limit, and the one-layer floor."""

from generator.bench import budgets


def test_budgets_compare_each_row_with_its_limit():
    rows = {what: (measured, holds) for what, measured, holds in budgets({
        "inceptionv1_build_s": 14.0, "inceptionv1_peak_rss_mb": 1500.0, "inceptionv1_one_layer_peak_rss_mb": 600.0,
        "vgg16_build_s": 99.0, "vgg16_peak_rss_mb": 1900.0,
        "expanded": [{"pair": "a -> b", "speedup": 35.0}, {"pair": "c -> d", "speedup": 300.0}],
        "atlas_warm_build_s_median": 5.5})}
    assert rows["InceptionV1 weights-only, time"] == ("14.0 s (at most 15 s)", True)
    assert rows["InceptionV1 weights-only, peak memory"][1] is False
    assert rows["InceptionV1 peak memory, 12 layers over 1"] == ("2.5 x (at most 1.5 x)", False)
    assert rows["VGG-16 weights-only, peak memory"][1] is True
    assert "VGG-16 weights-only, time" not in rows  # VGG-16 has a memory budget only
    assert rows["expanded weights against the gradient, slowest pair (a -> b)"] == ("35x faster (at least 100x)", False)
    assert rows["default atlas, warm rebuild (median)"][1] is False
    assert not any(what.startswith("ResNet") for what in rows)  # rows not measured are not listed
