"""Wall-clock timing of models' forward passes, with PyTorch, ONNX Runtime or OpenVINO.

Only the timing loop lives here; `HardwareProfile` checks that the device exists and turns the
run times into a latency (the fastest pass) and an IQR.

Why the loop is shaped as it is (measured on a shared 2-core VM, where a neighbour's burst of work
can double a pass's time for a second or more): the garbage collector is off while timing, so it
cannot pause a pass; and several models are timed in interleaved rounds, so that a burst slows a few
passes of many models rather than every pass of one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import itertools
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch import nn


def time_interleaved(
    models: Sequence[tuple[nn.Module | bytes, tuple[int, ...]]],
    *,
    device: str,
    backend: str,
    threads: int,
    warmup: int,
    repeats: int,
    rounds: int,
    batch_size: int,
) -> list[list[float]]:
    """Milliseconds of `repeats` forward passes of each `(model, input_shape)`, in `rounds` rounds
    (at most `repeats`: a round times at least one pass).

    Every model first runs `warmup` untimed passes; then round r times every model before round
    r + 1 times any, each round taking its share of the `repeats` passes. With several models, each
    round starts with one untimed pass, so that the timed ones do not pay for reloading caches
    that the previous model filled (that first pass ran about 7% slower on the digits ViT).
    Models run in eval mode under no_grad; their train/eval flags, their devices and torch's
    thread count are as before afterwards.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    rounds = min(rounds, repeats)
    per_round = [repeats // rounds + (r < repeats % rounds) for r in range(rounds)]
    modules = [model for model, _ in models if isinstance(model, nn.Module)]
    with _eval_mode(modules), _torch_threads(threads), torch.no_grad():
        runs = [_runner(model, (batch_size, *shape), device, backend, threads) for model, shape in models]
        for run in runs:
            for _ in range(warmup):
                run()
        times_ms: list[list[float]] = [[] for _ in runs]
        with _gc_off():
            for count in per_round:
                for run, times in zip(runs, times_ms, strict=True):
                    if len(runs) > 1:
                        run()
                    for _ in range(count):
                        start = time.perf_counter()
                        run()
                        times.append((time.perf_counter() - start) * 1e3)
    return times_ms


ONNX_BACKENDS = ("onnxruntime", "openvino")  # the backends that run a model's ONNX export


def _runner(model: nn.Module | bytes, shape: tuple[int, ...], device: str, backend: str,
            threads: int) -> Callable[[], None]:
    """A function that runs one forward pass and returns when its result exists. ``model`` is a
    module or, for an ONNX backend, a serialized ONNX model (e.g. a quantized export with integer
    kernels, which torch's own ONNX export of the module would not give)."""
    if backend == "torch":
        if isinstance(model, bytes):
            raise ValueError(f"a serialized ONNX model is timed with {' or '.join(ONNX_BACKENDS)}, not torch")
        return _torch_runner(model, shape, torch.device(device))
    if backend not in ONNX_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: torch, {', '.join(ONNX_BACKENDS)}")
    session = _onnxruntime_session_runner if backend == "onnxruntime" else _openvino_runner
    if isinstance(model, bytes):
        return session(model, shape, device, threads)
    with tempfile.TemporaryDirectory(prefix="ofa-nas-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(_on_device(model, torch.device("cpu")), (torch.randn(shape),), str(path),
                              dynamo=True, verbose=False)
        # from the path: the export may keep its weights in a file beside it (model.onnx.data)
        return session(str(path), shape, device, threads)


def _torch_runner(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> Callable[[], None]:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    runnable = _on_device(model, device)
    batch = torch.randn(shape, device=device)

    def run() -> None:
        runnable(batch)
        # GPU kernels run asynchronously: without a sync the clock would stop at launch, not finish.
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run


def _onnxruntime_session_runner(model: bytes | str, shape: tuple[int, ...], device: str,
                                threads: int) -> Callable[[], None]:
    """``model``: a serialized ONNX model or the path of one."""
    import onnxruntime  # only for this backend: a device that times with torch need not install it

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one graph, run op after op: no inter-op parallelism
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    session = onnxruntime.InferenceSession(model, options, providers=[provider])
    feed = {session.get_inputs()[0].name: torch.randn(shape).numpy()}
    # session.run returns host arrays, so each run has finished when it returns.
    return lambda: session.run(None, feed)


def _openvino_runner(model: bytes | str, shape: tuple[int, ...], device: str, threads: int) -> Callable[[], None]:
    """``model``: a serialized ONNX model or the path of one, compiled by OpenVINO for the CPU with
    its defaults (int8 kernels for the QuantizeLinear / DequantizeLinear pairs, and on CPUs with
    bf16 units float layers in bf16, as a user deploying with OpenVINO gets) but ``threads``
    threads and one stream."""
    if device != "cpu":  # load_profile refuses it; a direct call gets the same answer
        raise ValueError(f"the openvino backend times on the CPU, not {device!r}")
    request = openvino_compiled(model, shape, threads).create_infer_request()
    request.set_input_tensor(_openvino().Tensor(torch.randn(shape).numpy()))
    # synchronous: returns when the outputs exist; the input is set once and the outputs not copied
    return lambda: request.infer(share_outputs=True)


def openvino_compiled(model: bytes | str, shape: tuple[int, ...], threads: int, precision: str | None = None):
    """``model`` (a serialized ONNX model or the path of one) compiled by OpenVINO for the CPU at the
    static input ``shape`` (its fast path), one stream, ``threads`` threads. ``precision``: its
    ``INFERENCE_PRECISION_HINT`` for the float layers (None: its default, bf16 on CPUs with bf16
    units; "f32": the export's own precision)."""
    core = _openvino_core()
    network = core.read_model(model)  # bytes or a path alike
    network.reshape({network.inputs[0].get_any_name(): list(shape)})
    config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return core.compile_model(network, "CPU", config)


def openvino_layer_precisions(compiled) -> dict[str, int]:
    """How many convolutions and fully connected layers of a compiled model run on integers
    (``"integer"``: int8 / uint8 kernels) and how many in float (``"float"``: f32, bf16 or f16)."""
    counts = {"integer": 0, "float": 0}
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "runtimePrecision" in info and info["layerType"].astype(str) in ("Convolution", "FullyConnected"):
            precision = info["runtimePrecision"].astype(str).lower()
            counts["integer" if precision in ("i8", "u8") else "float"] += 1
    return counts


def _openvino():
    import openvino  # only for this backend

    return openvino


@functools.cache
def _openvino_core():
    return _openvino().Core()  # one per process: it holds the plugin and its caches


@contextlib.contextmanager
def _eval_mode(models: Sequence[nn.Module]) -> Iterator[None]:
    was_training = [model.training for model in models]
    for model in models:
        model.eval()
    try:
        yield
    finally:
        for model, training in zip(models, was_training, strict=True):
            model.train(training)


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _gc_off() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model itself if it already lives on `device`, else a copy moved there.

    Copying leaves the caller's model where it was.
    """
    tensors = itertools.chain(model.parameters(), model.buffers())
    if all(tensor.device == device for tensor in tensors):
        return model
    return copy.deepcopy(model).to(device)
