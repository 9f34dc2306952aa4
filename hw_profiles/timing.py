"""Wall-clock timing of a model's forward pass, with PyTorch or with ONNX Runtime.

Only the timing loop lives here; `HardwareProfile` checks that the device exists and turns the
run times into a median and IQR.
"""

from __future__ import annotations

import copy
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime
import torch
from torch import nn


def time_forward(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    device: str,
    backend: str,
    threads: int,
    warmup: int,
    repeats: int,
    batch_size: int,
) -> list[float]:
    """Milliseconds of each of `repeats` forward passes on a random batch, after `warmup` passes.

    The model runs in eval mode under no_grad; its train/eval flag, its device and torch's thread
    count are as before afterwards.
    """
    shape = (batch_size, *input_shape)
    was_training = model.training
    model.eval()
    try:
        if backend == "torch":
            return _time_torch(model, shape, torch.device(device), threads, warmup, repeats)
        return _time_onnxruntime(model, shape, device, threads, warmup, repeats)
    finally:
        model.train(was_training)


def _time_torch(
    model: nn.Module,
    shape: tuple[int, ...],
    device: torch.device,
    threads: int,
    warmup: int,
    repeats: int,
) -> list[float]:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    runnable = _on_device(model, device)
    batch = torch.randn(shape, device=device)
    # GPU kernels run asynchronously: without a sync the clock would stop at launch, not finish.
    synchronize = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return _timed_runs(lambda: runnable(batch), synchronize, warmup, repeats)
    finally:
        torch.set_num_threads(previous_threads)


def _time_onnxruntime(
    model: nn.Module,
    shape: tuple[int, ...],
    device: str,
    threads: int,
    warmup: int,
    repeats: int,
) -> list[float]:
    cpu_model = _on_device(model, torch.device("cpu"))
    batch = torch.randn(shape)
    with tempfile.TemporaryDirectory(prefix="ofa-nas-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(cpu_model, (batch,), str(path), dynamo=True, verbose=False)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one graph, run op after op: no inter-op parallelism
        provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        session = onnxruntime.InferenceSession(str(path), options, providers=[provider])
    feed = {session.get_inputs()[0].name: batch.numpy()}
    # session.run returns host arrays, so each run has finished when it returns.
    return _timed_runs(lambda: session.run(None, feed), lambda: None, warmup, repeats)


def _timed_runs(
    run: Callable[[], object], synchronize: Callable[[], None], warmup: int, repeats: int
) -> list[float]:
    for _ in range(warmup):
        run()
    synchronize()
    times_ms = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        synchronize()
        times_ms.append((time.perf_counter() - start) * 1e3)
    return times_ms


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself if it already lives on `device`, else a copy moved there.

    Copying leaves the caller's model where it was.
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    if all(tensor.device == device for tensor in tensors):
        return model
    return copy.deepcopy(model).to(device)
