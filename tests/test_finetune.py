"""Fine-tuning from a supernet.pt (``supernet.train init_from=PATH``) and searching a supernet on other
data than it records (``search.run data=NAME data.root=DIR``)."""
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, run_training
from hydra import compose, initialize_config_dir
from PIL import Image

from supernet import create_supernet_from_config
from supernet.checkpoint import load_checkpoint, load_supernet, save_checkpoint
from supernet.data import DataError
from supernet.errors import ConfigError

# a narrow digits MobileNetV3: a CNN learns digits in a few dozen steps (the digits ViT needs epochs)
MODEL = ["model.base_widths=[8,8,8,8,16,16,16,32,64]", "model.resolution=[8,12]", "model.bits=[32]"]
SOURCE_SCHEDULE = ("model.schedule=[{name:largest,epochs:1,lr:0.003,unlock:[resolution]},"
                   "{name:kernel,epochs:1,lr:0.002,unlock:[ks,depth]}]")
QUICK = ["max_steps_per_epoch=4", "batch_size=16", "sampler.pool_size=100", "num_eval_subnets=0",
         "bn_calib_images=64", "threads=1"]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(*overrides, stop_at_step=None) -> int:
    """``supernet.train.run`` in this process on ``QUICK`` and ``overrides`` (``conftest.run_training``)."""
    return run_training([*QUICK, *overrides], stop_at_step)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A digits supernet trained here for 80 steps (two phases: resolution, then kernel and depth
    elastic): its largest subnet scores ~60% (chance: 10%)."""
    out = tmp_path_factory.mktemp("train")
    assert train("+model=mobilenetv3", *MODEL, f"out_dir={out}", "run_name=src", SOURCE_SCHEDULE,
                 "max_steps_per_epoch=40", "batch_size=32", "sandwich.num_random=0") == 0
    return out / "src" / "supernet.pt"


def read(path) -> dict:
    return load_checkpoint(path, "ofa-nas/supernet")


def parameters(ckpt: dict) -> dict:
    """The learned tensors: batch norm's running statistics move in any training forward (and every
    evaluation re-estimates them)."""
    return {key: value for key, value in ckpt["state_dict"].items() if value.is_floating_point()
            and not key.endswith(("running_mean", "running_var"))}


def largest_accuracy(ckpt: dict) -> float:
    return next(r["accuracy"] for r in ckpt["metrics"]["final"]["subnets"] if r["subnet"] == "largest")


def test_a_finetune_at_a_vanishing_rate_keeps_the_source_weights(source, tmp_path):
    # init_from was an unknown key before: the run would not even compose
    assert train(f"init_from={source}", f"out_dir={tmp_path}", "finetune.epochs=1", "finetune.lr=1e-12",
                 "max_steps_per_epoch=2") == 0
    run_dir = tmp_path / "src-finetune-digits"
    tuned, src = read(run_dir / "supernet.pt"), read(source)
    assert tuned["train_state"]["step"] == 2 and tuned["train_state"]["complete"]
    assert tuned["model"] == src["model"]  # the checkpoint's own model, no +model given
    assert tuned["metrics"]["init_from"] == {"path": str(source), "digest": src["digest"],
                                             "elastic": ["resolution", "ks", "depth"]}
    assert [row["phase"] for row in tuned["metrics"]["history"]] == ["finetune"]
    assert tuned["config"]["model"]["schedule"] == [{"name": "finetune", "epochs": 1, "lr": 1e-12,
                                                     "unlock": ["resolution", "ks", "depth"]}]
    for key, value in parameters(src).items():  # the weights it started from, not a fresh init
        assert torch.allclose(tuned["state_dict"][key], value, rtol=0, atol=1e-9), key
    assert largest_accuracy(tuned) == largest_accuracy(src)
    assert "schedule:" in (run_dir / "config.yaml").read_text()  # the model trained, as for +model runs
    load_supernet(run_dir / "supernet.pt")  # a normal supernet.pt: search.run and export take it


def test_the_command_line_finetunes_at_a_small_rate_and_stays_close(source, tmp_path):
    cmd = [sys.executable, "-m", "supernet.train", f"init_from={source}", f"out_dir={tmp_path}", "run_name=ft",
           "finetune.epochs=1", "finetune.lr=1e-4", *QUICK, "max_steps_per_epoch=2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"starting from {source} (already elastic in resolution, ks, depth)" in proc.stdout
    tuned, src = read(tmp_path / "ft" / "supernet.pt"), read(source)
    diffs = [(tuned["state_dict"][k] - v).abs().max().item() for k, v in parameters(src).items()]
    assert 0 < max(diffs) < 5e-3  # two AdamW steps of at most ~lr each
    assert abs(largest_accuracy(tuned) - largest_accuracy(src)) <= 0.05


def test_a_resumed_finetune_continues_from_its_own_checkpoint(source, tmp_path):
    common = [f"init_from={source}", f"out_dir={tmp_path}", "finetune.epochs=2", "finetune.lr=1e-3",
              "max_steps_per_epoch=2"]
    assert train(*common, "run_name=straight") == 0
    assert train(*common, "run_name=broken", stop_at_step=3) == 128 + signal.SIGTERM
    assert read(tmp_path / "broken" / "supernet.pt")["train_state"]["step"] == 3
    moved = source.with_name("moved.pt")
    source.rename(moved)  # resume reads the run's own checkpoint: init_from is not opened again
    try:
        assert train(*common, "run_name=broken") == 0
    finally:
        moved.rename(source)
    straight = read(tmp_path / "straight" / "supernet.pt")
    resumed = read(tmp_path / "broken" / "supernet.pt")
    assert resumed["train_state"]["step"] == 4 and resumed["metrics"]["init_from"] == straight["metrics"]["init_from"]
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_plus_model_must_be_the_checkpoints_model_and_then_brings_its_schedule(source, tmp_path):
    with pytest.raises(ConfigError, match=r"\+model is another model than init_from=.*\(ks: \[3, 5, 7\] "
                                          r"in the checkpoint, \[3, 5\] in \+model\)"):
        train("+model=mobilenetv3", *MODEL, "model.ks=[3,5]", f"init_from={source}", f"out_dir={tmp_path}")
    with pytest.raises(ConfigError, match="model.in_chans=1 but data=imagefolder has 3 channels"):
        train(f"init_from={source}", f"out_dir={tmp_path}", "data=imagefolder", f"data.root={image_folder(tmp_path)}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images"]  # no run directory for a refused run
    assert train("+model=mobilenetv3", *MODEL, "model.schedule=[{name:tune,epochs:1,lr:0.0001,unlock:[depth]}]",
                 f"init_from={source}", f"out_dir={tmp_path}", "max_steps_per_epoch=1") == 0
    tuned = read(tmp_path / "src-finetune-digits" / "supernet.pt")
    assert [row["phase"] for row in tuned["metrics"]["history"]] == ["tune"]


def test_a_run_saved_before_init_from_existed_still_resumes(tmp_path):
    schedule = "model.schedule=[{name:largest,epochs:1,lr:0.003},{name:depth,epochs:1,lr:0.003,unlock:[depth]}]"
    args = ["+model=vit", f"out_dir={tmp_path}", "run_name=old", schedule, "max_steps_per_epoch=2"]
    assert train(*args, stop_at_step=3) == 128 + signal.SIGTERM
    ckpt = read(tmp_path / "old" / "supernet.pt")
    for key in ("init_from", "finetune"):  # the settings of a run from before them
        del ckpt["config"][key]
    save_checkpoint(ckpt, tmp_path / "old" / "supernet.pt")
    assert train(*args) == 0
    assert read(tmp_path / "old" / "supernet.pt")["train_state"]["step"] == 4


def image_folder(root, classes=3, per_class=6, size=32):
    """An ImageNet-layout folder of random RGB PNGs: train/<class>/ and val/<class>/."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = root / "images" / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                # the classes differ in brightness
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root / "images"


def test_a_converted_ofa_supernet_finetunes_with_a_new_head_then_searches_exports_and_measures(tmp_path):
    from test_ofa import build_ofa, randomised

    from supernet.convert import main as convert

    images = image_folder(tmp_path)
    torch.save({"state_dict": randomised(build_ofa("ofa_mbv3_d234_e346_k357_w1.0"), seed=0).state_dict()},
               tmp_path / "ofa.pth")
    converted = convert(["ofa", "ofa_mbv3_d234_e346_k357_w1.0", str(tmp_path / "ofa.pth"),
                         "--out", str(tmp_path / "ofa-mbv3-w10" / "supernet.pt")])
    assert train(f"init_from={converted}", f"out_dir={tmp_path}", "data=imagefolder", f"data.root={images}",
                 "data.img_size=128", "data.val_fraction=0.25", "finetune.epochs=1", "max_steps_per_epoch=2",
                 "batch_size=2", "eval_batch_size=6", "bn_calib_images=4", "sampler.pool_size=50") == 0
    tuned = read(tmp_path / "ofa-mbv3-w10-finetune-imagefolder" / "supernet.pt")
    src = read(converted)
    assert tuned["train_state"]["step"] == 2
    assert tuned["model"] == {**src["model"], "num_classes": 3}
    assert tuned["state_dict"]["classifier.weight"].shape == (3, 1280)  # a new head for the 3 classes
    net = load_supernet(converted)
    assert tuned["metrics"]["init_from"]["elastic"] == list(net.space.keys)  # OFA trained every dimension
    # the layers channel sorting leaves in place carry OFA's weights, moved by two steps at lr 1e-4
    kept = [k for k in src["state_dict"] if k.startswith(("stem.", "first_block.", "final_expand.", "feature_mix."))
            or "kernel_transforms" in k]
    assert len(kept) > 20
    for key in kept:
        if src["state_dict"][key].is_floating_point() and "running" not in key:
            assert torch.allclose(tuned["state_dict"][key], src["state_dict"][key], rtol=0, atol=1e-3), key

    # and the rest of the pipeline takes both as it takes any supernet: search, export, measure
    from search.measure import main as measure
    from supernet.export import main as export

    tuned_path = tmp_path / "ofa-mbv3-w10-finetune-imagefolder" / "supernet.pt"
    out = search(tuned_path, tmp_path / "search", "budget=4", "init=4", "bn_calib_images=4", "eval_batch_size=6")
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert rows and all(0 <= float(r["accuracy"]) <= 1 for r in rows) and len(list((out / "subnets").iterdir())) == 1
    export([str(tuned_path), "--arch", '{"ks": 3, "e": 3, "d": 2, "r": 128}', "--out", str(tmp_path / "exported")])
    (subnet,) = (tmp_path / "exported").iterdir()
    assert json.loads((subnet / "arch.json").read_text())["arch"]["resolution"] == 128
    table = measure(["--supernet", str(converted), "--hw", "local_cpu", "--backend", "torch", "--n", "1",
                     "--out", str(tmp_path / "t.csv")])
    assert len(list(csv.DictReader(Path(table).open()))) == 3  # the largest, the smallest and one sampled


# -- search.run on other data than the supernet.pt records -----------------------------------------
def rgb_supernet(path, data: dict):
    """A 3-class RGB ViT supernet checkpoint (random weights: the search needs only a valid one)
    recording ``data`` as the data it was trained on."""
    net = create_supernet_from_config(dict(name="vit", resolution=[8, 16], patch_size=4, in_chans=3, depth=[1, 2],
                                           embed_dim=[16, 24], num_heads=[1, 2], head_dim=8, mlp_ratio=[1.0, 2.0],
                                           bits=[32]), num_classes=3)
    return save_checkpoint({"format": "ofa-nas/supernet", "version": 1, "model": dict(net.config),
                            "space": net.space.to_dict(), "state_dict": net.state_dict(), "train_state": {},
                            "metrics": {}, "config": {"data": data}}, path)


def search(supernet, out, *overrides):
    from search.run import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="search", overrides=[
            f"supernet={supernet}", f"out_dir={out}", "hw=jetson", "budget=8", "init=6", "per_iteration=2",
            "generations=3", "population=10", "export.max_subnets=1", "export.onnx=false", "bn_calib_images=8",
            *overrides])
    return run(cfg)


def test_search_scores_subnets_on_the_data_named_on_the_command_line(tmp_path):
    images = image_folder(tmp_path, size=16)
    digits = {"name": "digits", "img_size": 16, "val_fraction": 0.15, "test_fraction": 0.15, "max_shift": 1,
              "seed": 0}
    supernet = rgb_supernet(tmp_path / "vit-rgb" / "supernet.pt", digits)
    # the recorded data (digits: 10 grey classes) does not fit the 3-class head: one line naming both
    with pytest.raises(DataError, match=r"^data=digits has 10 classes but the supernet '.*supernet.pt' takes 3: "):
        search(supernet, tmp_path / "search")
    out = search(supernet, tmp_path / "search", "data=imagefolder", f"data.root={images}", "data.img_size=16",
                 "data.val_fraction=0.25")
    assert len((out / "evaluations.csv").read_text().splitlines()) == 1 + 8
    settings = json.loads((out / "search_state.json").read_text())["settings"]
    assert settings["data"] == {"name": "imagefolder", "root": str(images), "img_size": 16, "val_fraction": 0.25,
                                "seed": 0}
    (subnet,) = (out / "subnets").iterdir()
    meta = json.loads((subnet / "arch.json").read_text())
    assert meta["input"]["mean"] == [0.485, 0.456, 0.406]  # the ImageFolder's normalisation, not digits'
    assert meta["input"]["shape"][:2] == [1, 3]
    # other data of the wrong class count is refused before any evaluation
    two = image_folder(tmp_path / "two", classes=2, size=16)
    with pytest.raises(DataError, match="^data=imagefolder has 2 classes but the supernet .* takes 3"):
        search(supernet, tmp_path / "search2", "data=imagefolder", f"data.root={two}")
    assert not (tmp_path / "search2").exists()


def test_search_patches_the_recorded_data_with_keys_alone(tmp_path):
    images = image_folder(tmp_path, size=16)
    moved = {"name": "imagefolder", "root": str(tmp_path / "elsewhere"), "img_size": 16, "val_fraction": 0.25,
             "seed": 0}
    supernet = rgb_supernet(tmp_path / "vit-rgb" / "supernet.pt", moved)  # its data lay on another machine
    with pytest.raises(DataError, match=r"does not exist .*\(the data recorded in .*; other data: data=NAME "
                                        r"data.root=PATH, or \+data.root=PATH for the recorded one\)"):
        search(supernet, tmp_path / "search")
    out = search(supernet, tmp_path / "search", f"+data.root={images}", "budget=6", "init=6")
    settings = json.loads((out / "search_state.json").read_text())["settings"]
    assert settings["data"] == {**moved, "root": str(images)}
