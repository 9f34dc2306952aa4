"""``python -m search.run hw=jetson``: the Pareto front of a trained supernet for one hardware profile.

A thin layer over ``search.run_search``: it loads the supernet and the profile, checks every option
before it writes anything, runs the loop in ``out_dir/<hw>/<stamp>/`` (or continues an unfinished
one), exports the front's subnets and prints the front.

Under ``torchrun --nproc_per_node=N`` the search is spread over N processes: rank 0 runs the loop
(search decisions, latency, every file) and each chunk of real evaluations is scored data-parallel,
each rank on its shard of the split's batches (``search.evaluator``, ``supernet.distributed``).
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import logging
import os
import socket
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from hw_profiles import ProfileError, load_profile
from predictors import PredictorError
from supernet.checkpoint import CheckpointError, load_supernet, save_json
from supernet.cli import hydra_command
from supernet.data import DataError, build_data, calibration_loader
from supernet.distributed import Dist, shard
from supernet.errors import ConfigError
from supernet.export import save_subnet

from .evaluator import SupernetEvaluator
from .loop import check_reachable, exact_quantities, pick_spread, run_search
from .objectives import DIRECTIONS, SearchConfigError, check_constraints, check_objectives, minimised, violation
from .problem import ALGORITHMS
from .report import format_table

USER_ERRORS = (CheckpointError, ConfigError, DataError, PredictorError, ProfileError, SearchConfigError)
log = logging.getLogger("search")
# how long the other ranks wait for rank 0's next chunk (its predictor fits, its latency timing, the
# export): generous, since a rank that dies ends the whole torchrun job anyway
RANK_TIMEOUT = _dt.timedelta(hours=6)


def default_supernet(train_dir: str | Path) -> Path:
    """The newest ``train_dir/*/supernet.pt``, when all of them are supernets of one model; a guess
    between different models is refused, naming them."""
    found = sorted(Path(train_dir).glob("*/supernet.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SearchConfigError(f"no trained supernet in {str(train_dir)!r} (*/supernet.pt); train one with "
                                "`python -m supernet.train +model=vit` or pass supernet=PATH")
    models: dict[str, list[Path]] = {}
    for path in found:
        try:  # mmap: only the model config is read, not the weights
            model = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("model")
        except Exception:  # noqa: BLE001 - unreadable here; load_supernet names the problem if it is chosen
            model = None
        models.setdefault(json.dumps(model, sort_keys=True, default=str), []).append(path)
    if len(models) > 1:
        listed = "; ".join(f"{', '.join(str(p) for p in paths)} ({_model_name(key)})" for key, paths in models.items())
        raise SearchConfigError(f"{len(found)} supernets of {len(models)} different models in {str(train_dir)!r}: "
                                f"{listed}; choose one with supernet=PATH")
    return found[-1]


def _model_name(model_json: str) -> str:
    model = json.loads(model_json)
    return "unreadable" if not isinstance(model, dict) else str(model.get("name", "?"))


def search_dir(cfg, hw: str, settings: dict) -> Path:
    """The unfinished search of the same settings to continue (``resume=auto``), else a new stamp."""
    root = Path(cfg.out_dir) / hw
    if root.exists() and not root.is_dir() or Path(cfg.out_dir).is_file():
        raise SearchConfigError(f"out_dir={cfg.out_dir!r} is a file; allowed: a directory (made if missing)")
    if cfg.resume not in ("auto", "never"):
        path = Path(cfg.resume)
        if not (path / "search_state.json").is_file():
            raise SearchConfigError(f"resume={cfg.resume!r} is not a search directory (no search_state.json)")
        if read_state(path / "search_state.json")["settings"] != settings:
            raise SearchConfigError(f"resume={cfg.resume!r} was a search with other settings; use resume=never")
        return path
    if cfg.resume == "auto":
        for path in sorted(root.glob("*/search_state.json"), reverse=True):
            try:
                state = read_state(path)
            except SearchConfigError as err:  # another search's damage never blocks this one
                print(f"warning: skipping {path.parent} ({err})", file=sys.stderr)
                continue
            saved = state["settings"]
            if state["finished"] or holder(path.parent):  # a running search's directory is its own
                continue
            if saved == settings:
                return path.parent
            if {**saved, "supernet_digest": settings["supernet_digest"]} == settings:  # only the weights differ
                raise SearchConfigError(
                    f"the unfinished search {path.parent} evaluated {settings['supernet']} with digest "
                    f"{str(saved.get('supernet_digest'))[:12]}, which now has digest "
                    f"{settings['supernet_digest'][:12]} (retrained?): resuming would mix two supernets; pass "
                    "resume=never or another out_dir")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, n = root / stamp, 1
    while path.exists():  # two searches started in the same second
        path, n = root / f"{stamp}-{n}", n + 1
    return path


def holder(path: Path) -> str | None:
    """Who holds the lock of a search directory (``pid N on HOST``), or None if nobody does."""
    lock = path / ".lock"
    if not lock.exists():
        return None
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            return f.read().strip() or "another process"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def lock(path: Path):
    """Holds ``path/.lock`` (flock, released when the process ends, even on kill -9) for the search
    running in ``path``; None if another process holds it."""
    f = open(path / ".lock", "a+")  # noqa: SIM115 - held open for the whole search
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on {socket.gethostname()}")
    f.flush()
    return f


def read_state(path: Path) -> dict:
    """A search directory's ``search_state.json``; damage is a one-line error naming the file."""
    try:
        state = json.loads(path.read_text())
        if isinstance(state, dict) and isinstance(state.get("settings"), dict) and "finished" in state:
            return state
        reason = "not a search state (no settings / finished)"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = str(err)
    raise SearchConfigError(f"{path} is damaged ({reason}); remove that search directory or pass resume=never")


def run(cfg) -> Path | None:
    """Runs (or continues) the search of ``cfg``; returns its directory (None on the ranks other
    than 0 of several processes: they only evaluate what rank 0 sends)."""
    from omegaconf import OmegaConf

    options = OmegaConf.to_container(cfg, resolve=True)
    objectives = check_objectives(options["objectives"])
    constraints = check_constraints({name: bound for name, bound in (options["constraints"] or {}).items()
                                     if bound is not None})
    if cfg.algorithm not in ALGORITHMS:
        raise SearchConfigError(f"unknown algorithm {cfg.algorithm!r}; algorithms: {', '.join(ALGORITHMS)}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise SearchConfigError(f"device={cfg.device!r}; allowed: auto, cpu, cuda")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise SearchConfigError("device=cuda but no CUDA device is available; use device=cpu or device=auto")
    kind = "cuda" if cfg.device == "cuda" or cfg.device == "auto" and torch.cuda.is_available() else "cpu"
    dist = Dist.from_env(kind, timeout=RANK_TIMEOUT)
    profile = load_profile(options["hw"])
    if profile.kind == "measured" and profile.table is None:
        profile.check_available()
    supernet_path = Path(cfg.supernet) if cfg.supernet else default_supernet(cfg.train_dir)
    if dist.main:
        print(f"supernet: {supernet_path}")
    net = load_supernet(supernet_path)
    device = torch.device("cuda", dist.local_rank) if kind == "cuda" else torch.device("cpu")
    net.to(device)
    data, data_cfg = search_data(net, supernet_path, options.get("data"))
    if cfg.split not in ("val", "test"):
        raise SearchConfigError(f"split={cfg.split!r}; allowed: val, test")
    workers = dict(num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    # over several processes, each rank reads its share of the batches of each (supernet.distributed.shard)
    loader = shard(DataLoader(getattr(data, cfg.split), batch_size=cfg.eval_batch_size, **workers), dist,
                   f"split={cfg.split}")
    test_loader = shard(DataLoader(data.test, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers), dist,
                        "split=test")
    calib = shard(calibration_loader(data, cfg.bn_calib_images, cfg.eval_batch_size, cfg.seed, cfg.num_workers),
                  dist)
    evaluator = SupernetEvaluator(net, profile, loader, calib, device, seed=cfg.seed, dist=dist,
                                  loaders={"test": test_loader})
    check_reachable(net.space, constraints, exact_quantities(net.space, evaluator.exact()))
    if not dist.main:  # rank 0 decides and writes; this rank scores its shards of what rank 0 sends
        evaluator.serve()
        dist.close()
        return None
    try:
        out = run_main_rank(cfg, options, net, profile, data, data_cfg, evaluator, objectives, constraints,
                            supernet_path)
    except KeyboardInterrupt:  # Ctrl-C or torchrun's SIGTERM reached every rank: none waits for rank 0
        raise
    except BaseException:  # the other ranks stop waiting (unless rank 0 failed inside an evaluation,
        evaluator.release()  # where they are inside a collective: torchrun ends them when rank 0 exits)
        raise
    evaluator.release()
    dist.close()
    return out


def run_main_rank(cfg, options, net, profile, data, data_cfg, evaluator, objectives, constraints,
                  supernet_path) -> Path:
    """Rank 0's (or the only process's) part of ``run``: the directory, the loop, the export, the front."""
    settings = {"supernet": str(supernet_path.resolve()), "supernet_digest": net.digest, "hw": options["hw"],
                "objectives": list(objectives),
                "constraints": constraints, **{key: options[key] for key in (
                    "algorithm", "predictor", "budget", "init", "per_iteration", "population", "generations",
                    "select", "score_sample", "refine", "optimism", "split", "seed")}}
    if "data" in options:  # only then: a search on the recorded data keeps the settings it always had (resume)
        settings["data"] = data_cfg
    while True:  # another search may take the same new directory between the choice and the lock
        out = search_dir(cfg, profile.name, settings)
        resumed = out.exists()
        created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
        out.mkdir(parents=True, exist_ok=True)
        held = lock(out)
        if held is not None:
            break
        if cfg.resume not in ("auto", "never"):
            raise SearchConfigError(f"resume={cfg.resume!r}: a search is running there ({holder(out)}); "
                                    "wait for it or start another with resume=never")
    for stale in out.glob(".*.tmp"):  # a write killed mid-way (kill -9) left it; the lock says nobody writes now
        stale.unlink(missing_ok=True)
    save_json({"settings": settings, "finished": False}, out / "search_state.json")
    print(f"{'continuing' if resumed else 'search'} in {out}: {cfg.budget} real evaluations on {profile.name} "
          f"(latency {profile.kind}), {cfg.algorithm} on {cfg.predictor} predictors")
    try:
        result = run_search(net.space, evaluator, objectives, budget=cfg.budget, init=cfg.init,
                            per_iteration=cfg.per_iteration, generations=cfg.generations, population=cfg.population,
                            algorithm=cfg.algorithm, predictor=cfg.predictor, select=cfg.select,
                            score_sample=cfg.score_sample, refine=cfg.refine, optimism=cfg.optimism,
                            constraints=constraints,
                            exact=evaluator.exact(), seed=cfg.seed, out_dir=out)
    except USER_ERRORS:  # an option the loop refused before any evaluation: leave no unfinished search behind
        if created and not (out / "evaluations.csv").exists():
            for name in ("search_state.json", ".lock"):
                (out / name).unlink(missing_ok=True)
            for path in created:
                if path.is_dir() and not any(path.iterdir()):
                    path.rmdir()
        raise

    if not result.pareto and constraints:
        warn_unmet(result.evaluations, constraints, objectives)
    else:
        export_front(net, result.pareto, objectives, out, data, evaluator, cfg, supernet_path)
    save_json({"settings": settings, "finished": True}, out / "search_state.json")
    columns = ["id", *objectives, *[c for c in ("latency_ms", "macs", "params") if c not in objectives],
               "latency_source"]
    print(f"\nPareto front on {profile.name} ({len(result.pareto)} of {len(result.evaluations)} real evaluations):")
    print(format_table(sorted(result.pareto, key=lambda r: r[objectives[1]]), columns))
    print(f"\nresults: {out}/ (evaluations.csv, pareto.csv, pareto.png, search_log.csv, subnets/)")
    return out


def search_data(net, supernet_path: Path, override: dict | None):
    """The data subnets are scored on, and its config. ``data=NAME`` (``conf/data/NAME.yaml`` and its
    keys) replaces the data config recorded in the checkpoint; keys without a name (``+data.root=DIR``)
    patch the recorded one; without either, the recorded one. The data must fit the supernet's head
    and input channels."""
    recorded = dict(net.train_config.get("data") or {})
    if override and "name" in override:
        data_cfg = dict(override)
    elif recorded:
        data_cfg = {**recorded, **(override or {})}
    else:
        raise CheckpointError(f"{str(supernet_path)!r} does not say which data it was trained on (config.data); "
                              "name the data to search it on: data=NAME data.root=PATH (conf/data/NAME.yaml)")
    options = {key: value for key, value in data_cfg.items() if key != "name"}
    try:
        data = build_data(data_cfg.get("name"), **options)
    except DataError as err:
        if override and "name" in override:
            raise
        raise DataError(f"{err} (the data recorded in {str(supernet_path)!r}; other data: data=NAME "
                        "data.root=PATH, or +data.root=PATH for the recorded one)") from None
    for what, found, wanted in (("classes", data.num_classes, net.config.get("num_classes")),
                                ("input channels", data.in_chans, net.config.get("in_chans"))):
        if wanted is not None and found != wanted:
            raise DataError(f"data={data_cfg.get('name')} has {found} {what} but the supernet {str(supernet_path)!r} "
                            f"takes {wanted}: search it on data of its own {what} (or fine-tune it on this data "
                            "first: python -m supernet.train init_from=PATH)")
    return data, data_cfg


def export_front(net, pareto, objectives, out, data, evaluator, cfg, supernet_path) -> None:
    """The front's subnets (at most ``export.max_subnets``, spread along it) as standalone models, with
    their test accuracy beside the search's figures in arch.json."""
    if not pareto or cfg.export.max_subnets < 1:
        return
    F = np.stack([minimised(name, [row[name] for row in pareto]) for name in objectives], axis=1)
    chosen = [pareto[i] for i in pick_spread(F, cfg.export.max_subnets)]
    for row in tqdm(chosen, desc="exporting subnets"):
        metrics = {key: row[key] for key in ("accuracy", "macs", "params", "latency_ms", "latency_source", "profile")
                   if key in row}
        metrics["accuracy_split"] = cfg.split
        metrics["test_accuracy"] = evaluator.accuracies([row["arch"]], "test")[0]  # over all ranks
        save_subnet(net, row["arch"], out / "subnets" / f"{row['id']:04d}", metrics=metrics,
                    supernet_path=str(supernet_path), onnx=cfg.export.onnx, preprocessing=data.preprocessing)


def warn_unmet(rows, constraints, objectives) -> None:
    """No real evaluation meets the constraints: name the three nearest subnets instead."""
    G = violation(constraints, {name: np.array([row[name] for row in rows]) for name in constraints})
    relative = np.clip(G, 0, None) / np.maximum(np.abs(list(constraints.values())), 1e-12)
    nearest = np.argsort(relative.sum(axis=1), kind="stable")[:3]
    bounds = ", ".join(f"{n}{'<=' if DIRECTIONS[n] > 0 else '>='}{b:g}" for n, b in constraints.items())
    shown = "; ".join(f"id {rows[i]['id']} (" + ", ".join(f"{n}={rows[i][n]:.4g}" for n in
                                                       dict.fromkeys([*constraints, *objectives])) + ")"
                      for i in nearest)
    print(f"warning: no evaluated subnet meets {bounds}; nearest: {shown}", file=sys.stderr)


def main() -> None:
    hydra_command("search", run, USER_ERRORS,
                  on_interrupt="interrupted: run the same command again to continue the search (resume=auto)")


if __name__ == "__main__":
    main()
