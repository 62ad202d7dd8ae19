"""Dataset examples: the strongest images of every unit, checked against a brute-force pass."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from generator import load_config
from generator.dataset_examples import ProceduralImages, crop_box, find_examples
from generator.default_model.procedural import draw
from generator.graph import trace_layers
from generator.images import load_image
from generator.loading import load_model, weights_hash
from tests.conftest import write_config
from tests.test_featurevis import layer_values

TOP = 5


def brute_force(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per layer, every image's largest activation of every unit: ``[images, units]``."""
    with torch.no_grad():
        return {name: value.amax(dim=(2, 3)) for name, value in layer_values(model, images).items()}


def expected_top(maxima: torch.Tensor, unit: int) -> list[int]:
    """Image indices by falling activation, earlier first on ties (a stable sort)."""
    return np.argsort(-maxima[:, unit].numpy(), kind="stable")[:TOP].tolist()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """A small tree of .png and .jpg images of different sizes, and two files that are not images."""
    root = tmp_path_factory.mktemp("images")
    batch = draw(36, 80, torch.Generator().manual_seed(3)).images
    for i, image in enumerate(batch):
        pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        picture = Image.fromarray(pixels)
        if i % 3 == 1:
            picture = picture.resize((96, 72))  # not square: scaled and cut to the centre
        folder = root / ("a" if i % 2 else "b") / ("deep" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"{i:02d}.{'jpg' if i % 4 == 0 else 'png'}")
    (root / "a" / "broken.png").write_bytes(b"not a png at all")
    (root / "a" / "notes.txt").write_text("ignored")
    return root


def test_folder_examples_are_the_true_top_activations(image_folder, tmp_path, caplog):
    config = load_config(write_config(tmp_path, dataset={"source": str(image_folder), "top": TOP}))
    model = load_model(config)
    network, graph = trace_layers(model, (3, 64, 64))
    with caplog.at_level(logging.INFO, logger="weight_atlas"):
        examples = find_examples(config, network, graph, weights_hash(model))
    assert "broken.png" in caplog.text  # reported and skipped, not fatal
    files = sorted(p for p in image_folder.rglob("*") if p.suffix in (".png", ".jpg"))
    readable = [i for i, p in enumerate(files) if p.name != "broken.png"]
    images = torch.stack([torch.from_numpy(load_image(files[i], (64, 64), 3)).permute(2, 0, 1).float() / 255
                          for i in readable])
    for layer, maxima in brute_force(model, images).items():
        for unit in range(maxima.shape[1]):
            found = examples.of(layer, unit)
            assert [e.image for e in found] == [readable[j] for j in expected_top(maxima, unit)], (layer, unit)
            assert [e.value for e in found] == pytest.approx(
                [float(maxima[j, unit]) for j in expected_top(maxima, unit)], rel=1e-4, abs=1e-5)
            assert found[0].label == str(files[found[0].image].relative_to(image_folder))
            for e in found:
                top, left, bottom, right = e.box
                assert 0 <= top < bottom <= 64 and 0 <= left < right <= 64 and bottom - top >= 16
    with Image.open(examples.picture("mixed3a", 0)) as strip:
        assert strip.format == "WEBP" and strip.width == TOP * 66 - 2


def test_procedural_examples_across_batches(tmp_path):
    config = load_config(write_config(tmp_path, dataset={"source": "procedural", "images": 300, "top": TOP}))
    model = load_model(config)
    examples = find_examples(config, *trace_layers(model, (3, 64, 64)), weights_hash(model))
    source = ProceduralImages(300, 0, 64)
    images = torch.cat([batch for _, batch in source.batches(128)])
    assert len(images) == 300
    maxima = brute_force(model, images)["mixed3b"]
    for unit in range(0, maxima.shape[1], 7):
        assert [e.image for e in examples.of("mixed3b", unit)] == expected_top(maxima, unit)
    logits = examples.of("logits", 0)
    assert all(e.box == (0, 0, 64, 64) for e in logits)  # a classifier unit sees the whole image
    assert "procedural image" in logits[0].label and "grating" in logits[0].label
    stored = source.fetch({logits[0].image})[logits[0].image][0]
    expected = (images[logits[0].image].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(stored, expected)


def test_no_images_means_no_examples_not_an_error(tmp_path, caplog):
    model_config = load_config(write_config(tmp_path))
    model = load_model(model_config)
    network, graph = trace_layers(model, (3, 64, 64))
    assert find_examples(model_config, network, graph, "0" * 64) is None  # none configured
    missing = load_config(write_config(tmp_path, dataset={"source": str(tmp_path / "nowhere")}))
    with caplog.at_level(logging.INFO, logger="weight_atlas"):
        assert find_examples(missing, network, graph, "0" * 64) is None
    assert "does not exist" in caplog.text


def test_crop_follows_the_strongest_position_and_stays_inside():
    window = (20, 22, 44, 42)  # what the centre of an 8 x 8 map sees in a 64-pixel image
    assert crop_box(window, (8, 8), 4, 4, (64, 64)) == (20, 20, 44, 44)
    assert crop_box(window, (8, 8), 5, 4, (64, 64)) == (28, 20, 52, 44)  # one step down is 8 pixels
    assert crop_box(window, (8, 8), 0, 7, (64, 64)) == (0, 40, 24, 64)  # moved back inside at the corner
    assert crop_box((30, 30, 33, 33), (32, 32), 16, 16, (64, 64)) == (24, 24, 40, 40)  # at least a quarter
    assert crop_box(None, (1, 1), 0, 0, (64, 64)) == (0, 0, 64, 64)


def test_a_build_stopped_part_way_reads_only_the_shards_it_had_not_finished(tmp_path, monkeypatch, caplog):
    import generator.dataset_examples as stage

    config = load_config(write_config(tmp_path, layers=["conv2d1", "mixed3a"],
                                      dataset={"source": "procedural", "images": 1100, "top": TOP}))
    model = load_model(config)
    network, graph = trace_layers(model, config.input.shape)
    graph = graph.restricted(config.layers)
    (tmp_path / "whole").mkdir()
    monkeypatch.setattr(stage, "SHARD", 1024 * 1024)  # one pass
    whole = find_examples(load_config(write_config(tmp_path / "whole", layers=["conv2d1", "mixed3a"],
                                                   dataset={"source": "procedural", "images": 1100, "top": TOP})),
                          network, graph, weights_hash(model))
    monkeypatch.setattr(stage, "SHARD", 256)  # 5 shards: 4 of 256 images and one of 76
    original, calls = stage.strongest, []

    def failing_on_the_third_shard(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(stage, "strongest", failing_on_the_third_shard)
    with pytest.raises(KeyboardInterrupt):
        find_examples(config, network, graph, weights_hash(model))
    calls.clear()
    monkeypatch.setattr(stage, "strongest", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    with caplog.at_level(logging.INFO, logger="weight_atlas"):
        resumed = find_examples(config, network, graph, weights_hash(model))
    assert "2 of 5 shards of 256 images from an earlier build" in caplog.text and len(calls) == 3
    for layer in config.layers:
        assert resumed.of(layer, 0) and [resumed.of(layer, unit) for unit in range(32)] == \
            [whole.of(layer, unit) for unit in range(32)]
        assert resumed.activity(layer) == whole.activity(layer)
    assert not (resumed.folder / "parts").exists()  # kept only until the layers are written


@pytest.mark.parametrize("images", [1000, 20])
def test_first_procedural_images_are_described_without_drawing_them(tmp_path, monkeypatch, images):
    """A build whose measured effects are cached needs only the description of the images they
    were averaged over; it must be the one the drawn images get."""
    from generator import dataset_examples
    from generator.dataset_examples import first_images

    config = load_config(write_config(tmp_path, model={"source": "default"},
                                      dataset={"source": "procedural", "images": images}))
    drawn, described = first_images(config, (3, 64, 64), 32), None
    monkeypatch.setattr(dataset_examples.ProceduralImages, "batch",
                        lambda *args: pytest.fail("drew images it only had to describe"))
    nothing, described = first_images(config, (3, 64, 64), 32, pixels=False)
    assert nothing is None and described == drawn[1] == f"the first {min(images, 32)} dataset images"
    assert len(drawn[0]) == min(images, 32)
