"""Searches spread over processes: two gloo processes score each subnet on half the batches each and
write the evaluations of one process, to the last image; the search resumes under torchrun."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT, model_config, stopped_search
from torch.utils.data import DataLoader

from supernet import create_supernet_from_config
from supernet.data import DataError, build_data, calibration_loader
from supernet.distributed import Dist, shard
from supernet.evaluate import accuracy

DATA = {"name": "digits", "img_size": 16, "val_fraction": 0.15, "test_fraction": 0.15, "max_shift": 1, "seed": 0}
BATCH = 64  # the digits' 270 validation images: 5 batches, the last short, 3 on rank 0 and 2 on rank 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def digits_cnn():
    """A digits MobileNetV3 supernet (random weights: distinct subnets still differ in accuracy) whose
    subnets have batch norms and fake-quantized blocks, where the last bit of a statistic shows."""
    torch.manual_seed(0)
    return create_supernet_from_config(model_config("mobilenetv3"), num_classes=10)


def archs(space):
    rng = np.random.default_rng(0)
    return [space.smallest(), *(space.sample(rng) for _ in range(2))]


def evaluate(dist: Dist) -> dict:
    """What one rank (or the one process) finds: rank 0 runs the evaluations as a search does, the
    others serve it; then every rank scores the smallest subnet with a calibration set of one batch."""
    from hw_profiles import load_profile
    from search.evaluator import SupernetEvaluator

    net, data = digits_cnn(), build_data(**DATA)
    loader = shard(DataLoader(data.val, batch_size=BATCH), dist, "split=val")
    test = shard(DataLoader(data.test, batch_size=BATCH), dist, "split=test")
    calib = shard(calibration_loader(data, 150, BATCH, seed=0), dist)  # 3 batches: 2 on rank 0, 1 on rank 1
    evaluator = SupernetEvaluator(net, load_profile("jetson"), loader, calib, dist=dist, loaders={"test": test})
    found = {"val": [i for b in loader.batch_sampler for i in b], "calib": [i for b in calib.batch_sampler for i in b]}
    if dist.main:
        found["evaluations"] = evaluator(archs(net.space))
        found["test"] = evaluator.accuracies(archs(net.space)[:0:-1], "test")
        evaluator.release()
    else:
        evaluator.serve()
    one_batch = shard(calibration_loader(data, 40, BATCH, seed=0), dist)  # rank 1 has none
    found["one_batch"] = accuracy(net, archs(net.space)[1], loader, "cpu", one_batch, dist)
    found["statistics"] = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    return found


def on_rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist = Dist.from_env("cpu")
    torch.save(evaluate(dist), os.path.join(out, f"rank{rank}.pt"))
    dist.close()


def test_two_ranks_score_halves_of_the_batches_and_match_one_process_exactly(tmp_path):
    mp.spawn(on_rank, args=(2, free_port(), str(tmp_path)), nprocs=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: the same kernels
    try:
        one = evaluate(Dist())
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    # every validation and calibration image read once, by one rank, no padding
    for what in ("val", "calib"):
        assert sorted(ranks[0][what] + ranks[1][what]) == one[what] == list(range(len(one[what])))
    assert len(ranks[1]["val"]) == 2 * BATCH and len(one["val"]) == 269
    # each subnet's accuracy to the last image (its latency estimated alike), on the search's split and
    # on the test split; the recalibrated batch norms bit for bit on both ranks
    assert ranks[0]["evaluations"] == one["evaluations"] and ranks[0]["test"] == one["test"]
    assert len(set(one["evaluations"]["accuracy"])) > 1
    for found in ranks:
        assert found["one_batch"] == one["one_batch"]
        assert all(torch.equal(found["statistics"][k], v) for k, v in one["statistics"].items())


def test_more_processes_than_batches_is_refused_naming_the_split():
    data = build_data(**DATA)
    loader = DataLoader(data.val, batch_size=100)  # 3 batches
    with pytest.raises(DataError, match=r"^4 processes but split=val has 269 images, 3 batch\(es\) of 100: "):
        shard(loader, Dist(rank=0, world=4), "split=val")


def test_nccl_without_a_gpu_and_more_ranks_than_gpus_are_one_line_errors(monkeypatch):
    from supernet.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"^device=cuda on 2 processes \(NCCL\) but no CUDA device is available"):
        Dist.from_env("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"^LOCAL_RANK=1 but this node has 1 CUDA device\(s\): run at most 1 "):
        Dist.from_env("cuda")


# -- the command line under torchrun ------------------------------------------------------------------
@pytest.fixture(scope="module")
def supernet_path(tmp_path_factory):
    net = digits_cnn()
    path = tmp_path_factory.mktemp("train") / "mbv3-digits" / "supernet.pt"
    path.parent.mkdir()
    torch.save({"format": "ofa-nas/supernet", "version": 1, "model": dict(net.config), "space": net.space.to_dict(),
                "state_dict": net.state_dict(), "train_state": {}, "metrics": {}, "config": {"data": DATA}}, path)
    return path


SEARCH = ["hw=jetson", "device=cpu", "budget=8", "init=6", "per_iteration=2", "generations=3", "population=12",
          "eval_batch_size=64", "bn_calib_images=150", "export.max_subnets=0"]  # jetson: latency estimated, exact


def test_torchrun_continues_a_search_on_two_processes_as_one_process_would(supernet_path, tmp_path):
    from hydra import compose, initialize_config_dir

    from search.run import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="search", overrides=[f"supernet={supernet_path}", f"out_dir={tmp_path / 'one'}",
                                                       *SEARCH])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank: the same kernels
    try:
        one = run(cfg)
    finally:
        torch.set_num_threads(threads)
    # the same search stopped after 2 real evaluations: two processes continue it (resume=DIR) and
    # score the other 6 (the rest of the initial ones, then the predictors' picks) on half the batches each
    two = stopped_search(one, 2, tmp_path / "two" / "jetson" / one.name)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                           f"--master_port={free_port()}", "-m", "search.run", f"supernet={supernet_path}",
                           f"out_dir={tmp_path / 'two'}", f"resume={two}", *SEARCH], capture_output=True, text=True,
                          cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"continuing in {two}" in proc.stdout and proc.stdout.count("Pareto front on jetson") == 1  # rank 0's
    assert [p.name for p in (tmp_path / "two" / "jetson").iterdir()] == [one.name]
    for name in ("evaluations.csv", "pareto.csv"):  # accuracy to the last image, the same picks
        assert (two / name).read_text() == (one / name).read_text(), name
    assert json.loads((two / "search_state.json").read_text())["finished"] is True
