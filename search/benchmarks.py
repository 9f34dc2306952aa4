"""Offline search problems from published measurements, for benchmarks and tests.

``ofa_note10(folder)``: Once-for-All's MobileNetV3 w1.2 ImageNet space, top-1 from OFA's accuracy
predictor (an MLP OFA trained on subnets measured on ImageNet) and Samsung Note10 latency from OFA's
per-layer lookup table (``conf/hw/note10.yaml``). The files (MIT licence, not shipped here) lie in
``../shared/benchmarks/ofa_note10/``; their format is described in that folder's README.

    problem = ofa_note10("../shared/benchmarks/ofa_note10")
    run_search(problem.space, problem.evaluate, ("accuracy", "latency_ms"), exact=problem.exact)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw_profiles import load_profile
from supernet.models.mobilenetv3 import OFA_BASE_WIDTHS, OFA_STRIDES, MobileNetV3Space

from .lut import lut_latency

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "ofa_note10"
NOTE10_RESOLUTIONS = (160, 176, 192, 208, 224)
PREDICTOR_RESOLUTIONS = (112, 128, 144, 160, 176, 192, 208, 224)  # the one-hot of OFA's predictor input
# OFA's w1.2 widths: make_divisible(base * 1.2, 8) of stem, first block, 5 stages, final expand, mix
W12_WIDTHS = (24, 24, 32, 48, 96, 136, 192, 1152, 1536)


def ofa_w12_space(resolutions=NOTE10_RESOLUTIONS) -> MobileNetV3Space:
    """OFA's MobileNetV3 w1.2 space (float only): kernel {3,5,7}, expand {3,4,6} per block, depth
    {2,3,4} per stage, the Note10 table's resolutions."""
    assert len(W12_WIDTHS) == len(OFA_BASE_WIDTHS)
    return MobileNetV3Space(resolution=tuple(resolutions), ks=(3, 5, 7), expand=(3, 4, 6), depth=(2, 3, 4),
                            bits=(32,), widths=W12_WIDTHS, strides=OFA_STRIDES, in_chans=3, num_classes=1000)


class OFAAccuracyPredictor:
    """OFA's top-1 predictor as a numpy forward pass: Linear-ReLU x3, then Linear(400, 1)."""

    def __init__(self, path: str | Path):
        from safetensors.numpy import load_file

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"OFA accuracy predictor not found: {path}")
        tensors = load_file(str(path))
        self.layers = [(tensors[f"{i}.weight"].astype(np.float64), tensors[f"{i}.bias"].astype(np.float64))
                       for i in (0, 2, 4, 6)]

    @staticmethod
    def encode(archs: list[dict]) -> np.ndarray:
        """The 128 inputs of each arch: kernel one-hots, expand one-hots (active blocks only), resolution."""
        X = np.zeros((len(archs), 128))
        for row, arch in enumerate(archs):
            for stage, depth in enumerate(arch["depth"]):
                for j in range(stage * 4, stage * 4 + depth):
                    X[row, 3 * j + (3, 5, 7).index(int(arch["ks"][j]))] = 1
                    X[row, 60 + 3 * j + (3, 4, 6).index(int(round(arch["expand"][j])))] = 1
            X[row, 120 + PREDICTOR_RESOLUTIONS.index(int(arch["resolution"]))] = 1
        return X

    def __call__(self, archs: list[dict]) -> np.ndarray:
        hidden = self.encode(archs)
        for i, (weight, bias) in enumerate(self.layers):
            hidden = hidden @ weight.T + bias
            if i < len(self.layers) - 1:
                hidden = np.maximum(hidden, 0.0)
        return hidden[:, 0]


@dataclass
class Problem:
    space: MobileNetV3Space
    accuracy: OFAAccuracyPredictor
    latency: object  # archs -> ms (exact, free)
    profile: object

    def evaluate(self, archs: list[dict]) -> dict[str, list]:
        """The metered objective: top-1 of each arch (latency is exact, not asked here)."""
        return {"accuracy": self.accuracy(archs).tolist()}

    @property
    def exact(self) -> dict:
        return {"latency_ms": self.latency}


def ofa_note10(folder: str | Path | None = None) -> Problem:
    folder = Path(folder) if folder is not None else DEFAULT_FOLDER
    if not folder.is_dir():
        raise FileNotFoundError(f"OFA Note10 benchmark data not found: {folder} (acc_predictor.safetensors and "
                                "<r>_lookup_table.yaml, see ../shared/benchmarks/README.md)")
    space = ofa_w12_space()
    profile = load_profile("note10", lut=str(folder))
    return Problem(space, OFAAccuracyPredictor(folder / "acc_predictor.safetensors"), lut_latency(profile, space),
                   profile)
