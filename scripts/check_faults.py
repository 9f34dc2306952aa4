"""Fault injection on the real command lines: what a crash, a kill, a damaged file, a full disk or a
bad option does to training, search and export.

    python scripts/check_faults.py [--quick] [--repeats 1] [--seed 0] [--keep] [--out runs/bench/faults.csv]

Every case runs ``python -m supernet.train`` / ``search.run`` / ``supernet.export`` as a user would
(subprocesses, tiny settings: a two-block ViT on digits, 12-16 real evaluations) and checks:

- SIGTERM or SIGKILL at a random moment of training, then the same command again: the resumed run
  ends with the weights (bit for bit) and metrics of an uninterrupted run, and no temp file is left.
- The same for a search: ``evaluations.csv`` and ``pareto.csv`` equal the uninterrupted search's;
  also a SIGTERM during the final test evaluation and export of the front (it must stop within
  seconds, exit 143, and the rerun finish the export).
- 64 flipped bytes inside a tensor of ``supernet.pt``, and a truncated ``supernet.pt``: refused in
  one line by training (resume), search and export; the file is left as it was.
- A full disk (every write to the chosen file goes to /dev/full, which fails with ENOSPC as a full
  disk does) while training saves ``supernet.pt`` and while a search saves ``evaluations.csv``: one
  line saying "no space left on device" with the path, the previous file intact, and a rerun
  after the disk is freed ends as an uninterrupted run.
- A cut ``evaluations.csv`` in an unfinished search: one line naming the file and the line.
- Bad option values of the three commands: one line ``error: ...`` naming the value, exit 1, no
  traceback, nothing written.

Prints a table (fault, command, outcome PASS / FAIL / SKIP, seconds, what happened) and writes it
to ``--out``. SKIP: a random kill that came after the command had already finished. ``--quick``
runs one kill per command and fewer bad options (about half the time).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from supernet.checkpoint import SUPERNET_FORMAT, atomic_write, load_checkpoint  # noqa: E402

# Two blocks, 4 epochs of 12 steps (one per phase): a real run through every phase, in ~30 s.
TRAIN_SETTINGS = ["+model=vit", "model.depth=[1,2]", "model.embed_dim=[16,32]", "max_steps_per_epoch=12",
                  "batch_size=16", "sampler.pool_size=100", "num_eval_subnets=1", "bn_calib_images=64", "threads=1",
                  "model.schedule=[{name:largest,epochs:1,lr:0.002,unlock:[]},"
                  "{name:depth,epochs:1,lr:0.001,unlock:[resolution,depth]},"
                  "{name:width,epochs:1,lr:0.001,unlock:[num_heads,mlp_ratio,embed_dim]},"
                  "{name:bits,epochs:1,lr:0.001,unlock:[bits]}]"]
SEARCH_SETTINGS = ["hw=jetson", "budget=16", "init=6", "per_iteration=5", "generations=3", "population=12",
                   "score_sample=3", "export.max_subnets=2", "export.onnx=false", "threads=1", "bn_calib_images=64"]
IGNORED = " (the signal was ignored: the run went on to the end)"
TIMINGS = ("epoch_s", "img_per_s")  # metrics.csv columns that differ between any two runs

# Runs a module as `python -m` does, with every write to a temp file of FILE (the atomic writers'
# `.FILE.*.tmp`) from its N-th on sent to /dev/full: the kernel's ENOSPC, as on a full disk.
FULL_DISK = """
import os, runpy, sys
name, nth = os.environ["CHECK_FAULTS_FULL_DISK"].rsplit(":", 1)
seen, real = [0], os.fdopen
def fdopen(fd, *args, **kwargs):
    if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
        seen[0] += 1
        if seen[0] >= int(nth):
            os.dup2(os.open("/dev/full", os.O_WRONLY), fd)
    return real(fd, *args, **kwargs)
os.fdopen = fdopen
module = sys.argv.pop(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


@dataclass
class Run:
    rc: int
    out: str
    err: str
    seconds: float
    started: float = 0.0  # wall clock (time.time) at the start
    triggered: float | None = None  # seconds from the start to when the trigger first held
    exit_after_signal: float | None = None
    line_times: list[tuple[float, str]] = field(default_factory=list)  # (seconds from the start, stdout line)

    def line_time(self, prefix: str) -> float | None:
        return next((t for t, line in self.line_times if line.startswith(prefix)), None)

    @property
    def last_error(self) -> str:
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""

    def one_line_error(self) -> bool:
        return self.rc == 1 and "Traceback" not in self.err and self.last_error.startswith("error: ")


@dataclass
class Row:
    fault: str
    command: str
    outcome: str
    seconds: float
    detail: str


@dataclass
class Checker:
    work: Path
    rng: random.Random
    rows: list[Row] = field(default_factory=list)

    def record(self, fault: str, command: str, ok: bool | None, seconds: float, detail: str) -> None:
        outcome = "SKIP" if ok is None else "PASS" if ok else "FAIL"
        self.rows.append(Row(fault, command, outcome, round(seconds, 1), detail))
        print(f"{outcome:4}  {fault:48} {command:8} {seconds:6.1f}s  {detail}", flush=True)


def env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **extra}


def run(args: list[str], *, trigger: Callable[[str], bool] | None = None, sig: int | None = None,
        delay: float = 0.0, full_disk: str | None = None, timeout: float = 600) -> Run:
    """Runs ``python -m <args>``; with ``sig``, sends it ``delay`` seconds after ``trigger(stdout so
    far)`` first holds. ``full_disk="FILE:N"`` makes FILE's N-th and later writes fail with ENOSPC."""
    cmd = [sys.executable, "-c", FULL_DISK, *args] if full_disk else [sys.executable, "-m", *args]
    extra = {"CHECK_FAULTS_FULL_DISK": full_disk} if full_disk else {}
    start, started = time.perf_counter(), time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err, line_times = [], [], []

    def read_stdout():
        for line in iter(proc.stdout.readline, ""):
            line_times.append((time.perf_counter() - start, line))
            out.append(line)

    readers = [threading.Thread(target=read_stdout, daemon=True),
               threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True)]
    for reader in readers:
        reader.start()
    armed = signalled = None
    while proc.poll() is None:
        now = time.perf_counter()
        if now - start > timeout:
            proc.kill()
            break
        if trigger is not None and armed is None and trigger("".join(out)):
            armed = now
        if sig is not None and signalled is None:
            if armed is not None and now - armed >= delay:
                proc.send_signal(sig)
                signalled = now
        time.sleep(0.01)
    ended = time.perf_counter()
    for reader in readers:
        reader.join(timeout=10)
    return Run(proc.returncode, "".join(out), "".join(err), ended - start, started,
               None if armed is None else armed - start, None if signalled is None else ended - signalled, line_times)


def marker(text: str) -> Callable[[str], bool]:
    return lambda out: text in out


def train_args(work: Path, name: str, *extra: str) -> list[str]:
    return ["supernet.train", *TRAIN_SETTINGS, f"out_dir={work / 'train'}", f"run_name={name}", *extra]


def search_args(supernet: Path, out: Path, *extra: str) -> list[str]:
    return ["search.run", f"supernet={supernet}", f"out_dir={out}", *SEARCH_SETTINGS, *extra]


def same_weights(a: Path, b: Path) -> tuple[bool, str]:
    x, y = (load_checkpoint(p, SUPERNET_FORMAT) for p in (a, b))
    differ = [k for k in x["state_dict"] if not torch.equal(x["state_dict"][k], y["state_dict"].get(k))]
    keep = [[{k: v for k, v in row.items() if k not in TIMINGS} for row in c["metrics"]["history"]] for c in (x, y)]
    steps = (x["train_state"]["step"], y["train_state"]["step"])
    ok = not differ and keep[0] == keep[1] and steps[0] == steps[1] and "final" in y["metrics"]
    history = "equal" if keep[0] == keep[1] else "DIFFERS"
    return ok, f"{len(differ)}/{len(x['state_dict'])} tensors differ, history {history}, step {steps[1]}/{steps[0]}"


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp")]


def search_dir(root: Path) -> Path | None:
    found = sorted(root.glob("jetson/*/search_state.json"))
    return found[-1].parent if found else None


def same_search(ref: Path, other: Path) -> tuple[bool, str]:
    equal = {name: (ref / name).read_bytes() == (other / name).read_bytes() for name in ("evaluations.csv",
                                                                                         "pareto.csv")}
    subnets = [sorted(p.name for p in (d / "subnets").iterdir()) for d in (ref, other)]
    state = json.loads((other / "search_state.json").read_text())
    left = [str(p.relative_to(other)) for p in temp_files(other)]
    ok = all(equal.values()) and subnets[0] == subnets[1] and state["finished"] and not left
    rows = (other / "evaluations.csv").read_text().count("\n") - 1
    return ok, (f"evaluations.csv {'equal' if equal['evaluations.csv'] else 'DIFFERS'} ({rows} rows), pareto.csv "
                f"{'equal' if equal['pareto.csv'] else 'DIFFERS'}, subnets {subnets[1]}"
                + (f", temp files left: {left}" if left else "") + ("" if state["finished"] else ", not finished"))


def flip_bytes(src: Path, dst: Path, count: int = 64) -> None:
    """A copy of ``src`` with ``count`` bytes inverted in the middle of its largest tensor: the zip
    container (stored, no CRC check on load) does not notice; only the digest can."""
    with zipfile.ZipFile(src) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = bytearray(src.read_bytes())
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2 - count // 2
    raw[at: at + count] = bytes(b ^ 0xFF for b in raw[at: at + count])
    dst.write_bytes(bytes(raw))


# -- training --------------------------------------------------------------------------------------------
def check_training(c: Checker, kills: list[int]) -> Path:
    start_line = "training vit supernet"  # printed once data, model and loaders are ready
    ref = run(train_args(c.work, "straight"), trigger=marker(start_line))
    straight = c.work / "train" / "straight" / "supernet.pt"
    c.record("none (uninterrupted reference)", "train", ref.rc == 0, ref.seconds, f"rc {ref.rc}")
    end = ref.line_time("final test accuracy:")  # printed once the final evaluation is done
    if ref.rc != 0 or ref.triggered is None or end is None:
        raise SystemExit(f"the reference training failed:\n{ref.err[-3000:]}")
    work_s = end - ref.triggered  # the steps, epoch-end validation and the final evaluation: where a kill lands
    for i, sig in enumerate(kills):
        name = f"{signal.Signals(sig).name.lower()}{i}"
        delay = c.rng.uniform(0.02, 1.0) * work_s
        stopped = run(train_args(c.work, name), trigger=marker(start_line), sig=sig, delay=delay)
        fault = f"{signal.Signals(sig).name} at {delay:.1f}s into training"
        if stopped.exit_after_signal is None:
            c.record(fault, "train", None, stopped.seconds, "finished before the signal")
            continue
        expected_rc = 128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL
        ckpt = c.work / "train" / name / "supernet.pt"
        saved = load_checkpoint(ckpt, SUPERNET_FORMAT) if ckpt.exists() else None
        if saved is not None and "final" in saved["metrics"] and stopped.rc != 0:
            # the work was done (final results saved): the signal hit the exiting interpreter, whose
            # handlers Python has already reset, so SIGTERM kills it too
            c.record(fault, "train", None, stopped.seconds, f"rc {stopped.rc}: came as the finished run exited")
            continue
        at = f"{saved['train_state']['step']} steps saved" if saved is not None else "before the first save"
        resumed = run(train_args(c.work, name))
        ok, detail = same_weights(straight, ckpt) if resumed.rc == 0 else (False, resumed.last_error)
        ok = ok and stopped.rc == expected_rc and not temp_files(ckpt.parent)
        c.record(fault, "train", ok, stopped.seconds + resumed.seconds,
                 f"rc {stopped.rc}{IGNORED * (stopped.rc == 0)} ({at}), resumed: {detail}")

    # SIGTERM in the final test evaluation (after the last epoch's line): the run must stop there too
    stopped = run(train_args(c.work, "final"), trigger=marker("epoch   4/4"), sig=signal.SIGTERM)
    ckpt = c.work / "train" / "final" / "supernet.pt"
    resumed = run(train_args(c.work, "final"))
    ok, detail = same_weights(straight, ckpt) if resumed.rc == 0 else (False, resumed.last_error)
    response = stopped.exit_after_signal
    c.record("SIGTERM in the final test evaluation", "train",
             ok and stopped.rc == 128 + signal.SIGTERM and response is not None and response < 10,
             stopped.seconds + resumed.seconds,
             f"rc {stopped.rc}{IGNORED * (stopped.rc == 0)}, exited "
             f"{None if response is None else round(response, 2)}s after the signal; rerun: {detail}")

    # a full disk when the second epoch's checkpoint is saved
    full = run(train_args(c.work, "fulldisk"), full_disk="supernet.pt:2")
    ckpt = c.work / "train" / "fulldisk" / "supernet.pt"
    kept = load_checkpoint(ckpt, SUPERNET_FORMAT)["train_state"]["epoch"] if ckpt.exists() else None
    said = full.one_line_error() and "no space left on device" in full.last_error and str(ckpt) in full.last_error
    resumed = run(train_args(c.work, "fulldisk"))
    ok, detail = same_weights(straight, ckpt) if resumed.rc == 0 else (False, resumed.last_error)
    c.record("full disk saving supernet.pt (epoch 2)", "train", said and kept == 1 and ok and not temp_files(
        ckpt.parent), full.seconds + resumed.seconds,
        f"rc {full.rc}: {full.last_error[:90]}...; kept epoch {kept}; after freeing: {detail}")
    return straight


def check_damaged_supernet(c: Checker, straight: Path) -> None:
    for name, fault, damage in (
            ("flipped", "64 bytes flipped inside a tensor", lambda dst: flip_bytes(straight, dst)),
            ("truncated", "supernet.pt truncated to half",
             lambda dst: dst.write_bytes(straight.read_bytes()[: straight.stat().st_size // 2]))):
        run_dir = c.work / "train" / name
        damaged = run_dir / "supernet.pt"
        run_dir.mkdir(parents=True)
        damage(damaged)
        before = damaged.read_bytes()
        expected = "do not match the digest" if name == "flipped" else "truncated or corrupt"
        for command, args in (("train", train_args(c.work, run_dir.name)),
                              ("search", search_args(damaged, c.work / "search-damaged")),
                              ("export", ["supernet.export", str(damaged), "--out", str(c.work / "export-damaged")])):
            refused = run(args)
            ok = refused.one_line_error() and expected in refused.last_error and damaged.read_bytes() == before
            ok = ok and not (c.work / "search-damaged").exists() and not (c.work / "export-damaged").exists()
            c.record(fault, command, ok, refused.seconds, refused.last_error[:150])


def check_export(c: Checker, straight: Path) -> None:
    """SIGTERM while ``supernet.export`` writes its subnets (torch.export and ONNX take seconds each):
    exit 143, no temp folder, and every folder it printed is complete."""
    out = c.work / "export-sigterm"
    delay = c.rng.uniform(0.0, 3.0)
    stopped = run(["supernet.export", str(straight), "--out", str(out)], trigger=marker("subnet "),
                  sig=signal.SIGTERM, delay=delay)
    lines = stopped.out.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("subnet ")), len(lines))
    printed = [line.split()[0] for line in lines[header + 1:] if line.strip()]
    complete = all({"arch.json", "model.pt", "model.pt2", "model.onnx"} <= {p.name for p in (out / name).iterdir()}
                   for name in printed)
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    response = stopped.exit_after_signal
    ok = (stopped.rc == 128 + signal.SIGTERM and response is not None and response < 10 and complete
          and left == sorted(printed))
    c.record(f"SIGTERM {delay:.1f}s into the export", "export", None if response is None else ok, stopped.seconds,
             f"rc {stopped.rc}, exited {None if response is None else round(response, 2)}s after the signal; "
             f"folders {left}, printed {printed}")


# -- search ----------------------------------------------------------------------------------------------
def check_search(c: Checker, supernet: Path, kills: list[int], quick: bool) -> None:
    ref = run(search_args(supernet, c.work / "search-ref"), trigger=marker("search in "))
    ref_dir = search_dir(c.work / "search-ref")
    c.record("none (uninterrupted reference)", "search", ref.rc == 0 and ref_dir is not None, ref.seconds,
             f"rc {ref.rc}")
    if ref.rc != 0 or ref_dir is None or ref.triggered is None:
        raise SystemExit(f"the reference search failed:\n{ref.err[-3000:]}")
    # the loop, from its first line to pareto.csv (written as it ends): where a random kill lands; the
    # export after it has its own case below
    loop_s = (ref_dir / "pareto.csv").stat().st_mtime - (ref.started + ref.triggered)
    for i, sig in enumerate(kills):
        root = c.work / f"search-{signal.Signals(sig).name.lower()}{i}"
        delay = c.rng.uniform(0.02, 1.0) * loop_s
        stopped = run(search_args(supernet, root), trigger=marker("search in "), sig=sig, delay=delay)
        fault = f"{signal.Signals(sig).name} at {delay:.1f}s into the search"
        if stopped.exit_after_signal is None:
            c.record(fault, "search", None, stopped.seconds, "finished before the signal")
            continue
        done = search_dir(root)
        rows = max((done / "evaluations.csv").read_text().count("\n") - 1, 0) if done and (
            done / "evaluations.csv").exists() else 0
        resumed = run(search_args(supernet, root))
        again = search_dir(root)
        ok, detail = same_search(ref_dir, again) if resumed.rc == 0 and again == done else (
            False, resumed.last_error or f"resumed in {again}, not {done}")
        expected_rc = 128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL
        c.record(fault, "search", ok and stopped.rc == expected_rc, stopped.seconds + resumed.seconds,
                 f"rc {stopped.rc}{IGNORED * (stopped.rc == 0)} after {rows} real evaluations; rerun: {detail}")

    # SIGTERM in the final test evaluation and export of the front: pareto.csv is written when the loop
    # ends, just before; the delay spreads the signal over the export's first seconds
    root = c.work / "search-final"
    delay = c.rng.uniform(0.0, 1.5)
    stopped = run(search_args(supernet, root), sig=signal.SIGTERM, delay=delay,
                  trigger=lambda out: any(root.glob("jetson/*/pareto.csv")))
    done = search_dir(root)
    finished = done is not None and json.loads((done / "search_state.json").read_text())["finished"]
    resumed = run(search_args(supernet, root))
    ok, detail = same_search(ref_dir, search_dir(root)) if resumed.rc == 0 else (False, resumed.last_error)
    response = stopped.exit_after_signal
    reason = "" if stopped.rc in (0, 128 + signal.SIGTERM) else f" ({stopped.last_error[:200]})"
    c.record(f"SIGTERM {delay:.1f}s into the final evaluation + export", "search",
             ok and stopped.rc == 128 + signal.SIGTERM and not finished and response is not None and response < 10,
             stopped.seconds + resumed.seconds,
             f"rc {stopped.rc}{reason}, exited {None if response is None else round(response, 2)}s after the signal; "
             f"rerun: {detail}")

    # a full disk on the second save of evaluations.csv
    root = c.work / "search-fulldisk"
    full = run(search_args(supernet, root), full_disk="evaluations.csv:2")
    done = search_dir(root)
    evaluations = done / "evaluations.csv" if done else root / "?"
    kept = evaluations.read_text().count("\n") - 1 if evaluations.exists() else None
    said = full.one_line_error() and "no space left on device" in full.last_error and str(evaluations) in \
        full.last_error
    resumed = run(search_args(supernet, root))
    ok, detail = same_search(ref_dir, search_dir(root)) if resumed.rc == 0 else (False, resumed.last_error)
    c.record("full disk saving evaluations.csv (2nd save)", "search", said and kept and ok,
             full.seconds + resumed.seconds,
             f"rc {full.rc}: {full.last_error[:80]}...; kept {kept} rows; after freeing: {detail}")

    # a cut last row in an unfinished search's evaluations.csv
    root = c.work / "search-cut"
    cut = root / "jetson" / ref_dir.name
    shutil.copytree(ref_dir, cut)
    (cut / ".lock").unlink()
    state = json.loads((cut / "search_state.json").read_text())
    (cut / "search_state.json").write_text(json.dumps({**state, "finished": False}))
    text = (cut / "evaluations.csv").read_text()
    (cut / "evaluations.csv").write_text(text[: text.rstrip("\n").rfind(",")])  # a row cut mid-way
    refused = run(search_args(supernet, root))
    c.record("evaluations.csv cut mid-row (unfinished search)", "search",
             refused.one_line_error() and str(cut / "evaluations.csv") in refused.last_error and "line " in
             refused.last_error, refused.seconds, refused.last_error[:150])
    if quick:
        return
    # a broken search_state.json elsewhere must not block a new search of the profile
    root = c.work / "search-broken-state"
    broken = root / "jetson" / "20000101-000000"
    broken.mkdir(parents=True)
    (broken / "search_state.json").write_text('{"settings": ')
    fresh = run(search_args(supernet, root))
    new = search_dir(root)
    ok, detail = same_search(ref_dir, new) if fresh.rc == 0 and new != broken else (False, fresh.last_error)
    c.record("broken search_state.json of another search", "search", ok and "warning: skipping" in fresh.err,
             fresh.seconds, detail)


# -- bad options -----------------------------------------------------------------------------------------
def image_folder(root: Path, empty_class: bool = False, corrupt: bool = False) -> Path:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (20, 16, 16, 3), dtype=np.uint8)
    for split in ("train", "val"):
        for k, name in enumerate(("a", "b")):
            (root / split / name).mkdir(parents=True)
            for i in range(5):
                Image.fromarray(pixels[10 * k + i]).save(root / split / name / f"{i}.png")
    if empty_class:
        (root / "train" / "c").mkdir()
    if corrupt:
        (root / "train" / "a" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    return root


def check_bad_options(c: Checker, supernet: Path, quick: bool) -> None:
    out = c.work / "bad"
    a_file = c.work / "a-file"
    a_file.write_text("")
    images = ["data.img_size=16", "model.in_chans=3", "batch_size=4", "max_steps_per_epoch=2"]
    empty = image_folder(c.work / "img-empty", empty_class=True)
    corrupt = image_folder(c.work / "img-bad", corrupt=True)
    cases = [  # (command, what is bad, arguments, what the error must say, also in --quick)
        ("train", "batch_size=0", train_args(out, "r", "batch_size=0"), "batch_size=0", True),
        ("train", "grad_clip=-1", train_args(out, "r", "grad_clip=-1"), "grad_clip=-1", False),
        ("train", "kd.temperature=0", train_args(out, "r", "kd.temperature=0"), "kd.temperature=0", False),
        ("train", "model.depth=[]", train_args(out, "r", "model.depth=[]"), "depth", True),
        ("train", "ImageFolder with an empty class",
         train_args(out, "r", "data=imagefolder", f"data.root={empty}", *images), "has no images", True),
        ("train", "ImageFolder with a corrupt image",
         train_args(out, "r", "data=imagefolder", f"data.root={corrupt}", *images), "3.png: not a readable image",
         True),
        ("search", "budget=abc", search_args(supernet, out, "budget=abc"), "budget='abc'", True),
        ("search", "population=0", search_args(supernet, out, "population=0"), "population=0", False),
        ("search", "device=tpu", search_args(supernet, out, "device=tpu"), "device='tpu'", False),
        ("search", "out_dir=<a file>", search_args(supernet, a_file), "is a file", True),
        ("export", "--arch biggest", ["supernet.export", str(supernet), "--arch", "biggest", "--out", str(out)],
         "--arch 'biggest'", True),
        ("export", "--out <a file>", ["supernet.export", str(supernet), "--out", str(a_file)], "is a file", False),
        ("export", "a missing supernet", ["supernet.export", str(c.work / "nope.pt")], "does not exist", False),
    ]
    for command, bad, args, expected, in_quick in cases:
        if quick and not in_quick:
            continue
        refused = run(args)
        # a corrupt image is found when it is read, once the run has begun: only there may files exist
        written = [p for p in out.rglob("*") if p.is_file()] if "corrupt" not in bad else []
        ok = refused.one_line_error() and expected in refused.last_error and not written
        c.record(f"bad option: {bad}", command, ok, refused.seconds, refused.last_error[:150])
        shutil.rmtree(out, ignore_errors=True)


def write_table(rows: list[Row], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["fault", "command", "outcome", "seconds", "detail"])
    writer.writeheader()
    writer.writerows(vars(row) for row in rows)
    atomic_write(path, lambda f: f.write(buffer.getvalue()), mode="w")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one kill per command, fewer bad options")
    parser.add_argument("--repeats", type=int, default=1, help="random SIGTERM and SIGKILL points per command")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill points")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (printed)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "faults.csv"))
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}; allowed: an integer >= 1")
    work = Path(tempfile.mkdtemp(prefix="check_faults-"))
    c = Checker(work, random.Random(args.seed))
    start = time.perf_counter()
    print(f"work directory: {work}; seed {args.seed}")
    train_kills = [signal.SIGTERM] if args.quick else [signal.SIGTERM, signal.SIGKILL] * args.repeats
    search_kills = [signal.SIGKILL] if args.quick else [signal.SIGTERM, signal.SIGKILL] * args.repeats
    try:
        straight = check_training(c, train_kills)
        check_damaged_supernet(c, straight)
        check_export(c, straight)
        check_search(c, straight, search_kills, args.quick)
        check_bad_options(c, straight, args.quick)
    finally:
        write_table(c.rows, Path(args.out))
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    failed = [row for row in c.rows if row.outcome == "FAIL"]
    print(f"\n{len(c.rows)} cases: {sum(r.outcome == 'PASS' for r in c.rows)} PASS, {len(failed)} FAIL, "
          f"{sum(r.outcome == 'SKIP' for r in c.rows)} SKIP in {time.perf_counter() - start:.0f} s; table: {args.out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
