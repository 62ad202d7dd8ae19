"""The build: config -> model -> layer graph -> weights (read one layer at a time) -> ranking ->
pictures -> pages -> site."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .annotations import labels_path, load_annotations
from .config import AtlasConfig
from .errors import AtlasError
from .dataset_examples import find_examples, first_images
from .engines import opened
from .expanded import Frozen, freeze, needs_reference
from .families import family_features, layer_families
from .featurevis import visualise_units
from .graph import find_layers
from .layer_pass import read_weights
from .loading import load_model, weights_hash
from . import memory
from .network import TracedNetwork
from .images import REFERENCE_IMAGES
from .linearity import measure_linearity
from .paths import split_paths
from .pages import UNITS_MARK, ModelSummary, PageWriter
from .structure import Structure
from .ranking import rank
from .search import page_entries, write_index
from .site import PageShell, check_output, mkdocs_site, staged_output

log = logging.getLogger("weight_atlas")


@dataclass(frozen=True)
class BuildReport:
    output: Path
    layers: int
    units: int
    pages: int
    seconds: float
    stages: dict[str, float]  # seconds per stage, in build order
    peaks: dict[str, float]  # the build process's peak resident memory per stage, MB (generator.memory)
    pictures_made: int = 0  # feature visualisations optimised by this build
    pictures_reused: int = 0  # feature visualisations found in the cache


def reference_statistics(config: AtlasConfig, network: TracedNetwork) -> Frozen | None:
    """Gates and layer norms measured on the dataset's first images, or on noise; None when
    the model has neither."""
    if not needs_reference(network):
        return None
    return freeze(network, *first_images(config, network.input_shape, REFERENCE_IMAGES))


def layer_parameters(model: torch.nn.Module, modules: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The parameters and buffers of the weighted modules that compute a layer, by their names in
    the model: the layer's own weights, as the model stores them."""
    found = {}
    named = dict(model.named_modules())  # a name may hold dots of its own (get_submodule would split it)
    for name in modules:
        module = named[name]
        for key, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            if tensor is not None and tensor.is_floating_point():
                found[f"{name}.{key}"] = tensor.detach().to("cpu", torch.float32).contiguous()
    return found


def check_cache(cache: Path) -> None:
    """Refuse a cache folder the build could not write, before any work. Folders made to try are
    removed again while they are empty (a build that turns out to need no cache leaves none),
    never while another build at the same time has put something in them."""
    cache = cache.absolute()
    created = cache
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    made = [] if created.exists() else [cache, *[p for p in cache.parents if p.is_relative_to(created)]]
    try:
        for attempt in range(3):
            try:
                cache.mkdir(parents=True, exist_ok=True)
                os.rmdir(tempfile.mkdtemp(prefix=".probe-", dir=cache))
                return
            except FileNotFoundError:  # another build removed the folder it had just made to try
                if attempt == 2:
                    raise AtlasError(f"The cache folder {cache} keeps disappearing while it is tried; is another "
                                     f"program removing it?") from None
            except OSError as error:
                raise AtlasError(f"The cache folder {cache} cannot be written ({error.strerror}); feature "
                                 f"visualisations and dataset examples are kept there. Set `cache` in the atlas "
                                 f"config to a folder you can write to.") from None
    finally:
        for folder in made:  # deepest first; stop at the first one in use
            try:
                folder.rmdir()
            except OSError:
                break


def build_atlas(config: AtlasConfig, output: str | Path | None = None,
                leaving: list[Path] | None = None) -> BuildReport:
    """Build the atlas ``config`` describes into ``output`` (default: the config's). The site it
    replaces is removed by a process of its own, which this does not wait for, or, with
    ``leaving``, added to it, for the caller to have it removed once it has reported
    (:func:`generator.site.remove_left`)."""
    try:
        return _build(config, output, leaving)
    finally:
        memory.build_over()


def _build(config: AtlasConfig, output: str | Path | None, leaving: list[Path] | None) -> BuildReport:
    start = time.perf_counter()
    stages: dict[str, float] = {}
    peaks: dict[str, float] = {}
    memory.return_large_blocks()
    memory.reset_peak()

    def done(stage: str, since: float) -> float:
        now = time.perf_counter()
        stages[stage] = now - since
        peaks[stage] = memory.peak_mb()
        memory.reset_peak()
        return now

    dataset = config.dataset.source if config.dataset.source != "procedural" else None
    output = check_output(Path(output or config.site.output), {
        "atlas config": config.path if config.path != "<built-in>" else None, "picture cache": config.cache,
        "checkpoint": config.model.checkpoint, "dataset folder": dataset, "labels file": (labels_path(config) or (None,))[0]},
        {"dataset folder": dataset})
    if config.featurevis.enabled or config.dataset.source is not None:
        check_cache(Path(config.cache))
    model = load_model(config)
    t = done("load", start)
    input_shape = config.input.shape
    network = TracedNetwork(model, input_shape)
    graph = find_layers(network).restricted(config.layers)
    log.info("traced %d layers, %d pairs of adjacent layers", len(graph.layers), len(graph.adjacent))
    annotations = load_annotations(config, graph, model)
    t = done("trace", t)
    frozen = reference_statistics(config, network)
    groups = [(layer, family, members) for layer, family, members in annotations.groups() if len(members) > 1]
    read = read_weights(network, graph, config.ranking, frozen, groups)
    for reason in read.skipped:
        log.info("skipped %s", reason)
    t = done("weights and factors", t)
    with memory.kept_for_the_build():
        units = rank(graph, read.statistics, config.ranking.top_k)
    paths = split_paths(network, graph, read.weights, units, frozen)
    t = done("ranking", t)
    weights = weights_hash(model)
    with opened(config, network, graph) as engine:  # one engine for both stages (one Ray connection)
        pictures = visualise_units(config, network, graph, weights, engine) if config.featurevis.enabled else None
        t = done("feature visualisation", t)
        examples = find_examples(config, network, graph, weights, engine)
        t = done("dataset examples", t)
        linearity = measure_linearity(config, network, graph, read.weights, weights, engine) \
            if config.circuits.linearity and (pictures is not None or examples is not None) else None
        t = done("measured effects", t)
    structure = Structure(
        read.factors, annotations,
        layer_families(graph, annotations, family_features(graph, read.weights, read.norms, pictures, examples),
                       config.factors.families),
        read.groups,
        {(w.src, w.dst): l2 for w, l2 in zip(read.weights, read.norms) if w.hops == 1 and w.src is not None},
        {(w.src, w.dst): w for w in read.weights if w.hops == 1 and w.src is not None}, linearity, paths)
    t = done("families", t)
    parameters = {layer.name: layer_parameters(model, layer.modules) for layer in graph.layers}
    summary = ModelSummary(config.title, sum(p.numel() for p in model.parameters()), len(units), input_shape,
                           weights)
    with staged_output(output, leaving) as stage:
        writer = PageWriter(graph, units, config, summary, structure, pictures, examples, read.skipped, parameters)
        nav = writer.write_docs(stage / "docs")
        mkdocs_site(stage / "docs", stage / "site", config.title, nav)
        pages = page_entries(stage / "site", writer.pages, UNITS_MARK)
        writer.fill_layers(stage / "site")
        t = done("mkdocs", t)
        stages["mkdocs"] -= writer.plot_seconds  # drawn while writing the layer pages
        stages["layer plots"] = writer.plot_seconds
        peaks["layer plots"] = peaks["mkdocs"]  # drawn in the same stretch
        write_index(stage / "site", pages + writer.unit_pages.write(stage / "site", PageShell.take(stage / "site")))
        pages = sum(1 for _ in (stage / "site").rglob("*.html"))
        t = done("unit pages", t)
    return BuildReport(output, len(graph.layers), len(units), pages, time.perf_counter() - start, stages, peaks,
                       pictures.made if pictures else 0, pictures.reused if pictures else 0)
