"""Elastic bit widths: accuracy, model size and int8 onnxruntime latency after the bits phase.

    python scripts/bench_quant.py [--models vit mobilenetv3] [--threads 1] [extra hydra overrides ...]
    python scripts/bench_quant.py --latency mobilenetv3_w10@160 mobilenetv3_w10@160:large resnet50@160 [--repeats 3]
    python scripts/bench_quant.py ... --runtime openvino

Trains each model's default digits supernet (whose last phase unlocks the bit widths) with
``python -m supernet.train`` under ``runs/bench/quant/<model>/`` (a finished run is reused), then
for the largest arch with every block at 32, 8 and 4 bits reports the test accuracy (fake-quantized
torch model, batch norms recalibrated for the CNNs) and the analytic model size.

Latency: onnxruntime on the CPU, batch 1 and 64, sessions interleaved, of the largest arch as
- ``float``: the float ``model.onnx``;
- ``qat_int8``: the 8-bit ``model.onnx`` (this package's quantization-aware model) re-expressed by
  ``uint8_qdq`` (same numbers; weights uint8 on a CPU without VNNI, as ``deployed_onnx``),
  so that onnxruntime fuses its linear layers and convolutions into
  integer kernels on x86 (``integer_convs`` gave the convs batch norm folded and an output
  quantizer, which onnxruntime needs to fuse a conv);
- ``ptq_int8``: onnxruntime's own static quantization of the float export (QDQ, per channel, uint8
  activations, int8 weights in 7 bits (``reduce_range``, its advice for x86 without VNNI, where
  u8 x s8 pair sums saturate), calibrated on training images), which quantizes every op's output
  too and so runs integer kernels throughout, convolutions included.
Each session's test accuracy and count of integer nodes are reported. Writes ``runs/bench/quant.json``.

``--latency CONFIG@RES[:large] ...``: latency alone, at ImageNet-like sizes: the largest arch of
``conf/model/CONFIG.yaml`` at RES px (``:large``: MobileNetV3-Large in a MobileNetV3 space,
``MobileNetV3Space.mobilenetv3_large``), 1000 classes, random weights (input scales set by a training
batch of random images, batch norms recalibrated on random images), the same sessions, and
each one's latency over the float export's (side by side, so that a shared machine's load hits all
alike). Writes ``runs/bench/quant_latency.json``.

``--runtime openvino``: the same sessions compiled by OpenVINO for the CPU instead (one thread, one
stream), ``model.onnx`` as saved (its int8 pairs: OpenVINO picks int8 kernels by itself), all in
float32 where not integer (``INFERENCE_PRECISION_HINT: f32``, the export's precision), and beside
them ``float_default``: the float export as OpenVINO runs it by default, in bf16 on CPUs with bf16
units (AMX). Writes ``quant_openvino.json`` / ``quant_latency_openvino.json``.
The MobileNetV3 supernet is trained with a short schedule (the full network, then the bit widths;
its kernel / depth / expand phases would take another 10 minutes on 2 cores and leave the largest
subnet as it is); pass ``model.schedule=...`` to change it.
"""
from __future__ import annotations

import argparse
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hw_profiles.timing import openvino_compiled, openvino_layer_precisions  # noqa: E402
from supernet.bn import recalibrate_bn  # noqa: E402
from supernet.checkpoint import load_supernet, save_json  # noqa: E402
from supernet.data import build_data, calibration_loader  # noqa: E402
from supernet.evaluate import accuracy  # noqa: E402
from supernet.export import cpu_has_vnni, save_subnet, uint8_qdq  # noqa: E402

# weights as deployed here (supernet.export.deployed_onnx): int8 (u8 x s8 kernels) with VNNI,
# uint8 without, where u8 x s8 pair sums saturate
U8_WEIGHTS = not cpu_has_vnni()
from supernet.models import create_supernet_from_config  # noqa: E402

SHORT_SCHEDULES = {"mobilenetv3": "model.schedule=[{name:largest,epochs:10,lr:3.0e-3,warmup_epochs:1,"
                                  "unlock:[resolution]},{name:bits,epochs:4,lr:1.0e-3,unlock:[bits]}]"}


def resized(x: torch.Tensor, resolution: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                                           antialias=True)


class Calibration(CalibrationDataReader):
    """Training images for onnxruntime's static quantization."""

    def __init__(self, loader: DataLoader, resolution: int):
        self.batches = iter(loader)
        self.resolution = resolution

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"input": resized(batch[0], self.resolution).numpy()}


def ptq_int8(float_path: Path, calib: DataLoader, resolution: int, tmp: Path) -> onnx.ModelProto:
    logging.disable(logging.WARNING)  # the quantizer warns about every norm weight it leaves in float
    try:
        quant_pre_process(str(float_path), str(tmp / "preprocessed.onnx"))  # shapes, batch norms folded
        quantize_static(str(tmp / "preprocessed.onnx"), str(tmp / "ptq.onnx"), Calibration(calib, resolution),
                        quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return onnx.load(tmp / "ptq.onnx")


def session(model: onnx.ModelProto, threads: int, optimized: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.optimized_model_filepath = str(optimized)  # to count the integer kernels onnxruntime chose
    s = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(optimized).graph.node]
    s.counts = {"integer_nodes": sum(op.startswith("QLinear") or "Integer" in op for op in ops),
                "float_convs": sum(op in ("Conv", "FusedConv") for op in ops)}
    return s


class OpenVINOSession:
    """An ONNX model compiled by OpenVINO for the CPU (``hw_profiles.timing.openvino_compiled``: one
    stream, ``threads`` threads), with onnxruntime's ``run(None, feed)``; compiled once per input
    shape. ``precision``: OpenVINO's ``INFERENCE_PRECISION_HINT`` (None: its default, bf16 where the
    CPU has bf16 units). ``counts``: the compiled graph's convolutions and fully connected layers
    on integers (``integer_nodes``) and in float (``float_layers``)."""

    def __init__(self, model: onnx.ModelProto, threads: int, precision: str | None = "f32"):
        self.model, self.threads, self.precision, self.requests = model.SerializeToString(), threads, precision, {}
        first = self._request((1, *model_input_shape(model))).get_compiled_model()
        counts = openvino_layer_precisions(first)
        self.counts = {"integer_nodes": counts["integer"], "float_layers": counts["float"]}

    def _request(self, shape: tuple[int, ...]):
        if shape not in self.requests:
            compiled = openvino_compiled(self.model, shape, self.threads, self.precision)
            self.requests[shape] = compiled.create_infer_request()
        return self.requests[shape]

    def run(self, _outputs, feed: dict) -> list[np.ndarray]:
        x = feed["input"]
        return [self._request(x.shape).infer([x])[0]]


def model_input_shape(model: onnx.ModelProto) -> tuple[int, ...]:
    """The input's shape without its (dynamic) batch dimension."""
    return tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])


def sessions(runtime: str, float_path: Path, int8_path: Path, ptq: onnx.ModelProto, threads: int,
             tmp: Path) -> dict:
    """float, qat_int8 and ptq_int8 sessions on ``runtime`` (and float_default on openvino; see the
    module's docstring)."""
    if runtime == "onnxruntime":
        models = {"float": onnx.load(float_path),
                  "qat_int8": uint8_qdq(onnx.load(int8_path), uint8_weights=U8_WEIGHTS), "ptq_int8": ptq}
        return {key: session(m, threads, tmp / f"{key}.opt.onnx") for key, m in models.items()}
    return {"float": OpenVINOSession(onnx.load(float_path), threads),
            "float_default": OpenVINOSession(onnx.load(float_path), threads, precision=None),
            "qat_int8": OpenVINOSession(onnx.load(int8_path), threads),
            "ptq_int8": OpenVINOSession(ptq, threads)}


def latency_ms(sessions: dict, x: np.ndarray, repeats: int, min_s: float = 0.2) -> dict:
    """Median per-run time of each session; runs are interleaved so machine noise hits all alike."""
    for s in sessions.values():
        s.run(None, {"input": x})
    runs = {}
    for name, s in sessions.items():  # runs per timing, so that a timing lasts about min_s
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < min_s:
            s.run(None, {"input": x})
            n += 1
        runs[name] = n
    times = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, s in sessions.items():
            start = time.perf_counter()
            for _ in range(runs[name]):
                s.run(None, {"input": x})
            times[name].append((time.perf_counter() - start) * 1e3 / runs[name])
    return {name: round(statistics.median(t), 4) for name, t in times.items()}


def onnx_accuracy(s: ort.InferenceSession | OpenVINOSession, loader: DataLoader, resolution: int) -> float:
    correct = total = 0
    for x, y in loader:
        correct += int((s.run(None, {"input": resized(x, resolution).numpy()})[0].argmax(1) == y.numpy()).sum())
        total += len(y)
    return correct / total


def bench(model: str, overrides: list[str], runtime: str, threads: int, repeats: int) -> dict:
    out_dir = ROOT / "runs" / "bench" / "quant"
    own_schedule = any(o.startswith("model.schedule=") for o in overrides)
    schedule = [SHORT_SCHEDULES[model]] if model in SHORT_SCHEDULES and not own_schedule else []
    subprocess.run([sys.executable, "-m", "supernet.train", f"+model={model}", f"out_dir={out_dir}",
                    f"run_name={model}", *schedule, *overrides], check=True, cwd=ROOT)
    net = load_supernet(out_dir / model / "supernet.pt")
    history = net.metrics["history"]
    cfg = net.train_config
    data_cfg = dict(cfg["data"])
    data = build_data(data_cfg.pop("name"), **data_cfg)
    test = DataLoader(data.test, batch_size=256)
    calib = calibration_loader(data, cfg["bn_calib_images"], cfg["eval_batch_size"], cfg["seed"])
    space, largest = net.space, net.space.largest()
    archs = {bits: {**largest, "bits": [bits] * len(largest["bits"])} for bits in (32, 8, 4)}
    result = {"arch": largest, "macs": space.macs(largest), "last_epoch": history[-1],
              "train_s": round(sum(r["epoch_s"] for r in history), 1),  # training steps only, no evaluations
              "bits_phase_s": round(sum(r["epoch_s"] for r in history if r["phase"] == "bits"), 1)}
    float_size = space.model_size_bytes(archs[32])
    for bits, arch in archs.items():
        result[f"{bits}bit"] = {"accuracy": round(accuracy(net, arch, test, "cpu", calib), 5),
                                "model_size_bytes": space.model_size_bytes(arch),
                                "size_ratio": round(space.model_size_bytes(arch) / float_size, 4)}
        print(f"{model} largest @ {bits:2d} bits: test acc {100 * result[f'{bits}bit']['accuracy']:.2f}%, "
              f"size {space.model_size_bytes(arch) / 1e3:.1f} kB")

    res = largest["resolution"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {}
        for bits in (32, 8):
            recalibrate_bn(net, archs[bits], calib, len(calib))  # as accuracy() did (CNNs)
            paths[bits] = save_subnet(net, archs[bits], tmp / f"{bits}bit") / "model.onnx"
        timed = sessions(runtime, paths[32], paths[8], ptq_int8(paths[32], calib, res, tmp), threads, tmp)
        for name, s in timed.items():
            result[name] = {"accuracy": round(onnx_accuracy(s, test, res), 5), **s.counts}
            print(f"{model} {runtime} {name:8}: test acc {100 * result[name]['accuracy']:.2f}%, "
                  f"{result[name]['integer_nodes']} integer nodes")
        for batch in (1, 64):
            x = np.random.default_rng(0).standard_normal((batch, net.in_chans, res, res), dtype=np.float32)
            ms = latency_ms(timed, x, repeats)
            for name in timed:
                result[name][f"batch{batch}_ms"] = ms[name]
            print(f"{model} {runtime} batch {batch}: " + ", ".join(
                f"{name} {t:.3f} ms (x{ms['float'] / t:.2f})" for name, t in ms.items()))
    return result


def bench_latency(spec: str, runtime: str, threads: int, repeats: int) -> dict:
    """``--latency``: float, qat_int8 and ptq_int8 sessions of ``CONFIG@RES[:large]`` with random weights."""
    base, _, which = spec.partition(":")
    name, _, res = base.partition("@")
    if which not in ("", "large"):
        raise SystemExit(f"{spec}: unknown arch {which!r}; allowed: CONFIG@RES (the largest arch) or "
                         f"CONFIG@RES:large (MobileNetV3-Large, in a MobileNetV3 space)")
    cfg = yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("pretrained")}  # random weights: nothing to fetch
    net = create_supernet_from_config(cfg, num_classes=1000)
    res = int(res) if res else net.space.largest()["resolution"]
    if which and not hasattr(net.space, "mobilenetv3_large"):
        raise SystemExit(f"{spec}: ':large' is MobileNetV3-Large, an arch of a MobileNetV3 space; "
                         f"{name} is a {net.space.family} space")
    subject = net.space.mobilenetv3_large(res) if which else {**net.space.largest(), "resolution": res}
    archs = {bits: {**subject, "bits": [bits] * len(subject["bits"])} for bits in (32, 8)}
    rng = torch.Generator().manual_seed(0)
    calib = [(torch.randn(8, net.in_chans, res, res, generator=rng), None) for _ in range(2)]
    net.set_active(archs[8])
    with torch.no_grad():
        net.train()(calib[0][0])  # the input scales of 8 bits, from a first training batch as in QAT
    net.eval()
    result = {"arch": subject, "macs": net.space.macs(subject)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {}
        for bits, arch in archs.items():
            recalibrate_bn(net, arch, calib, len(calib))
            paths[bits] = save_subnet(net, arch, tmp / f"{bits}bit") / "model.onnx"
        timed = sessions(runtime, paths[32], paths[8], ptq_int8(paths[32], calib, res, tmp), threads, tmp)
        for key, s in timed.items():
            result[key] = dict(s.counts)
        for batch in (1, 64):
            x = np.random.default_rng(0).standard_normal((batch, net.in_chans, res, res), dtype=np.float32)
            ms = latency_ms(timed, x, repeats)
            for key in timed:
                result[key][f"batch{batch}_ms"] = ms[key]
                result[key][f"batch{batch}_vs_float"] = round(ms[key] / ms["float"], 3)
            print(f"{spec} {runtime} batch {batch}: " + ", ".join(
                f"{key} {t:.1f} ms ({t / ms['float']:.2f} of float, {result[key]['integer_nodes']} integer nodes)"
                for key, t in ms.items()), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit", "mobilenetv3"])
    parser.add_argument("--threads", type=int, default=1, help="runtime threads (1: least noise)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--latency", nargs="+", metavar="CONFIG@RES[:large]",
                        help="latency alone of conf/model/CONFIG.yaml's largest arch (:large: MobileNetV3-Large) "
                             "at RES px, random weights")
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                        help="what runs the exports (openvino: pip install openvino)")
    parser.add_argument("--out", default=None,
                        help="default: runs/bench/quant.json (quant_latency.json; _openvino before .json)")
    args, overrides = parser.parse_known_args()
    ort.set_default_logger_severity(3)  # not the warning that optimized models are machine-specific
    torch.set_num_threads(args.threads)  # the export's calibration passes: as little load as the timings
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "onnxruntime": ort.__version__,
                           "torch": torch.__version__, "threads": args.threads}}
    if args.runtime == "openvino":
        import openvino

        results["machine"]["openvino"] = openvino.__version__
    if args.latency:
        for spec in args.latency:
            results[spec] = bench_latency(spec, args.runtime, args.threads, args.repeats)
    else:
        for model in args.models:
            results[model] = bench(model, overrides, args.runtime, args.threads, args.repeats)
    suffix = "" if args.runtime == "onnxruntime" else f"_{args.runtime}"
    args.out = args.out or str(ROOT / "runs" / "bench" / f"quant{'_latency' if args.latency else ''}{suffix}.json")
    save_json(results, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
