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


def test_the_page_rows_read_the_page_weights_and_sizes():
    """The rows `make bench` and `--pages` print of the page weights (every row builder the
    table calls is there, and reads the keys the measurements write)."""
    from generator.bench import _page_rows

    weights = {"unit_own_kb_max": 46.0, "unit_own_kb_median": 38.0, "unit_first_visit_kb_max": 113.0,
               "unit_first_visit_kb_median": 106.0, "layer_pages": [{"path": "layers/mixed3b.html", "own_kb": 90.0,
                                                                     "ready_s": 0.58}]}
    rows = dict(_page_rows({"atlas_page_weights": weights, "atlas_kinds_mb": {"pictures": 12.5}}))
    assert rows["default atlas: unit page, own (max / median)"] == "46 / 38 KB over the wire (gzip)"
    assert rows["default atlas: layers/mixed3b.html (90 KB own)"] == "usable in 0.58 s from file://"
    assert rows["default atlas: pictures"] == "12.5 MB"
    assert not any(name.startswith("InceptionV1") for name in rows)  # not measured, not listed
