"""The Ray engine (``featurevis.engine: ray``) on a local cluster of two workers, started the way
the README says (``ray start --head``): builds, lost workers, the engine protocol; and the exact
merge of dataset examples in parts."""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from generator import load_config
from generator.dataset_examples import BATCH, ProceduralImages, merge_parts, strongest
from generator.engines import Work, engine_for
from generator.errors import AtlasError
from generator.graph import trace_layers
from generator.images import Normalise
from generator.loading import load_model

from .conftest import ROOT, killed_part_way

RAY = Path(sys.executable).with_name("ray")


def _require_ray() -> None:
    """Ray is installed by `make test`; only a hand-made environment outside CI may lack it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("Ray is not installed: pip install -e '.[ray]'")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster of this machine with 2 CPUs (so 2 workers): its ``address`` and its
    temporary folder ``temp``. It is started with
    ``ray start --head --block`` in a process group of its own, which is ended afterwards (a
    plain ``ray stop`` would stop every Ray cluster of this machine)."""
    _require_ray()
    port, agent = _free_ports(2)
    temp = Path(tempfile.mkdtemp(prefix="ray"))  # short: Ray's socket paths must fit in 107 bytes
    output = (temp / "head.log").open("w")
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--num-gpus=0", "--include-dashboard=false", "--disable-usage-stats",
                             f"--dashboard-agent-listen-port={agent}",
                             f"--temp-dir={temp}"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "Ray runtime started" not in (temp / "head.log").read_text():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Ray cluster did not start: {(temp / 'head.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield SimpleNamespace(address=f"127.0.0.1:{port}", temp=str(temp))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGTERM)  # `--block` stops the cluster's processes on SIGTERM
            try:
                head.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        output.close()
        shutil.rmtree(temp, ignore_errors=True)


def _config(folder: Path, cluster: str | None, **changes) -> Path:
    """The default atlas's config, with ``changes`` merged in, building into ``folder``."""
    settings = yaml.safe_load((ROOT / "site_config" / "default.yml").read_text(encoding="utf-8"))
    settings["site"] = {"output": str(folder / "site")}
    settings["cache"] = str(folder / "cache")
    for section, values in changes.items():
        settings[section] = {**settings.get(section, {}), **values} if isinstance(values, dict) else values
    if cluster is not None:
        settings["featurevis"].update(engine="ray", address=cluster if isinstance(cluster, str) else cluster.address)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "atlas.yml"
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


def _build(config: Path, threads: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    result = subprocess.run([sys.executable, "-m", "generator", "build", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=int)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_ray_cluster_builds_the_default_atlas_like_the_local_engine(cluster, default_site, tmp_path):
    # The settings of the `default_site` fixture (built with the local engine), on the cluster.
    config = _config(tmp_path, cluster, featurevis={"steps": 8}, dataset={"images": 512})
    log = _build(config).stderr
    assert "1120 of 1120 pictures to make" in log and "on a Ray cluster, one task per CPU (2 CPUs)" in log
    assert "1,120 pictures made" in log
    local = sorted((default_site.parent / "cache" / "featurevis").rglob("*.png"))
    on_cluster = tmp_path / "cache" / "featurevis"
    assert len(local) == 1120
    for picture in local:
        twin = on_cluster / picture.relative_to(default_site.parent / "cache" / "featurevis")
        assert np.abs(_pixels(picture) - _pixels(twin)).max() <= 2, twin  # thread counts round differently
    # Dataset examples (one shard of 512 images): the same images and crops, the same values up to
    # the rounding of another thread count (the fixture's build used all cores, a task one).
    local_examples = sorted((default_site.parent / "cache" / "examples").rglob("examples.json"))
    assert len(local_examples) == 6
    for path in local_examples:
        twin = tmp_path / "cache" / "examples" / path.relative_to(default_site.parent / "cache" / "examples")
        ours, theirs = json.loads(twin.read_text()), json.loads(path.read_text())
        assert [[(e["image"], e["box"]) for e in unit] for unit in ours] == \
            [[(e["image"], e["box"]) for e in unit] for unit in theirs]
        assert np.allclose([e["value"] for unit in ours for e in unit], [e["value"] for unit in theirs for e in unit],
                           rtol=1e-5, atol=1e-5)
    assert (tmp_path / "site" / "index.html").is_file()


def test_sharded_dataset_examples_equal_one_pass_exactly(cluster, tmp_path):
    # 2,300 image files (3 shards of at most 1,024), two of them unreadable, some alike (ties).
    images = tmp_path / "images"
    images.mkdir()
    generator = np.random.default_rng(0)
    for i in range(2300):
        pixels = generator.integers(0, 256, (16, 16, 3), dtype=np.uint8) if i % 7 else np.full((16, 16, 3), 128,
                                                                                               np.uint8)
        Image.fromarray(pixels).save(images / f"{i:05d}.png")
    (images / "00100.png").write_bytes(b"not a picture")
    (images / "02000.png").write_bytes(b"\x89PNG broken")
    settings = {"featurevis": {"enabled": False}, "dataset": {"source": str(images), "images": 5000}}
    one_pass, sharded = _config(tmp_path / "local", None, **settings), _config(tmp_path / "ray", cluster, **settings)
    local_log, cluster_log = _build(one_pass, threads=1).stderr, _build(sharded).stderr  # one thread, as a task
    assert "2300 images in 3 shards on a Ray cluster" in cluster_log
    assert _files(tmp_path / "ray" / "cache" / "examples") == _files(tmp_path / "local" / "cache" / "examples")
    for log in (local_log, cluster_log):
        assert len(re.findall(r"skipped an unreadable image: 0(0100|2000)\.png", log)) == 2


def _running_a_task(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::atlas_task")
    except OSError:
        return False


def _in_cluster(pid: int, temp: str) -> bool:
    """Whether ``pid`` descends from a process of the cluster (its raylet names the cluster's
    temporary folder on its command line)."""
    for _ in range(4):
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])  # the parent
            if temp.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except (OSError, ValueError, IndexError):
            return False
    return False


def _workers_running_a_task(temp: str) -> list[int]:
    """Processes of the cluster whose title is Ray's for a worker running one of the build's tasks."""
    return [int(proc.name) for proc in Path("/proc").iterdir()
            if proc.name.isdigit() and _running_a_task(int(proc.name)) and _in_cluster(int(proc.name), temp)]


def test_a_worker_killed_mid_build_loses_only_its_job(cluster, tmp_path):
    config = _config(tmp_path, cluster, layers=["conv2d1"], featurevis={"steps": 80, "batch": 16},
                     dataset={"source": None})
    build = subprocess.Popen([sys.executable, "-m", "generator", "build", str(config)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, killed = time.monotonic() + 300, False
    while not killed and build.poll() is None and time.monotonic() < deadline:
        for pid in _workers_running_a_task(cluster.temp):
            time.sleep(0.3)  # well inside its job (each takes seconds)
            if _running_a_task(pid):  # still on it
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.05)
    assert killed, "no task was seen running"
    out, log = build.communicate(timeout=600)
    assert build.returncode == 0, log[-3000:]
    lost = re.findall(r"The job of 16 (?:negative )?pictures of `\w+` \(units \d+ to \d+\) was lost with its Ray "
                      r"worker .*; it runs again", log)
    assert len(lost) == 1, log[-3000:]  # that job alone ran again
    assert "96 pictures made" in log and "96 made, 0 from the cache" in out
    assert len(list((tmp_path / "cache" / "featurevis").rglob("*.json"))) == 96


def test_a_killed_build_resumes_on_the_cluster_with_the_missing_pictures_only(cluster, tmp_path):
    config = _config(tmp_path, cluster, layers=["conv2d1", "mixed3a"], featurevis={"steps": 16, "batch": 16},
                     dataset={"source": None})
    finished = killed_part_way(config, tmp_path / "cache", 64)
    assert 64 <= finished < 352, finished
    result = _build(config)
    assert f"{352 - finished} of 352 pictures to make" in result.stderr
    assert f"{352 - finished} made, {finished} from the cache" in result.stdout


def test_an_address_where_no_cluster_answers_is_reported_at_once(tmp_path):
    _require_ray()
    (port,) = _free_ports(1)  # nothing listens there
    config = _config(tmp_path, f"127.0.0.1:{port}", layers=["conv2d1"], featurevis={"steps": 2})
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "generator", "build", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"No Ray cluster answers at 127.0.0.1:{port}" in result.stderr and "ray start --head" in result.stderr
    assert time.monotonic() - start < 120


def test_engine_settings_are_checked(tmp_path):
    for settings, message in (({"engine": "spark"}, "`featurevis.engine` must be one of local, ray"),
                              ({"address": "10.0.0.1:6379"}, "needs `featurevis.engine: ray`"),
                              ({"precision": "fp16"}, "`featurevis.precision` must be float32 or bfloat16"),
                              ({"batch": -1}, "`featurevis.batch` must be a whole number from 0 to 4,096")):
        path = _config(tmp_path, None, featurevis=settings)
        with pytest.raises(AtlasError, match=re.escape(message)):
            load_config(path)


def test_parts_of_the_images_merge_into_one_pass_exactly_in_any_order():
    """Exact top-k merging, ties included: many units of the default model are 0 on many images."""
    config = load_config(ROOT / "site_config" / "default.yml")
    network, graph = trace_layers(load_model(config), config.input.shape)
    names = [layer.name for layer in graph.layers[:4]]
    model = network.truncated([graph.values[name] for name in names]).eval()
    source, normalise = ProceduralImages(1280, 0, 64), Normalise(config.input, torch.device("cpu"))
    whole = strongest(model, names, source.batches(BATCH), normalise, 8, torch.device("cpu"))
    assert any((best.values == 0).sum() > 8 for best in whole.values())  # ties at zero to break
    bounds = [0, 256, 768, 1024, 1280]  # parts of whole procedural batches
    parts = [strongest(model, names, source.batches(BATCH, first, stop), normalise, 8, torch.device("cpu"))
             for first, stop in zip(bounds, bounds[1:])]
    for order in ([3, 1, 0, 2], [0, 1, 2, 3], [2, 3, 1, 0]):
        merged = merge_parts([parts[i] for i in order], 8)
        for name in names:
            for field in ("values", "images", "rows", "columns", "fired"):
                assert torch.equal(getattr(merged[name], field), getattr(whole[name], field)), (order, name, field)


def test_a_model_whose_package_imports_torchvision_builds_on_the_cluster(cluster, tmp_path):
    # facenet-pytorch imports torchvision, whose compiled operators do not load beside the CPU torch:
    # the workers, which unpickle the model, need the same preparation as the build.
    config = _config(tmp_path, cluster, model={"source": "tests.zoo:onet"}, layers=["conv1"],
                     input={"channels": 3, "size": 48, "mean": [0.5] * 3, "std": [0.5] * 3},
                     featurevis={"steps": 2}, dataset={"source": None})
    result = _build(config)
    assert "64 made, 0 from the cache" in result.stdout  # 32 units, both directions


def _job(worker, item: str) -> str:
    """A job of the protocol tests: ``fail`` raises the build's kind of error; ``slow`` takes a minute."""
    if item == "fail":
        raise AtlasError("A message from the job, word for word.")
    time.sleep(60 if item == "slow" else 0)
    return item.upper()


def _waited(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)
    return bool(condition())


def test_the_ray_engine_keeps_one_connection_passes_errors_on_and_cancels_when_stopped(cluster, tmp_path):
    import ray

    config = load_config(_config(tmp_path, cluster, layers=["conv2d1"]))
    network, graph = trace_layers(load_model(config), config.input.shape)
    work, told = Work("test", _job, str, size=len), []
    engine = engine_for(config, network, graph)
    try:
        assert not ray.is_initialized()  # nothing sent yet: not joined
        assert dict(engine.run(work, ["ab", "c"], told.append)) == {"ab": "AB", "c": "C"} and sorted(told) == [1, 2]
        job = ray.get_runtime_context().get_job_id()
        with pytest.raises(AtlasError) as failed:
            list(engine.run(work, ["fail"], told.append))
        assert str(failed.value) == "A message from the job, word for word." and failed.value.__cause__ is None
        finished = engine.run(work, ["slow", "quick"], told.append)
        assert next(finished) == ("quick", "QUICK")
        assert _waited(lambda: _workers_running_a_task(cluster.temp))  # the slow job runs
        finished.close()  # the build stops
        assert _waited(lambda: not _workers_running_a_task(cluster.temp))  # cancelled, not left to run
        assert ray.get_runtime_context().get_job_id() == job  # one connection throughout
    finally:
        engine.close()
    assert not ray.is_initialized()  # the build's connection ends with it
