from pathlib import Path

import pytest
import torch
import yaml

from supernet import create_supernet_from_config

ROOT = Path(__file__).resolve().parents[1]


def model_config(name: str) -> dict:
    return yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def digits_vit():
    """The digits-sized ViT supernet of conf/model/vit.yaml, random weights, eval mode."""
    return create_supernet_from_config(model_config("vit"), num_classes=10).eval()


@pytest.fixture
def tiny_vit():
    """A tiny ViT space whose every dimension has two or more choices and a non-trivial head_dim."""
    return create_supernet_from_config(
        dict(name="vit", resolution=[8, 16], patch_size=4, in_chans=3, depth=[1, 2, 3], embed_dim=[16, 24],
             num_heads=[1, 2, 3], head_dim=8, mlp_ratio=[1.0, 2.0]), num_classes=5).eval()


def run_training(overrides: list[str], stop_at_step: int | None = None) -> int:
    """``supernet.train.run`` in this process on ``conf/train.yaml`` with ``overrides``; with
    ``stop_at_step``, SIGTERM arrives during that (1-based) step, as a Ctrl-C or a scheduler's kill
    would. Returns the exit code."""
    import os
    import signal

    from hydra import compose, initialize_config_dir

    import supernet.train as train

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    real_step, calls = train.sandwich_step, []

    def step(*args):
        calls.append(1)
        if len(calls) == stop_at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args)

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    train.sandwich_step = step
    try:
        train.run(cfg)
    except SystemExit as exit_:
        return exit_.code
    finally:
        train.sandwich_step = real_step
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return 0


def stopped_search(source, n: int, target=None):
    """The search directory ``source`` as if it had stopped after ``n`` real evaluations: its first
    ``n`` rows of evaluations.csv and an unfinished search_state.json, written into ``target``
    (made if missing; default: ``source`` itself). Returns the directory written."""
    import csv
    import json
    from pathlib import Path

    source = Path(source)
    target = source if target is None else Path(target)
    target.mkdir(parents=True, exist_ok=True)
    with open(source / "evaluations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(target / "evaluations.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(rows[:n])
    state = json.loads((source / "search_state.json").read_text())
    (target / "search_state.json").write_text(json.dumps({**state, "finished": False}))
    return target
