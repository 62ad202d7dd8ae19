"""The engine protocol (generator/engines): a third engine is one small class plugged in where
the build chooses its engine, and it makes what the local engine makes, byte for byte; a
local worker that dies is reported as that worker's end."""

import dataclasses
import logging
import multiprocessing
import os
import signal
from pathlib import Path

import pytest
import torch

from generator import build_atlas, load_config
from generator.engines import ENGINES, Work, Worker, engine_for, in_order
from generator.errors import AtlasError
from generator.graph import trace_layers
from generator.loading import load_model

from .conftest import write_config


class InOrder:
    """A third engine: every job in the build's own process, one after another, on the CPU."""

    device = torch.device("cpu")

    def __init__(self, config, network, graph):
        self.worker = Worker.of_build(network, graph, self.device)

    def processes(self, work, jobs):
        return 1

    def where(self, work, jobs):
        return "this process, in order"

    def run(self, work, items, progress):
        for item in items:
            result = work.task(self.worker, item)
            yield item, result
            progress(work.size(item))

    def close(self):
        self.worker.memo.clear()


def _toy(folder: Path, **featurevis):
    """A toy model's atlas: quick pictures in jobs of 4, 1,100 procedural images (two shards)."""
    folder.mkdir(exist_ok=True)
    return load_config(write_config(
        folder, model={"source": "tests.toy_models:seeded_cnn"}, input={"channels": 3, "size": 16},
        featurevis={"steps": 4, "batch": 4, **featurevis}, dataset={"source": "procedural", "images": 1100},
        site={"output": str(folder / "site")}))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def one_thread():
    """One torch thread here, so the local engine's two workers get one each, as this process has:
    the same arithmetic everywhere, so the same bytes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_a_third_engine_plugged_in_builds_what_the_local_engine_builds(tmp_path, monkeypatch, caplog, one_thread):
    monkeypatch.setitem(ENGINES, "in-order", f"{__name__}:InOrder")
    caplog.set_level(logging.INFO, logger="weight_atlas")
    local = _toy(tmp_path / "local", jobs="2")  # two spawned workers that load the model
    report = build_atlas(local)
    assert report.pictures_made == 2 * (8 + 12 + 6 + 5)  # both pictures of conv1, conv2, conv3 and fc
    assert "18 jobs on cpu in 2 processes" in caplog.text
    assert "1100 images in 2 shards on cpu in the build's process" in caplog.text
    caplog.clear()
    ours = _toy(tmp_path / "ours", jobs="2")  # which the third engine ignores
    ours = dataclasses.replace(ours, featurevis=dataclasses.replace(ours.featurevis, engine="in-order"))
    assert build_atlas(ours).pictures_made == report.pictures_made
    assert "18 jobs on this process, in order" in caplog.text
    assert "1100 images in 2 shards on this process, in order" in caplog.text
    theirs, made = _files(tmp_path / "local" / "cache"), _files(tmp_path / "ours" / "cache")
    assert sum(name.startswith("featurevis/") and name.endswith(".png") for name in theirs) == 62
    assert sum(name.startswith("examples/") and name.endswith(".webp") for name in theirs) == 31
    assert made == theirs  # every picture, record and example strip, byte for byte
    site = {name: data.replace(b"in-order", b"local") for name, data in _files(tmp_path / "ours" / "site").items()}
    assert site == _files(tmp_path / "local" / "site")  # but for the engine named in the settings shown


def test_an_unknown_engine_is_named(tmp_path):
    config = _toy(tmp_path)
    config = dataclasses.replace(config, featurevis=dataclasses.replace(config.featurevis, engine="spark"))
    with pytest.raises(AtlasError, match="`featurevis.engine` must be one of local, ray, not 'spark'"):
        engine_for(config, None, None)


def _counting(worker: Worker, item: int) -> int:
    worker.progress(item // 2)  # half along the way; the engine tells the rest
    return item * 10


def test_in_order_tells_each_jobs_size_once(tmp_path):
    told = []
    work = Work("test", _counting, str, size=lambda item: item)
    worker = Worker(torch.nn.Identity(), torch.device("cpu"))
    finished = list(in_order(worker, work, [4, 7, 1], told.append))
    assert finished == [(4, 40), (7, 70), (1, 10)]
    assert sum(told) == 12 and told[:2] == [2, 2]  # as it went, then the rest once its result was taken


def _dies_at_three(worker: Worker, item: int) -> int:
    if item == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return item


def test_a_local_worker_killed_by_a_signal_is_reported_as_its_end(tmp_path, capfd):
    config = _toy(tmp_path, jobs="2")
    network, graph = trace_layers(load_model(config), config.input.shape)
    engine = engine_for(config, network, graph)
    work = Work("test", _dies_at_three, str, size=lambda item: 1)
    try:
        with pytest.raises(AtlasError) as stopped:
            for _ in engine.run(work, list(range(8)), lambda count: None):
                pass
    finally:
        engine.close()
    error = stopped.value
    assert str(error).startswith("A test worker process died (killed by SIGKILL); the build stopped.")
    assert error.__cause__ is None and error.__suppress_context__  # printed alone, as the command line does
    assert "Traceback" not in capfd.readouterr().err
    assert not multiprocessing.active_children()  # the other worker ended too
