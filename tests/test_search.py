"""The search: the library loop on a synthetic space whose true front is known, and the CLI on a
digits ViT supernet checkpoint."""
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, model_config, stopped_search
from pymoo.indicators.hv import HV

from hw_profiles import ProfileError
from predictors import PredictorError
from search import ALGORITHMS, SearchConfigError, run_search
from search.objectives import pareto_mask
from supernet import create_supernet_from_config
from supernet.checkpoint import CheckpointError, save_checkpoint
from supernet.space import Dim, SearchSpace

# -- a synthetic space: six genes of 8 choices, accuracy concave in each, latency linear -------------
IMPORTANCE = np.array([3.0, 2.0, 1.5, 1.0, 0.7, 0.5])
COST = np.array([1.0, 2.0, 0.5, 3.0, 1.0, 2.5])


class ToySpace(SearchSpace):
    family = "toy"

    def __init__(self):
        super().__init__([Dim("x", tuple(range(8)), length=6)])

    def canonical(self, arch):
        return self.validate(arch)

    def cardinality(self):
        return 8**6

    def _layers(self, arch):
        # a memory-bound toy device: toy_truth's latency is the layers' activation traffic, as the
        # search's latency predictors (structural features: bytes per op kind) can see it
        return [(f"layer{i}", "linear", 100 * v, 10 * v, round(16 * COST[i] * v), 32) for i, v in enumerate(arch["x"])]


def toy_truth(X):
    X = np.asarray(X, dtype=np.float64)
    accuracy = 1 - (IMPORTANCE * (1 - np.sqrt(X / 7))).sum(-1) / IMPORTANCE.sum()
    return accuracy, 1 + (COST * X).sum(-1)


class ToyEvaluator:
    """Counts every arch it is asked to evaluate; raises after ``fail_after`` archs (an interruption)."""

    def __init__(self, fail_after=None):
        self.seen, self.fail_after = [], fail_after

    def __call__(self, archs):
        if self.fail_after is not None and len(self.seen) + len(archs) > self.fail_after:
            raise KeyboardInterrupt
        self.seen += [json.dumps(a["x"]) for a in archs]
        accuracy, latency = toy_truth([a["x"] for a in archs])
        return {"accuracy": accuracy, "latency_ms": latency, "latency_source": ["synthetic"] * len(archs)}


@pytest.fixture(scope="module")
def toy_front():
    """Normalised objective bounds and the true hypervolume, from all 262,144 archs."""
    accuracy, latency = toy_truth(list(itertools.product(range(8), repeat=6)))
    F = np.stack([-accuracy, latency], axis=1)
    low, high = F.min(axis=0), F.max(axis=0)
    order = np.lexsort((F[:, 0], F[:, 1]))  # by latency, then accuracy: the front is a running minimum
    best, front = np.inf, []
    for i in order:
        if F[i, 0] < best:
            best = F[i, 0]
            front.append(i)

    def hypervolume(rows):
        G = np.array([[-r["accuracy"], r["latency_ms"]] for r in rows])
        return HV(ref_point=np.full(2, 1.1))((G - low) / (high - low))

    return hypervolume, HV(ref_point=np.full(2, 1.1))((F[front] - low) / (high - low))


def toy_search(**options):
    settings = dict(budget=60, init=20, per_iteration=10, generations=20, population=50, seed=0, progress=False)
    return run_search(ToySpace(), options.pop("evaluate", ToyEvaluator()), **{**settings, **options})


def test_loop_finds_most_of_the_true_front_and_beats_random_search(toy_front):
    hypervolume, best = toy_front
    result = toy_search()
    rng = np.random.default_rng(0)
    columns = ToyEvaluator()([{"x": rng.integers(0, 8, 6).tolist()} for _ in range(60)])
    random_rows = [{"accuracy": a, "latency_ms": t}
                   for a, t in zip(columns["accuracy"], columns["latency_ms"], strict=True)]
    assert len(result.evaluations) == 60
    assert hypervolume(result.pareto) >= 0.93 * best
    assert hypervolume(result.pareto) > hypervolume(random_rows) + 0.05
    # the log: hypervolume never falls, and predictor quality is measured on the proposed candidates
    curve = [entry["hypervolume"] for entry in result.log]
    assert curve == sorted(curve) and len(result.log) == 4
    assert all(entry["accuracy_kendall_tau"] > 0.5 for entry in result.log)


def test_pareto_rows_are_exactly_the_non_dominated_evaluations():
    result = toy_search(budget=30, init=10)
    F = np.array([[-r["accuracy"], r["latency_ms"]] for r in result.evaluations])
    expected = {r["id"] for r, keep in zip(result.evaluations, pareto_mask(F), strict=True) if keep}
    assert {r["id"] for r in result.pareto} == expected
    assert len({json.dumps(r["arch"]) for r in result.evaluations}) == 30  # no arch evaluated twice


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_improves_on_the_initial_evaluations(algorithm, toy_front):
    hypervolume, _ = toy_front
    result = toy_search(algorithm=algorithm, budget=40, generations=10, population=40)
    initial = [r for r in result.evaluations if r["iteration"] == 0]
    assert len(result.evaluations) == 40
    assert hypervolume(result.pareto) > hypervolume(initial)


def test_three_objectives_with_an_exact_one_and_a_constraint():
    result = toy_search(objectives=("accuracy", "latency_ms", "macs"), constraints={"latency_ms": 25}, budget=30)
    assert result.pareto and all(r["latency_ms"] <= 25 for r in result.pareto)
    assert all(r["macs"] == 100 * sum(r["arch"]["x"]) for r in result.evaluations)  # exact, from the space


@pytest.mark.parametrize("bound", [8.0, 25.0])
def test_every_proposal_of_a_constrained_search_is_predicted_feasible(bound):
    # latency exact (so predicted = true): a proposal over the bound can only be one the loop chose
    # knowing it infeasible, as the random top-up of a converged algorithm used to be
    def latency(archs):
        return toy_truth([a["x"] for a in archs])[1]

    result = toy_search(constraints={"latency_ms": bound}, exact={"latency_ms": latency}, budget=50,
                        generations=30, population=10)  # a small population converges on evaluated archs
    proposed = [r for r in result.evaluations if r["iteration"] > 0]
    assert len(proposed) == 30 and all(r["latency_ms"] <= bound for r in proposed)
    assert all(entry["candidates_feasible_share"] == 1.0 for entry in result.log)
    initial = [r for r in result.evaluations if r["iteration"] == 0]
    assert result.log[-1]["feasible_share"] == pytest.approx(
        (sum(r["latency_ms"] <= bound for r in initial) + 30) / 50)


def test_an_interrupted_search_resumes_without_repeating_a_real_evaluation(tmp_path):
    straight = toy_search(out_dir=tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        toy_search(out_dir=tmp_path / "broken", evaluate=ToyEvaluator(fail_after=37), chunk_size=4)
    on_file = list(csv.DictReader(open(tmp_path / "broken" / "evaluations.csv")))
    assert 30 <= len(on_file) <= 37
    again = ToyEvaluator()
    resumed = toy_search(out_dir=tmp_path / "broken", evaluate=again, chunk_size=4)
    assert len(again.seen) == 60 - len(on_file)
    assert not set(again.seen) & {json.dumps(json.loads(row["arch"])["x"]) for row in on_file}
    assert [r["arch"] for r in resumed.evaluations] == [r["arch"] for r in straight.evaluations]
    for name in ("evaluations.csv", "pareto.csv", "pareto.png", "search_log.csv"):
        assert (tmp_path / "broken" / name).stat().st_size > 0
    assert not [p for p in (tmp_path / "broken").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("options, message", [
    ({"objectives": ("accuracy", "speed")}, "unknown objective 'speed'; objectives: accuracy, latency_ms"),
    ({"algorithm": "nsga9"}, "unknown algorithm 'nsga9'; algorithms: nsga2, agemoea"),
    ({"constraints": {"macs": -5}}, "constraint macs<=-5 is met by no subnet: the nearest, smallest, has macs=0"),
    ({"constraints": {"flops": 10}}, "unknown constraint 'flops'"),
    ({"objectives": ("accuracy",)}, "name two or more different objectives"),
    ({"budget": 300_000}, r"budget=300000 is more real evaluations than the space has subnets \(262144\)"),
    ({"population": 0}, "population=0: allowed: an integer >= 2"),
    ({"generations": 0}, "generations=0: allowed: an integer >= 1"),
    ({"budget": "abc"}, "budget='abc': allowed: an integer >= 1"),
    ({"predictor": "xgb"}, "unknown predictor 'xgb'; known predictors: "),
])
def test_bad_options_are_refused_before_any_evaluation(options, message):
    evaluator = ToyEvaluator()
    with pytest.raises((SearchConfigError, PredictorError), match=message):
        toy_search(evaluate=evaluator, **options)
    assert evaluator.seen == []


def test_an_evaluator_that_misses_an_objective_is_named():
    with pytest.raises(SearchConfigError, match="evaluate\\(\\) returned \\['accuracy'\\] but the search needs "
                                                "'latency_ms'"):
        toy_search(evaluate=lambda archs: {"accuracy": np.zeros(len(archs))})


# -- the command line on a digits ViT supernet ----------------------------------------------------------
@pytest.fixture(scope="module")
def supernet_path(tmp_path_factory):
    """A digits ViT supernet checkpoint as supernet.train writes it (random weights: the search only
    needs a valid checkpoint, and distinct subnets then still differ in accuracy)."""
    torch.manual_seed(0)
    net = create_supernet_from_config(model_config("vit"), num_classes=10)
    path = tmp_path_factory.mktemp("train") / "vit-digits" / "supernet.pt"
    path.parent.mkdir()
    torch.save({"format": "ofa-nas/supernet", "version": 1, "model": dict(net.config), "space": net.space.to_dict(),
                "state_dict": net.state_dict(), "train_state": {}, "metrics": {},
                "config": {"data": {"name": "digits", "img_size": 16, "val_fraction": 0.15, "test_fraction": 0.15,
                                    "max_shift": 1, "seed": 0}}}, path)
    return path


def search_cmd(supernet, out, *overrides):
    return [sys.executable, "-m", "search.run", f"supernet={supernet}", f"out_dir={out}", "budget=16", "init=8",
            "per_iteration=4", "generations=5", "population=20", "export.max_subnets=2", "export.onnx=false",
            *overrides]


def run_cli(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})


def test_cli_searches_per_profile_and_exports_the_front(supernet_path, tmp_path):
    fronts = {}
    for hw in ("jetson", "rpi4"):
        proc = run_cli(search_cmd(supernet_path, tmp_path, f"hw={hw}"))
        assert proc.returncode == 0, proc.stderr
        (out,) = (tmp_path / hw).iterdir()
        assert f"results: {out}/" in proc.stdout and "Pareto front on " + hw in proc.stdout
        rows = list(csv.DictReader(open(out / "evaluations.csv")))
        assert len(rows) == 16 and {r["latency_source"] for r in rows} == {"estimated"}
        assert {r["profile"] for r in rows} == {hw}
        pareto = list(csv.DictReader(open(out / "pareto.csv")))
        fronts[hw] = {r["arch"]: float(r["latency_ms"]) for r in pareto}
        subnets = sorted((out / "subnets").iterdir())
        assert 1 <= len(subnets) <= 2
        meta = json.loads((subnets[0] / "arch.json").read_text())
        assert meta["metrics"]["latency_source"] == "estimated" and meta["metrics"]["profile"] == hw
        assert json.dumps(meta["arch"], separators=(",", ":")) in fronts[hw]
        assert {"model.pt", "model.pt2"} <= {p.name for p in subnets[0].iterdir()}
        res = meta["arch"]["resolution"]  # what a deployer feeds the model
        assert meta["input"]["shape"] == [1, 1, res, res] and meta["input"]["pixel_scale"] == 1 / 16
        assert (out / "pareto.png").stat().st_size > 0
        assert json.loads((out / "search_state.json").read_text())["finished"] is True
    # the same subnet is slower on a Raspberry Pi 4 than on a Jetson, and the fronts differ
    assert fronts["jetson"] != fronts["rpi4"]
    assert min(fronts["rpi4"].values()) > max(fronts["jetson"].values())


def test_measured_latency_on_local_cpu_is_predicted_between_evaluations(supernet_path, tmp_path):
    from search.run import run

    # eager timing: what is tested is the latency predictor between measurements, whatever times them
    # (tests/test_quant_onnx.py checks that the onnxruntime backend times the integer export)
    out = run(compose(supernet_path, tmp_path, "hw=local_cpu", "hw.backend=torch", "hw.repeats=5", "hw.warmup=1",
                      "budget=12", "export.max_subnets=1"))
    rows = list(csv.DictReader(open(out / "evaluations.csv")))
    assert {r["latency_source"] for r in rows} == {"measured"} and all(float(r["latency_ms"]) > 0 for r in rows)
    log = list(csv.DictReader(open(out / "search_log.csv")))
    assert "latency_ms_mape" in log[-1]


def test_resume_auto_continues_an_unfinished_search(supernet_path, tmp_path, capsys):
    from search.run import run

    out = run(compose(supernet_path, tmp_path, "hw=jetson"))
    # as if it had stopped after 10 real evaluations
    rows = list(csv.DictReader(open(out / "evaluations.csv")))
    stopped_search(out, 10)
    stale = out / ".evaluations.csv.0123456789abcdef.tmp"  # a write killed mid-way (kill -9)
    stale.write_text("id,arch\n0,")
    capsys.readouterr()
    assert run(compose(supernet_path, tmp_path, "hw=jetson")) == out
    assert f"continuing in {out}" in capsys.readouterr().out and len(list((tmp_path / "jetson").iterdir())) == 1
    assert not stale.exists()
    again = list(csv.DictReader(open(out / "evaluations.csv")))
    assert [r["arch"] for r in again] == [r["arch"] for r in rows]
    assert [r["accuracy"] for r in again[:10]] == [r["accuracy"] for r in rows[:10]]


def compose(supernet, out, *overrides):
    """The CLI's config, composed in this process (hydra's compose API) for the cases that need no
    subprocess."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    args = search_cmd(supernet, out, *overrides)[3:]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="search", overrides=args)


@pytest.mark.parametrize("overrides, error, message", [
    (["objectives=[accuracy,speed]"], SearchConfigError, "unknown objective 'speed'; objectives: accuracy, "),
    (["supernet=/nonexistent/supernet.pt"], CheckpointError, "/nonexistent/supernet.pt"),
    (["hw.memory_gbps=fast"], ProfileError, "memory_gbps"),
    (["constraints.macs=10"], SearchConfigError, "constraint macs<=10 is met by no subnet: the nearest, "),
    (["predictor=xgb"], PredictorError, "unknown predictor 'xgb'"),
    (["device=tpu"], SearchConfigError, "device='tpu'; allowed: auto, cpu, cuda"),
    (["population=0"], SearchConfigError, "population=0"),
    (["budget=abc"], SearchConfigError, "budget='abc'"),
    (["budget=2000000"], SearchConfigError, "budget=2000000 is more real evaluations than the space has subnets"),
    (["hw=local_gpu"] if not torch.cuda.is_available() else ["split=train"], ProfileError if not
     torch.cuda.is_available() else SearchConfigError, "CUDA" if not torch.cuda.is_available() else "split"),
])
def test_bad_input_is_one_line_and_leaves_no_result(supernet_path, tmp_path, overrides, error, message):
    from search.run import run

    cfg = compose(supernet_path, tmp_path, "hw=jetson", *overrides)
    with pytest.raises(error, match=message) as caught:
        run(cfg)
    assert "\n" not in str(caught.value)
    assert not list(tmp_path.rglob("*"))


def test_cli_error_is_one_line_without_traceback(supernet_path, tmp_path):
    proc = run_cli(search_cmd(supernet_path, tmp_path / "out", "hw=jetson", "algorithm=nsga9"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("error: unknown algorithm 'nsga9'; algorithms: nsga2, agemoea, "
                                                    "unsga3, ctaea, random")
    assert not (tmp_path / "out").exists()  # not even an empty directory


def test_without_supernet_the_search_refuses_to_guess_between_models(supernet_path, tmp_path):
    from search.run import default_supernet

    train_dir = tmp_path / "train"
    for name in ("vit-digits", "vit_tiny-digits"):
        (train_dir / name).mkdir(parents=True)
        (train_dir / name / "supernet.pt").write_bytes(supernet_path.read_bytes())
    assert default_supernet(train_dir) == train_dir / "vit_tiny-digits" / "supernet.pt"  # same model: the newest
    other = torch.load(supernet_path, weights_only=True)
    other["model"] = {**other["model"], "depth": [1, 2]}
    torch.save(other, train_dir / "vit_tiny-digits" / "supernet.pt")
    with pytest.raises(SearchConfigError, match="2 supernets of 2 different models") as caught:
        default_supernet(train_dir)
    assert "vit-digits/supernet.pt" in str(caught.value) and "vit_tiny-digits/supernet.pt" in str(caught.value)
    assert "supernet=PATH" in str(caught.value)


def test_a_file_that_is_not_a_supernet_is_refused(tmp_path):
    from search.run import run

    fake = tmp_path / "supernet.pt"
    torch.save({"format": "something/else"}, fake)
    with pytest.raises(CheckpointError, match="is not an ofa-nas/supernet checkpoint"):
        run(compose(fake, tmp_path / "out", "hw=jetson"))


def test_warns_with_the_nearest_subnets_when_no_subnet_meets_a_constraint(supernet_path, tmp_path, capsys):
    from search.run import run

    run(compose(supernet_path, tmp_path, "hw=jetson", "constraints.accuracy=0.999"))
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "no evaluated subnet meets accuracy>=0.999; nearest: id " in warning[0]
    (out,) = (tmp_path / "jetson").iterdir()
    assert len(list(csv.DictReader(open(out / "pareto.csv")))) == 0 and not (out / "subnets").exists()


def test_unknown_profile_is_named(supernet_path, tmp_path):
    proc = run_cli(search_cmd(supernet_path, tmp_path, "hw=jetson_nano_9000"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "jetson_nano_9000" in proc.stderr and "jetson_agx" in proc.stderr


def test_pareto_png_shows_the_constraint_and_the_evaluations_that_break_it(tmp_path, monkeypatch):
    import matplotlib.figure

    drawn = []
    real_savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *args, **kwargs: (drawn.append(fig), real_savefig(fig, *args, **kwargs)))
    result = toy_search(constraints={"latency_ms": 25}, budget=30, out_dir=tmp_path)
    (ax,) = drawn[-1].axes
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    broken = sum(r["latency_ms"] > 25 for r in result.evaluations)
    assert broken > 0 and f"breaking a constraint ({broken})" in labels
    assert "latency_ms <= 25" in labels and "latency_ms <= 25" in ax.get_title()


@pytest.mark.parametrize("damage", ["cut", "garbage"])
def test_a_damaged_evaluations_csv_is_named_with_its_line(tmp_path, damage):
    toy_search(budget=24, init=12, per_iteration=6, out_dir=tmp_path)
    path = tmp_path / "evaluations.csv"
    lines = path.read_text().splitlines(keepends=True)
    lines[5] = lines[5][: len(lines[5]) // 2] + "\n" if damage == "cut" else "%%% not a row %%%\n"
    path.write_text("".join(lines))
    with pytest.raises(SearchConfigError, match=f"{path}: line 6 ") as caught:
        toy_search(budget=24, init=12, per_iteration=6, out_dir=tmp_path)
    assert "\n" not in str(caught.value)


def test_a_broken_search_state_elsewhere_never_blocks_a_new_search(supernet_path, tmp_path, capsys):
    from search.run import run

    broken = tmp_path / "jetson" / "20260101-000000"
    broken.mkdir(parents=True)
    (broken / "search_state.json").write_text('{"settings": {"budget": 16')  # cut short
    out = run(compose(supernet_path, tmp_path, "hw=jetson", "budget=10", "init=6", "export.max_subnets=0"))
    assert out != broken and (out / "pareto.csv").exists()
    assert f"skipping {broken}" in capsys.readouterr().err
    with pytest.raises(SearchConfigError, match=f"{broken}/search_state.json is damaged"):
        run(compose(supernet_path, tmp_path, "hw=jetson", f"resume={broken}"))


def test_out_dir_that_is_a_file_is_refused(supernet_path, tmp_path):
    from search.run import run

    (tmp_path / "file").write_text("")
    with pytest.raises(SearchConfigError, match="out_dir=.* is a file"):
        run(compose(supernet_path, tmp_path / "file", "hw=jetson"))


def test_a_search_refuses_to_resume_against_a_retrained_supernet(supernet_path, tmp_path, monkeypatch):
    import search.evaluator
    from search.run import run

    path = tmp_path / "vit-digits" / "supernet.pt"
    path.parent.mkdir()
    path.write_bytes(supernet_path.read_bytes())

    def interrupted(self, archs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # stopped during its first real evaluations
        patch.setattr(search.evaluator.SupernetEvaluator, "__call__", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run(compose(path, tmp_path / "out", "hw=jetson"))
    retrained = torch.load(path, weights_only=True)
    retrained["state_dict"]["head.bias"] += 1.0
    save_checkpoint(retrained, path)
    with pytest.raises(SearchConfigError, match="with digest .* which now has digest .* resuming would mix two"):
        run(compose(path, tmp_path / "out", "hw=jetson"))


def test_a_second_search_of_the_same_settings_never_joins_a_running_one(supernet_path, tmp_path):

    from search.run import holder, search_dir

    cfg = compose(supernet_path, tmp_path, "hw=jetson")
    settings = {"budget": 16}
    running = tmp_path / "jetson" / "20260101-000000"
    running.mkdir(parents=True)
    (running / "search_state.json").write_text(json.dumps({"settings": settings, "finished": False}))
    assert search_dir(cfg, "jetson", settings) == running  # unfinished and unlocked: continue it
    # another process holds it: a subprocess keeps the lock while this one asks
    hold = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); f.write('pid 42 on x');"
        " f.flush(); print('locked', flush=True); time.sleep(60)"), str(running / ".lock")], stdout=subprocess.PIPE,
        text=True)
    try:
        assert hold.stdout.readline().strip() == "locked"
        assert holder(running) == "pid 42 on x"
        assert search_dir(cfg, "jetson", settings) != running  # a new stamp, not the running search's directory
    finally:
        hold.kill()
        hold.wait()
    assert holder(running) is None  # released when its holder ends


def test_sigterm_stops_a_search_that_then_resumes(supernet_path, tmp_path):
    cmd = search_cmd(supernet_path, tmp_path, "hw=jetson", "budget=40")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 300
    while not list(tmp_path.rglob("evaluations.csv")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "interrupted: run the same command again to continue" in err and "Traceback" not in err
    (out,) = (tmp_path / "jetson").iterdir()
    assert json.loads((out / "search_state.json").read_text())["finished"] is False
    assert run_cli(cmd).returncode == 0
    assert json.loads((out / "search_state.json").read_text())["finished"] is True


def test_a_checkpoint_naming_pretrained_weights_opens_nothing_else(supernet_path, tmp_path):
    from supernet.checkpoint import load_supernet

    ckpt = torch.load(supernet_path, weights_only=True)
    ckpt["model"] = {**ckpt["model"], "pretrained": "vit_tiny_patch16_224", "pretrained_path": "/etc/passwd"}
    save_checkpoint(ckpt, tmp_path / "foreign.pt")
    net = load_supernet(tmp_path / "foreign.pt")  # no hub, no local file: the weights are in the checkpoint
    assert torch.equal(net.state_dict()["head.weight"], ckpt["state_dict"]["head.weight"])


def test_the_cli_and_the_library_share_their_defaults():
    import yaml

    from search.loop import DEFAULTS

    conf = yaml.safe_load((ROOT / "conf" / "search.yaml").read_text())
    assert {key: conf[key] for key in DEFAULTS} == DEFAULTS
